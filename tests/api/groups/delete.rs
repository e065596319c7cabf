//! `DELETE /v2/accounts/{account}/groups/{id}`: soft by default, hard on request.
use serde_json::json;

use super::setup;

/// #36, #37.
#[tokio::test]
async fn soft_delete_hides_the_group_and_keeps_its_id_taken() {
    let (app, a) = setup().await;
    let id = app.add_group(&a, json!({"name": "G1"})).await.id;
    let rev = app.read_doc(&a, &id).await.unwrap()["_rev"].clone();
    let resp = app.delete_group(&a, &id).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["data"]["_read_only"], json!({"deleted": true}));
    assert_eq!(resp.json["data"]["id"], id.as_str());
    assert_eq!(resp.json["revision"], rev);
    let doc = app.read_doc(&a, &id).await.unwrap();
    assert_eq!(doc["pvt_deleted"], true);
    assert_ne!(doc["_rev"], rev);
    assert_eq!(app.get_group(&a, &id).await.status, 404);
    assert_eq!(app.delete_group(&a, &id).await.status, 404);
    let list = app.list_groups(&a, "").await;
    assert_eq!(list.json["data"], json!([]));
    let resp = app.create_group(&a, json!({"name": "x", "id": id})).await;
    assert_eq!(resp.status, 409);
}

/// #38.
#[tokio::test]
async fn delete_with_should_soft_delete_other_than_true_removes_the_doc() {
    let (app, a) = setup().await;
    for flag in ["false", "0"] {
        let id = app.add_group(&a, json!({"name": "G"})).await.id;
        let resp = app
            .with_token(&a.token)
            .request(
                "DELETE",
                format!("{}?should_soft_delete={flag}", a.group_path(&id)),
            )
            .send()
            .await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json["data"]["_read_only"], json!({"deleted": true}));
        assert!(app.read_doc(&a, &id).await.is_none(), "{flag}");
    }
}
