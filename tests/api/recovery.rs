//! CouchDB going away and coming back: every request in between is a 503 in the Kazoo envelope,
//! and service resumes without restarting kz-groups.
use kz_groups::config::Backend;
use serde_json::json;

use crate::helpers::couch_server::TestCouchServer;
use crate::helpers::cut_proxy::CutProxy;
use crate::helpers::{config_for, eventually, TestApp};

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

/// Issue 15.3: CouchDB gone while a listing's rows are being read. Before any byte of the answer
/// is sent that is an unreachable store (503 in the Kazoo envelope, not a 500); once a streamed
/// answer has started, the connection is closed, so the client sees a truncated body and never a
/// well-formed list that is missing rows.
#[tokio::test]
async fn a_view_answer_cut_in_its_rows_is_a_503_or_a_truncated_body_never_a_partial_list() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestCouchServer::start(None, dir.path())
        .expect("this test needs KZ_TEST_COUCH_SERVER_BIN (set by scripts/test)");
    let upstream = reqwest::Url::parse(&server.url()).unwrap();
    let proxy = CutProxy::start(format!(
        "{}:{}",
        upstream.host_str().unwrap(),
        upstream.port_or_known_default().unwrap()
    ))
    .await;
    let mut through = upstream.clone();
    through.set_port(Some(proxy.port)).unwrap();
    through.set_host(Some("127.0.0.1")).unwrap();
    let mut config = config_for(Backend::CouchDb {
        url: through.to_string(),
    });
    // Every listing reaches CouchDB.
    config.caches.listing_entries = 0;
    let app = TestApp::spawn_configured(config, None).await;
    let a = app.create_account(None).await;
    // Written straight into CouchDB: the service has no recent write of its own to check a
    // listing against, so `paginate=false` streams.
    for i in 0..120 {
        let doc = json!({"pvt_type": "group", "name": format!("group {i:03}"), "endpoints": {}});
        app.write_doc(&a, &format!("group{i:03}"), doc).await;
    }
    let whole = app.list_groups(&a, "paginate=false").await;
    assert_eq!(whole.json["data"].as_array().unwrap().len(), 120);

    // A page is read whole before its answer starts: a cut is a 503.
    proxy.cut_rows_after(1500);
    let page = app.list_groups(&a, "").await;
    assert_eq!(page.status, 503, "{}", page.text);
    assert_eq!(page.json["error"], "503", "{}", page.text);
    assert_eq!(page.json["status"], "error");
    assert!(proxy.cuts() >= 1);

    // paginate=false streams: its first rows are sent, then the connection closes unfinished.
    let cuts = proxy.cuts();
    let resp = app
        .request("GET", format!("{}?paginate=false", a.groups_path()))
        .token(&a.token)
        .send_unread()
        .await;
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await;
    assert!(proxy.cuts() > cuts, "the view answer was cut");
    match body {
        Err(e) => assert!(e.is_body() || e.is_decode(), "{e}"),
        Ok(bytes) => panic!(
            "a complete body after a cut: {}",
            String::from_utf8_lossy(&bytes)
        ),
    }

    proxy.disarm();
    let again = app.list_groups(&a, "paginate=false").await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["data"].as_array().unwrap().len(), 120);
}
