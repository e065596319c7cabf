//! `PUT /v2/api_auth`, `PUT /v2/user_auth` and `/v2/token_auth` (auth-contract §3, §4; numbers
//! in comments are its cases): tokens issued with the key material in the store, accepted by
//! the groups API.
use std::time::Duration;

use kz_groups::auth::jwt::Jwt;
use kz_groups::domain::clock::{self, ManualClock};
use serde_json::{json, Map, Value};

use crate::helpers::{md5_hex, sha1_hex, Response, TestApp};

fn claims(token: &str) -> Map<String, Value> {
    Jwt::parse(token).expect("a JWT").claims().clone()
}

/// #38.
#[tokio::test]
async fn api_auth_issues_an_account_token_that_the_groups_api_accepts() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    let resp = app.login_with_api_key(&a.api_key).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert_eq!(resp.header("location"), Some("/v2/api_auth"));
    assert_eq!(resp.json["status"], "success");
    let token = resp.auth_token().to_owned();
    assert_eq!(token.split('.').count(), 3);
    let data = &resp.json["data"];
    assert_eq!(data["account_id"], a.id.as_str());
    assert!(data.get("owner_id").is_none());
    assert!(data["is_reseller"].is_boolean());
    assert!(data["language"].is_string());
    assert!(data["apps"].is_array());
    assert!(resp.json["version"].is_string());
    let c = claims(&token);
    assert_eq!(c["method"], "cb_api_auth");
    assert_eq!(c["iss"], "kazoo");
    assert!(c.get("owner_id").is_none());
    let exp = c["exp"].as_i64().unwrap();
    assert!((exp - clock::unix_now() - 3600).abs() <= 5, "{exp}");
    assert_eq!(c["identity_sig"].as_str().map(str::len), Some(43));
    let groups = app.with_token(&token).list_groups(&a, "").await;
    assert_eq!(groups.status, 200, "{}", groups.text);
}

/// #39, #24.
#[tokio::test]
async fn api_auth_ignores_a_garbage_token_but_refuses_an_expired_one() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    let data = json!({"api_key": a.api_key});
    let resp = app.with_token("garbage").api_auth(data.clone()).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert_ne!(resp.json["auth_token"], "garbage");
    let mut c = app.claims(&a, Some(&a.user_id)).await;
    c.insert("exp".into(), json!(clock::unix_now() - 10));
    let resp = app.with_token(&app.sign(&c)).api_auth(data).await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json["message"], "invalid credentials");
    assert_eq!(resp.json["data"], json!({}));
}

/// #40–#43, #45.
#[tokio::test]
async fn api_auth_refuses_unknown_keys_bad_bodies_and_other_methods() {
    let app = TestApp::spawn().await;
    let anonymous = app.without_token();
    let unknown = "f".repeat(64);
    let resp = app.login_with_api_key(&unknown).await;
    assert_eq!(resp.status, 404, "{}", resp.text);
    assert_eq!(resp.json["message"], "bad identifier");
    assert_eq!(resp.json["data"], json!([unknown]));
    assert_eq!(resp.json["page_size"], 0);
    let resp = app.login_with_api_key("short").await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json["data"]["api_key"]["minLength"]["target"], 64);
    let resp = anonymous.api_auth(json!({})).await;
    assert_eq!(resp.status, 400);
    assert!(resp.json["data"]["api_key"]["required"].is_object());
    let resp = anonymous
        .api_auth(json!({"api_key": unknown, "as": {}}))
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    for method in ["POST", "GET"] {
        let resp = anonymous.request(method, "/v2/api_auth").send().await;
        assert_eq!(resp.status, 405, "{method}");
    }
}

