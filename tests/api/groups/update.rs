//! `POST` (replace) and `PATCH` (merge) of `/v2/accounts/{account}/groups/{id}`.
use serde_json::json;

use super::{setup, UNKNOWN};
use crate::helpers::generation;

/// #26, #27.
#[tokio::test]
async fn post_replaces_the_public_part_and_keeps_the_id_of_the_url() {
    let (app, a) = setup().await;
    let group = app
        .add_group(&a, json!({"name": "G1", "custom": 1, "flags": ["f"]}))
        .await;
    let id = group.id;
    let before = app.read_doc(&a, &id).await.unwrap();
    let resp = app
        .update_group(&a, &id, json!({"name": "G1b", "id": "other"}))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(
        resp.json["data"],
        json!({"name": "G1b", "endpoints": {}, "music_on_hold": {}, "id": id})
    );
    assert!(resp.revision().starts_with("2-"));
    let after = app.read_doc(&a, &id).await.unwrap();
    assert_eq!(after["pvt_created"], before["pvt_created"]);
    assert_eq!(after["pvt_alphanum_name"], "g1b");
    assert!(app.read_doc(&a, "other").await.is_none());
}

/// #28.
#[tokio::test]
async fn post_to_an_unknown_group_validates_before_returning_404() {
    let (app, a) = setup().await;
    let resp = app.update_group(&a, UNKNOWN, json!({})).await;
    assert_eq!(resp.status, 400);
    let resp = app.update_group(&a, UNKNOWN, json!({"name": "x"})).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json["message"], "bad_identifier");
}

/// #29.
#[tokio::test]
async fn post_with_a_stale_if_match_returns_412_and_changes_nothing() {
    let (app, a) = setup().await;
    let group = app.add_group(&a, json!({"name": "G1"})).await;
    let resp = app
        .request("POST", a.group_path(&group.id))
        .token(&a.token)
        .header("if-match", "\"1-stale\"")
        .body(json!({"data": {"name": "changed"}}).to_string())
        .send()
        .await;
    assert_eq!(resp.status, 412);
    assert!(resp.text.is_empty());
    assert_eq!(app.read_doc(&a, &group.id).await.unwrap()["name"], "G1");
}

/// #30–#34.
#[tokio::test]
async fn patch_merges_deeply_and_null_removes_a_field() {
    let (app, a) = setup().await;
    let group = app
        .add_group(
            &a,
            json!({"name": "G1", "endpoints": {"u1": {"type": "user"}}}),
        )
        .await;
    let resp = app
        .patch_group(&a, &group.id, json!({"flags": ["f"]}))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["data"]["name"], "G1");
    assert_eq!(resp.json["data"]["flags"], json!(["f"]));
    let resp = app
        .patch_group(
            &a,
            &group.id,
            json!({"endpoints": {"u2": {"type": "user"}}}),
        )
        .await;
    assert_eq!(
        resp.json["data"]["endpoints"],
        json!({"u1": {"type": "user"}, "u2": {"type": "user"}})
    );
    let resp = app
        .patch_group(
            &a,
            &group.id,
            json!({"endpoints": {"u1": null}, "flags": null}),
        )
        .await;
    assert_eq!(
        resp.json["data"]["endpoints"],
        json!({"u2": {"type": "user"}})
    );
    assert!(resp.json["data"].get("flags").is_none());
    let resp = app
        .patch_group(&a, &group.id, json!({"endpoints": {}}))
        .await;
    assert_eq!(resp.json["data"]["endpoints"], json!({}));
    let resp = app.patch_group(&a, &group.id, json!({"name": null})).await;
    assert_eq!(resp.status, 400);
    assert!(resp.json["data"]["name"]["required"].is_object());
}

/// #35.
#[tokio::test]
async fn patch_of_an_unknown_group_validates_before_returning_404() {
    let (app, a) = setup().await;
    let resp = app.patch_group(&a, UNKNOWN, json!({"flags": []})).await;
    assert_eq!(resp.status, 400);
    let resp = app.patch_group(&a, UNKNOWN, json!({"name": "x"})).await;
    assert_eq!(resp.status, 404);
}

#[tokio::test]
async fn concurrent_updates_never_lose_a_write() {
    let (app, a) = setup().await;
    let group = app.add_group(&a, json!({"name": "G"})).await;
    let patches: Vec<_> = (0..8)
        .map(|i| app.patch_group(&a, &group.id, json!({"flags": [format!("f{i}")]})))
        .collect();
    let results = futures::future::join_all(patches).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    let conflicts = results.iter().filter(|r| r.status == 409).count();
    assert_eq!(
        ok + conflicts,
        8,
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(ok >= 1);
    // Every acknowledged write produced its own revision.
    let doc = app.read_doc(&a, &group.id).await.unwrap();
    assert_eq!(generation(doc["_rev"].as_str().unwrap()), 1 + ok as u64);
}
