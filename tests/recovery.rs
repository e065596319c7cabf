//! CouchDB going away and coming back: every request in between is a 503 in the Kazoo envelope,
//! and service resumes without restarting kz-groups.
mod common;

use common::couch_server::TestCouchServer;
use common::TestApp;
use serde_json::json;

#[tokio::test]
async fn couchdb_stopped_gives_503_and_service_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestCouchServer::start(None, dir.path())
        .expect("this test needs KZ_TEST_COUCH_SERVER_BIN (set by scripts/test)");
    let app = TestApp::spawn_with(&server.url()).await;
    let a = app.create_account(None).await;
    let group = app.create_group(&a, json!({"name": "before"})).await;
    let path = TestApp::groups_path(&a);
    let entity = format!("{path}/{}", group["id"].as_str().unwrap());
    assert_eq!(
        app.call("GET", &path, Some(&a.token), None).await.status,
        200
    );

    server.stop();
    for (method, p, body) in [
        ("GET", &path, None),
        ("GET", &entity, None),
        ("PUT", &path, Some(json!({"data": {"name": "during"}}))),
        ("PATCH", &entity, Some(json!({"data": {"flags": ["x"]}}))),
        ("DELETE", &entity, None),
    ] {
        let resp = app.call(method, p, Some(&a.token), body).await;
        assert_eq!(resp.status, 503, "{method} {p}: {}", resp.text);
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
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);

    server.restart().expect("server restarts");
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let resp = app.call("GET", &entity, Some(&a.token), None).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["data"]["name"], "before");
    let resp = app
        .call(
            "PUT",
            &path,
            Some(&a.token),
            Some(json!({"data": {"name": "after"}})),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let list = app.call("GET", &path, Some(&a.token), None).await;
    assert_eq!(list.json["data"].as_array().unwrap().len(), 2);
}