/// #47–#52.
#[tokio::test]
async fn user_auth_logs_in_by_account_name_or_realm_with_md5_or_sha1_credentials() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    let user = app.create_user(&a, "Alice", "Secret1").await;
    // As a user made through Kazoo's API: no signature secret until its first token.
    app.amend_doc(&a, &user, json!({"pvt_signature_secret": null}))
        .await;
    let name = a.name.to_uppercase().replace(' ', " - ");
    let realm = a.realm.to_uppercase();
    let good = md5_hex("alice:Secret1");
    let resp = app
        .login_with_credentials(json!({"credentials": good, "account_name": name}))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert_eq!(resp.header("location"), Some("/v2/user_auth"));
    assert_eq!(resp.json["data"]["owner_id"], user.as_str());
    assert_eq!(resp.json["data"]["account_id"], a.id.as_str());
    let token = resp.auth_token().to_owned();
    let c = claims(&token);
    assert_eq!(c["method"], "cb_user_auth");
    assert_eq!(c["owner_id"], user.as_str());
    assert!(c["identity_sig"].is_string());
    // The user's secret was created at issue time, as Kazoo does.
    assert!(app.read_doc(&a, &user).await.unwrap()["pvt_signature_secret"].is_string());
    assert_eq!(app.with_token(&token).list_groups(&a, "").await.status, 200);
    let resp = app
        .login_with_credentials(json!({"credentials": good, "account_realm": realm}))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let refused = [
        json!({"credentials": md5_hex("alice:wrong"), "account_name": name}),
        json!({"credentials": good.to_uppercase(), "account_name": name}),
        json!({"credentials": md5_hex("Alice:Secret1"), "account_name": name}),
        json!({"credentials": good}),
    ];
    for data in refused {
        let resp = app.login_with_credentials(data.clone()).await;
        assert_eq!(resp.status, 401, "{data}: {}", resp.text);
        assert_eq!(resp.json["message"], "invalid_credentials");
    }
    let sha = sha1_hex("alice:Secret1");
    let resp = app
        .login_with_credentials(json!({"credentials": sha, "method": "sha", "account_name": name}))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let resp = app
        .login_with_credentials(json!({"account_name": "x"}))
        .await;
    assert_eq!(resp.status, 400);
    assert!(resp.json["data"]["credentials"]["required"].is_object());
}

/// #55, #56, #44.
#[tokio::test]
async fn disabled_users_and_accounts_cannot_log_in_but_api_keys_still_work() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    let bob = app.create_user(&a, "bob", "pw").await;
    app.amend_doc(&a, &bob, json!({"enabled": false})).await;
    let resp = app
        .login_with_credentials(json!({"credentials": md5_hex("bob:pw"), "account_name": a.name}))
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text);
    let d = app.create_account(None).await;
    app.amend_account(&d, json!({"pvt_enabled": false})).await;
    app.create_user(&d, "carol", "pw").await;
    let resp = app
        .login_with_credentials(json!({"credentials": md5_hex("carol:pw"), "account_name": d.name}))
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    assert_eq!(
        resp.json["data"]["account"]["disabled"]["message"],
        "account disabled"
    );
    // #44: api_auth still works for a disabled account.
    let resp = app.login_with_api_key(&d.api_key).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
}

/// #46, made exact (auth-contract §3.7): 100 tokens, two per login, refilled at 10 a second.
/// Time moves here only when the test moves it.
#[tokio::test]
async fn logins_from_one_address_spend_two_tokens_each_and_get_429_once_the_bucket_is_empty() {
    let time = ManualClock::new();
    let app = TestApp::spawn_with_clock(&time).await;
    let unknown = "0".repeat(64);
    let assert_404 = |resp: &Response, left: u64| {
        assert_eq!(resp.status, 404, "{}", resp.text);
        assert_eq!(resp.json["tokens"]["remaining"], left, "{}", resp.text);
    };
    for n in 1..=50u64 {
        assert_404(&app.login_with_api_key(&unknown).await, 100 - 2 * n);
    }
    let resp = app.login_with_api_key(&unknown).await;
    assert_eq!(resp.status, 429, "{}", resp.text);
    assert_eq!(resp.json["message"], "too_many_requests");
    assert_eq!(resp.json["data"], json!({"message": "too many requests"}));
    // A fifth of a second later, two tokens: one more login.
    time.advance(Duration::from_millis(200));
    assert_404(&app.login_with_api_key(&unknown).await, 0);
    assert_eq!(app.login_with_api_key(&unknown).await.status, 429);
}

/// #57, #58.
#[tokio::test]
async fn token_auth_shows_the_claims_and_its_delete_revokes_nothing() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    let resp = app.with_token(&a.token).token_info().await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let data = &resp.json["data"];
    assert_eq!(data["account_id"], a.id.as_str());
    assert_eq!(data["owner_id"], a.user_id.as_str());
    assert_eq!(data["method"], "cb_user_auth");
    assert_eq!(data["id"], Value::Null);
    assert!(data["exp"].is_i64());
    assert!(data
        .as_object()
        .unwrap()
        .keys()
        .all(|k| !k.starts_with("pvt_")));
    let resp = app.with_token(&a.token).delete_token().await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["status"], "success");
    assert_eq!(app.list_groups(&a, "").await.status, 200);
    let resp = app.without_token().token_info().await;
    assert_eq!(resp.status, 401);
}
