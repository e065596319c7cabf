//! CouchDB going away and coming back: every request in between is a 503 in the Kazoo envelope,
//! and service resumes without restarting kz-groups.
use serde_json::json;

use crate::helpers::couch_server::TestCouchServer;
use crate::helpers::{eventually, TestApp};

#[tokio::test]
async fn couchdb_stopped_gives_503_and_service_resumes_after_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestCouchServer::start(None, dir.path())
        .expect("this test needs KZ_TEST_COUCH_SERVER_BIN (set by scripts/test)");
    let app = TestApp::spawn_on_couchdb(&server.url()).await;
    let a = app.create_account(None).await;
    let id = app.add_group(&a, json!({"name": "before"})).await.id;
    assert_eq!(app.list_groups(&a, "").await.status, 200);

    server.stop();
    // What was cached is dropped as soon as the change feed is lost; from then on, every
    // request is a 503.
    let first = eventually(|| app.get_group(&a, &id), |r| r.status == 503).await;
    assert_eq!(first.status, 503, "{}", first.text);
    let during = [
        ("GET groups", app.list_groups(&a, "").await),
        ("GET group", app.get_group(&a, &id).await),
        ("PUT", app.create_group(&a, json!({"name": "during"})).await),
        (
            "PATCH",
            app.patch_group(&a, &id, json!({"flags": ["x"]})).await,
        ),
        ("DELETE", app.delete_group(&a, &id).await),
    ];
    for (request, resp) in during {
        assert_eq!(resp.status, 503, "{request}: {}", resp.text);
        assert_eq!(resp.json["status"], "error");
        assert_eq!(resp.json["error"], "503");
        assert!(
            resp.json["message"]
                .as_str()
                .unwrap()
                .starts_with("datastore"),
            "{}",
            resp.text
        );
        assert!(resp.header("x-request-id").is_some());
    }
    assert_eq!(app.probe("/healthz").await.status, 200);
    assert_eq!(app.probe("/readyz").await.status, 503);

    server.restart().expect("server restarts");
    assert_eq!(app.probe("/readyz").await.status, 200);
    let resp = app.get_group(&a, &id).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["data"]["name"], "before");
    let resp = app.create_group(&a, json!({"name": "after"})).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let list = app.list_groups(&a, "").await;
    assert_eq!(list.json["data"].as_array().unwrap().len(), 2);
}
