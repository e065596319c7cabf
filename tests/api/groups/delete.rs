//! `DELETE /v2/accounts/{account}/groups/{id}`: soft by default, hard on request.
use std::time::Duration;

use serde_json::json;

use super::setup;
use crate::helpers::TestApp;

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

/// Issue 15.9: a write that meets a group another client deleted meanwhile (here: the service
/// still holds it in its cache, and no feed told it) answers as Crossbar does for that race: 404
/// `bad_identifier` (the store said "not found") or 409 `datastore_conflict` (CouchDB's answer
/// to a stale revision), never a 500.
#[tokio::test]
async fn a_write_racing_a_delete_elsewhere_is_a_404_or_409_never_a_500() {
    let app = TestApp::spawn_with(|config| {
        config.caches.feeds = 0;
        config.caches.ttl = Duration::from_secs(600);
    })
    .await;
    let a = app.create_account(None).await;
    for (write, query, body) in [
        ("DELETE", "?should_soft_delete=false", None),
        ("DELETE", "", None),
        ("PATCH", "", Some(json!({"data": {"flags": ["x"]}}))),
        ("POST", "", Some(json!({"data": {"name": "renamed"}}))),
    ] {
        let id = app.add_group(&a, json!({"name": "G"})).await.id;
        assert_eq!(app.get_group(&a, &id).await.status, 200, "now cached");
        let db = kz_groups::domain::ids::AccountId::parse(&a.id)
            .unwrap()
            .db();
        let doc_id = kz_groups::domain::ids::DocId::parse(&id).unwrap();
        let rev = app.read_doc(&a, &id).await.unwrap()["_rev"].clone();
        app.store
            .delete_doc(&db, &doc_id, rev.as_str().unwrap())
            .await
            .unwrap();
        let mut request = app
            .with_token(&a.token)
            .request(write, format!("{}{query}", a.group_path(&id)));
        if let Some(body) = &body {
            request = request.json(body);
        }
        let resp = request.send().await;
        let expected = match resp.status {
            404 => json!(["bad_identifier", {"cause": id, "message": "bad identifier"}]),
            409 => json!(["datastore_conflict", {"message": "conflicting documents"}]),
            other => panic!("{write}{query}: {other} {}", resp.text),
        };
        assert_eq!(
            json!([resp.json["message"], resp.json["data"]]),
            expected,
            "{write}{query}"
        );
        assert!(app.read_doc(&a, &id).await.is_none(), "nothing was written");
    }
}
