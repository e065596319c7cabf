//! `GET /v2/accounts/{account}/groups/{id}`.
use serde_json::json;

use super::{setup, UNKNOWN};

/// #22, #23.
#[tokio::test]
async fn fetch_returns_etag_and_expires_and_304_when_the_etag_matches() {
    let (app, a) = setup().await;
    let group = app.add_group(&a, json!({"name": "G1"})).await;
    let resp = app.get_group(&a, &group.id).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json["data"], group.data);
    let rev = resp.revision().to_owned();
    assert_eq!(resp.header("etag").unwrap(), format!("\"{rev}\""));
    assert_eq!(
        resp.header("expires").unwrap(),
        "Fri, 01 Jan 1999 00:00:00 GMT"
    );
    let resp = app
        .request("GET", a.group_path(&group.id))
        .token(&a.token)
        .header("if-none-match", format!("\"{rev}\""))
        .send()
        .await;
    assert_eq!(resp.status, 304);
    assert!(resp.text.is_empty());
}

/// #24, #25.
#[tokio::test]
async fn fetch_returns_404_bad_identifier_for_an_unknown_id_or_a_doc_that_is_no_group() {
    let (app, a) = setup().await;
    let resp = app.get_group(&a, UNKNOWN).await;
    assert_eq!(resp.status, 404);
    assert_eq!(
        resp.json["data"],
        json!({"cause": UNKNOWN, "message": "bad identifier"})
    );
    assert_eq!(resp.json["message"], "bad_identifier");
    // The admin user's document is in the same database.
    let resp = app.get_group(&a, &a.user_id).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json["data"]["cause"], a.user_id.as_str());
}
