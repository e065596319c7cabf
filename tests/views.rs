//! The design documents of `couch_views/`: installed by the service on first use (once, even
//! under concurrent first requests), repaired when they go missing, and refreshed for every
//! account by `kz-groups refresh-views`.
mod common;

use common::TestApp;
use kz_groups::domain::ids::AccountId;
use serde_json::{json, Value};

async fn design(app: &TestApp, account: &str) -> Option<Value> {
    let db = AccountId::parse(account).unwrap().db();
    app.store.get_design(&db, "groups").await.unwrap()
}

#[tokio::test]
async fn concurrent_first_requests_install_the_design_doc_once() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    assert!(design(&app, &a.id).await.is_none());
    let path = TestApp::groups_path(&a);
    let requests: Vec<_> = (0..10)
        .map(|_| app.call("GET", &path, Some(&a.token), None))
        .collect();
    for resp in futures::future::join_all(requests).await {
        assert_eq!(resp.status, 200, "{}", resp.text);
    }
    let doc = design(&app, &a.id).await.expect("installed");
    assert!(
        doc["_rev"].as_str().unwrap().starts_with("1-"),
        "written once: {}",
        doc["_rev"]
    );
    let views = doc["views"].as_object().unwrap();
    assert!(
        views.contains_key("crossbar_listing") && views.contains_key("crossbar_listing_by_user")
    );
}

#[tokio::test]
async fn a_broken_design_doc_is_repaired_after_one_503() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    let path = TestApp::groups_path(&a);
    app.create_group(&a, json!({"name": "G"})).await;
    assert_eq!(
        app.call("GET", &path, Some(&a.token), None).await.status,
        200
    );
    // Someone replaces the design document by one without our views.
    let mut doc = design(&app, &a.id).await.unwrap();
    doc["views"] = json!({});
    let db = AccountId::parse(&a.id).unwrap().db();
    app.store.put_design(&db, "groups", &doc).await.unwrap();
    let resp = app.call("GET", &path, Some(&a.token), None).await;
    assert_eq!(resp.status, 503, "{}", resp.text);
    assert_eq!(resp.json["message"], "datastore missing view");
    let resp = app.call("GET", &path, Some(&a.token), None).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn refresh_views_installs_and_updates_every_account() {
    let app = TestApp::spawn().await;
    let fresh = app.create_account(None).await;
    let stale = app.create_account(None).await;
    let db = AccountId::parse(&stale.id).unwrap().db();
    let old = json!({"_id": "_design/groups", "language": "javascript",
                     "views": {"crossbar_listing": {"map": "function(doc) { emit(doc._id, null); }"}}});
    app.store.put_design(&db, "groups", &old).await.unwrap();
    let visited = kz_groups::cli::refresh_views(&app.config)
        .await
        .expect("refresh-views succeeds");
    assert!(visited >= 2);
    for account in [&fresh, &stale] {
        let doc = design(&app, &account.id).await.expect("installed");
        assert!(
            doc["views"]["crossbar_listing_by_user"].is_object(),
            "{doc}"
        );
    }
    // The refreshed views serve listings.
    app.create_group(&stale, json!({"name": "G"})).await;
    let resp = app
        .call(
            "GET",
            &TestApp::groups_path(&stale),
            Some(&stale.token),
            None,
        )
        .await;
    assert_eq!(resp.json["data"][0]["name"], "G");
}
