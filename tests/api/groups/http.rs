//! What every request to the groups resource goes through before and after its operation:
//! methods, paths and API versions, headers (CORS, Accept, request ids), output options (pretty
//! print, JSONP) and the rate limit of unauthenticated clients.
use std::time::Duration;

use kz_groups::domain::clock::ManualClock;
use serde_json::{json, Value};

use super::{is_hex32, setup, UNKNOWN};
use crate::helpers::TestApp;

/// #39, #40.
#[tokio::test]
async fn methods_not_allowed_return_405_without_an_allow_header() {
    let (app, a) = setup().await;
    let admin = app.with_token(&a.token);
    let resp = admin
        .request("POST", a.groups_path())
        .json(&json!({"data": {"name": "x"}}))
        .send()
        .await;
    assert_eq!(resp.status, 405);
    assert_eq!(
        (resp.json["message"].clone(), resp.json["data"].clone()),
        (
            json!("invalid_method"),
            json!({"message": "method not allowed"})
        )
    );
    assert!(resp.header("allow").is_none());
    assert!(resp.header("access-control-allow-methods").is_some());
    for (method, path) in [
        ("PUT", a.group_path(UNKNOWN)),
        ("DELETE", a.groups_path()),
        ("PATCH", a.groups_path()),
        ("HEAD", a.groups_path()),
    ] {
        let resp = admin.request(method, &path).send().await;
        assert_eq!(resp.status, 405, "{method} {path}");
    }
}

/// #41.
#[tokio::test]
async fn options_returns_200_only_for_a_cors_preflight() {
    let (app, a) = setup().await;
    let resp = app.request("OPTIONS", a.groups_path()).send().await;
    assert_eq!(resp.status, 405);
    let resp = app
        .request("OPTIONS", a.groups_path())
        .header("origin", "https://x")
        .header("access-control-request-method", "PUT")
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert!(resp.text.is_empty());
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    assert_eq!(resp.header("access-control-max-age"), Some("86400"));
}

/// #42.
#[tokio::test]
async fn paths_deeper_than_a_group_return_404_not_found() {
    let (app, a) = setup().await;
    let resp = app
        .with_token(&a.token)
        .request("GET", format!("{}/g/extra", a.groups_path()))
        .send()
        .await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json["message"], "not_found");
    assert_eq!(resp.json["data"], json!({"message": "not found"}));
}

/// #46, #47.
#[tokio::test]
async fn unknown_or_malformed_account_ids_return_404() {
    let app = TestApp::spawn().await;
    let anonymous = app.without_token();
    let resp = anonymous
        .request("GET", format!("/v2/accounts/{UNKNOWN}/groups"))
        .send()
        .await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json["message"], "bad_identifier");
    assert_eq!(
        resp.json["data"],
        json!({"cause": UNKNOWN, "message": "bad identifier"})
    );
    let resp = anonymous
        .request("GET", "/v2/accounts/abc/groups")
        .send()
        .await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json["message"], "bad identifier");
    assert_eq!(
        resp.json["data"],
        json!({"message": "invalid account_id 'abc'"})
    );
}

/// #60.
#[tokio::test]
async fn the_request_id_is_echoed_or_generated() {
    let (app, a) = setup().await;
    let resp = app
        .request("GET", a.groups_path())
        .token(&a.token)
        .header("x-request-id", "test-123")
        .send()
        .await;
    assert_eq!(resp.header("x-request-id"), Some("test-123"));
    assert_eq!(resp.json["request_id"], "test-123");
    let resp = app.list_groups(&a, "").await;
    let id = resp.json["request_id"].as_str().unwrap();
    assert!(is_hex32(id));
    assert_eq!(resp.header("x-request-id"), Some(id));
}

/// #62.
#[tokio::test]
async fn api_version_1_returns_410_gone() {
    let (app, a) = setup().await;
    let resp = app
        .with_token(&a.token)
        .request("GET", format!("/v1/accounts/{}/groups", a.id))
        .send()
        .await;
    assert_eq!(resp.status, 410);
    assert_eq!(resp.json["message"], "gone");
    assert_eq!(
        resp.json["data"]["message"],
        "API version 1 is not supported. Please upgrade your code to use version 2."
    );
}

#[tokio::test]
async fn a_cache_busting_query_a_trailing_slash_and_a_body_on_delete_are_accepted() {
    let (app, a) = setup().await;
    let id = app.add_group(&a, json!({"name": "G"})).await.id;
    let admin = app.with_token(&a.token);
    // Cache-busting parameter and trailing slash on a GET with a JSON content type.
    let resp = admin
        .request("GET", format!("{}/?_=1700000000000", a.groups_path()))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    // A {"data":{...}} body on DELETE.
    let resp = admin
        .request("DELETE", a.group_path(&id))
        .json(&json!({"data": {}}))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}

