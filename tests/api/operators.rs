//! What an operator sees: readiness that says when signing material is missing (and a key made
//! after start used at once), the Prometheus metrics, and logs that keep secrets out.
use std::time::Duration;

use kz_groups::admin::{self, NewAccount};
use kz_groups::notices::LogNotifier;
use kz_groups::startup::{self, Application};
use serde_json::{json, Value};

use crate::helpers::process::ServerProcess;
use crate::helpers::{cli, config_for, embedded_backend, empty_backend, TestApp};

async fn get(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = http.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn api_auth(http: &reqwest::Client, base: &str, api_key: &str) -> (u16, Value) {
    let resp = http
        .put(format!("{base}/v2/api_auth"))
        .header("content-type", "application/json")
        .body(json!({"data": {"api_key": api_key}}).to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn readyz_says_what_to_run_until_init_and_a_key_made_after_start_is_used_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, backend) = empty_backend(dir.path());
    // The default key cache (10 s) stays on: the absence of a key must not be remembered.
    let config = config_for(backend);
    let app = Application::build(config.clone()).expect("application builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let store = startup::store(&config).unwrap();
    let new = NewAccount {
        name: "First Run".into(),
        ..Default::default()
    };
    let doc = admin::create_account(&store, &startup::design_docs().unwrap(), &LogNotifier, &new)
        .await
        .unwrap();
    let api_key = doc["pvt_api_key"].as_str().unwrap();
    let http = reqwest::Client::new();

    let (status, ready) = get(&http, &format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["signing"], "missing", "{ready}");
    let problem = ready["problem"].as_str().unwrap();
    assert!(problem.contains("kz-groups init"), "{problem}");
    let (status, body) = api_auth(&http, &base, api_key).await;
    assert_eq!(status, 401, "{body}");

    let report = admin::init(&store).await.unwrap();
    assert!(!report.created.is_empty());
    let (status, body) = api_auth(&http, &base, api_key).await;
    assert_eq!(status, 201, "the new key is used at once: {body}");
    let (status, ready) = get(&http, &format!("{base}/readyz")).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["signing"], "ready", "{ready}");
    assert!(ready.get("problem").is_none(), "{ready}");
}

#[tokio::test]
async fn readyz_names_the_store_by_its_kind_and_reports_the_version() {
    let app = TestApp::spawn().await;
    let ready = app.probe("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    let kind = if embedded_backend() {
        "embedded"
    } else {
        "couchdb"
    };
    assert_eq!(ready.json["store"], kind, "{}", ready.text);
    assert_eq!(ready.json[kind], "up", "{}", ready.text);
    let other = if kind == "couchdb" {
        "embedded"
    } else {
        "couchdb"
    };
    assert!(ready.json.get(other).is_none(), "{}", ready.text);
    assert_eq!(ready.json["version"], env!("CARGO_PKG_VERSION"));
}

/// The value of the sample `line` (name and labels as exposed), if exposed.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_route_name_and_store_calls_in_the_prometheus_format() {
    let app = TestApp::spawn().await;
    let account = app.create_account(None).await;
    assert_eq!(
        app.with_token(&account.token)
            .list_groups(&account, "")
            .await
            .status,
        200
    );
    let created = app
        .with_token(&account.token)
        .create_group(&account, json!({"name": "Metered"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let missing = app
        .with_token(&account.token)
        .get_group(&account, "0123456789abcdef0123456789abcdef")
        .await;
    assert_eq!(missing.status, 404);

    let scrape = app.probe("/metrics").await;
    assert_eq!(scrape.status, 200);
    assert!(
        scrape
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        scrape.headers
    );
    let text = &scrape.text;
    for (series, at_least) in [
        (
            r#"kz_groups_http_requests_total{method="GET",route="groups",status="200"}"#,
            1.0,
        ),
        (
            r#"kz_groups_http_requests_total{method="PUT",route="groups",status="201"}"#,
            1.0,
        ),
        (
            r#"kz_groups_http_requests_total{method="GET",route="group",status="404"}"#,
            1.0,
        ),
        (
            r#"kz_groups_http_request_duration_seconds_count{method="GET",route="groups"}"#,
            1.0,
        ),
        (
            r#"kz_groups_store_requests_total{operation="get_doc"}"#,
            1.0,
        ),
        (
            r#"kz_groups_store_requests_total{operation="put_doc"}"#,
            1.0,
        ),
        (
            r#"kz_groups_store_request_duration_seconds_count{operation="get_doc"}"#,
            1.0,
        ),
        (r#"kz_groups_build_info{version="0.1.0"}"#, 1.0),
        ("kz_groups_amqp_enabled", 0.0),
        ("kz_groups_conflicts_resolved_total", 0.0),
        ("kz_groups_couchdb_accepted_writes_total", 0.0),
    ] {
        let value = sample(text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"));
        assert!(value >= at_least, "{series} = {value}");
    }
    assert!(
        !text.contains(&account.id),
        "no raw path (account id) in a label:\n{text}"
    );
}

#[test]
fn tokens_and_api_keys_never_reach_the_access_log_in_either_log_format() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let (_couch, backend) = empty_backend(dir.path());
        if let kz_groups::config::Backend::CouchDb { .. } = &backend {
            cli::run_ok(&backend, &["init"]);
        }
        let server = ServerProcess::start(
            &backend,
            &[("RUST_LOG", "info"), ("KZ_GROUPS_LOG_FORMAT", format)],
        );
        let account = cli::run_ok(&backend, &["accounts", "create", "--name", "Secretive"]);
        let (id, api_key) = (
            account["account_id"].as_str().unwrap(),
            account["api_key"].as_str().unwrap(),
        );
        let http = reqwest::blocking::Client::new();
        let login: Value = http
            .put(format!("{}/v2/api_auth?api_key={api_key}", server.base()))
            .header("content-type", "application/json")
            .body(json!({"data": {"api_key": api_key}}).to_string())
            .send()
            .unwrap()
            .json()
            .unwrap();
        let token = login["auth_token"].as_str().expect("a token").to_owned();
        let listed = http
            .get(format!(
                "{}/v2/accounts/{id}/groups?paginate=false&auth_token={token}",
                server.base()
            ))
            .send()
            .unwrap();
        assert_eq!(listed.status().as_u16(), 200);
        let log = server.log(Duration::from_millis(300));
        assert!(
            !log.contains(&token),
            "{format}: the token is in the log:\n{log}"
        );
        assert!(
            !log.contains(api_key),
            "{format}: the API key is in the log:\n{log}"
        );
        assert!(
            log.contains("paginate=false&auth_token=REDACTED"),
            "{format}: the request line stays readable:\n{log}"
        );
        if format == "json" {
            let access = log
                .lines()
                .filter(|l| l.contains("auth_token=REDACTED"))
                .map(|l| serde_json::from_str::<Value>(l).expect("a JSON log line"))
                .next()
                .unwrap();
            assert_eq!(access["level"], "INFO", "{access}");
            assert!(access["request_id"].is_string() || access["message"].is_string());
            for line in log.lines() {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            }
        }
    }
}

#[tokio::test]
async fn metrics_show_the_bus_connection_and_its_queue() {
    let app = TestApp::spawn_with_bus().await;
    let mut text = String::new();
    for _ in 0..200 {
        text = app.probe("/metrics").await.text;
        if sample(&text, "kz_groups_amqp_connected") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sample(&text, "kz_groups_amqp_connected"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "kz_groups_amqp_enabled"), Some(1.0));
    assert_eq!(
        sample(&text, "kz_groups_amqp_queue_capacity"),
        Some(10_000.0)
    );
    assert!(sample(&text, "kz_groups_amqp_queue_depth").is_some());
    assert_eq!(sample(&text, "kz_groups_amqp_dropped_total"), Some(0.0));
}