#[tokio::test]
async fn hostile_ids_in_the_url_return_404_and_reach_nothing_else() {
    let (app, a) = setup().await;
    let admin = app.with_token(&a.token);
    for id in [
        "_design%2Fgroups",
        "_all_docs",
        "_changes",
        "..",
        "%2E%2E",
        "a%2Fb",
        "_design",
    ] {
        for method in ["GET", "DELETE", "POST", "PATCH"] {
            let resp = admin
                .request(method, a.group_path(id))
                .json(&json!({"data": {"name": "x"}}))
                .send()
                .await;
            assert_eq!(resp.status, 404, "{method} {id}: {}", resp.text);
        }
    }
    for account in [
        "_users",
        "_replicator",
        "_users%2F..%2F..",
        "_replicator_____________________",
    ] {
        let resp = admin
            .request("GET", format!("/v2/accounts/{account}/groups"))
            .send()
            .await;
        assert_eq!(resp.status, 404, "{account}: {}", resp.text);
    }
    // The design document survived.
    assert_eq!(app.list_groups(&a, "").await.status, 200);
}

/// auth-contract §3.7: a bucket of 100 tokens per client and account, refilled at 10 a second,
/// one token per unauthenticated request. Time moves here only when the test moves it.
#[tokio::test]
async fn unauthenticated_requests_spend_a_token_each_and_get_429_once_the_bucket_is_empty() {
    let time = ManualClock::new();
    let app = TestApp::spawn_with_clock(&time).await;
    let a = app.create_account(None).await;
    let anonymous = app.without_token();
    for left in (0..100u64).rev() {
        let resp = anonymous.list_groups(&a, "").await;
        assert_eq!(resp.status, 401, "{}", resp.text);
        assert_eq!(resp.json["tokens"]["remaining"], left, "{}", resp.text);
    }
    let resp = anonymous.list_groups(&a, "").await;
    assert_eq!(resp.status, 429, "{}", resp.text);
    assert_eq!(resp.json["message"], "too_many_requests");
    assert_eq!(resp.json["data"], json!({"message": "too many requests"}));
    // A second later the bucket holds ten tokens again.
    time.advance(Duration::from_secs(1));
    for _ in 0..10 {
        assert_eq!(anonymous.list_groups(&a, "").await.status, 401);
    }
    assert_eq!(anonymous.list_groups(&a, "").await.status, 429);
    // An authenticated client is not charged.
    assert_eq!(app.list_groups(&a, "").await.status, 200);
}

#[tokio::test]
async fn an_unacceptable_accept_header_returns_a_bare_406() {
    let (app, a) = setup().await;
    let resp = app
        .request("GET", a.groups_path())
        .token(&a.token)
        .header("accept", "text/html")
        .send()
        .await;
    assert_eq!(resp.status, 406);
    assert!(resp.text.is_empty());
}

#[tokio::test]
async fn pretty_print_indents_the_answer() {
    let (app, a) = setup().await;
    let resp = app.list_groups(&a, "pretty_print=true").await;
    assert!(resp.text.contains("\n  \""), "{}", resp.text);
    let resp = app.list_groups(&a, "").await;
    assert!(!resp.text.contains('\n'));
}

#[tokio::test]
async fn cors_headers_are_sent_on_errors_and_on_cors_requests_only() {
    let (app, a) = setup().await;
    let resp = app.without_token().list_groups(&a, "").await;
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        resp.header("access-control-expose-headers"),
        Some("content-type, x-auth-token, x-request-id, x-kazoo-cluster-id, location, etag, etag")
    );
    let resp = app.list_groups(&a, "").await;
    assert!(resp.header("access-control-allow-origin").is_none());
    let resp = app
        .request("GET", a.groups_path())
        .token(&a.token)
        .header("origin", "https://ui")
        .send()
        .await;
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    let methods = resp.header("access-control-allow-methods").unwrap();
    assert!(
        methods.starts_with("OPTIONS, ") && methods.contains("GET") && methods.contains("PUT"),
        "{methods}"
    );
}

#[tokio::test]
async fn jsonp_wraps_the_envelope_for_plain_callback_names_only() {
    let (app, a) = setup().await;
    let resp = app.list_groups(&a, "jsonp=cb_1").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/javascript"));
    let inner = resp
        .text
        .strip_prefix("cb_1(")
        .and_then(|t| t.strip_suffix(");"))
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(inner).unwrap()["status"],
        "success"
    );
    let resp = app.list_groups(&a, "jsonp=alert(1)%3B//").await;
    assert_eq!(resp.header("content-type"), Some("application/json"));
}
