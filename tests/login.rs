//! `PUT /v2/api_auth` and `PUT /v2/user_auth` (auth-contract §3, §4, cases #38–#56): tokens issued
//! with the key material in CouchDB, accepted by the groups API.
mod common;

use common::{Account, TestApp};
use kz_groups::auth::jwt::Jwt;
use kz_groups::domain::clock;
use serde_json::{json, Value};

async fn api_key(app: &TestApp, account: &Account) -> String {
    app.raw(&account.id, &account.id).await.unwrap()["pvt_api_key"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn md5_hex(text: &str) -> String {
    use md5::Digest as _;
    md5::Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn claims(token: &str) -> serde_json::Map<String, Value> {
    Jwt::parse(token).expect("a JWT").claims().clone()
}

#[tokio::test]
async fn c38_api_auth_issues_an_account_token_that_works() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    let key = api_key(&app, &a).await;
    let resp = app
        .call(
            "PUT",
            "/v2/api_auth",
            None,
            Some(json!({"data": {"api_key": key}})),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert_eq!(resp.header("location"), Some("/v2/api_auth"));
    assert_eq!(resp.json["status"], "success");
    let token = resp.json["auth_token"].as_str().unwrap().to_owned();
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
    let groups = app
        .call("GET", TestApp::groups_path(&a), Some(&token), None)
        .await;
    assert_eq!(groups.status, 200, "{}", groups.text);
}

#[tokio::test]
async fn c39_a_garbage_token_is_ignored_but_c24_an_expired_one_is_not() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    let body = json!({"data": {"api_key": api_key(&app, &a).await}});
    let resp = app
        .call("PUT", "/v2/api_auth", Some("garbage"), Some(body.clone()))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert_ne!(resp.json["auth_token"], "garbage");
    let mut c = app.claims(&a.id, Some(&a.user_id)).await;
    c.insert("exp".into(), json!(clock::unix_now() - 10));
    let resp = app
        .call("PUT", "/v2/api_auth", Some(&app.sign(&c)), Some(body))
        .await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json["message"], "invalid credentials");
    assert_eq!(resp.json["data"], json!({}));
}

#[tokio::test]
async fn c40_to_c43_and_c45_api_auth_errors() {
    let app = TestApp::spawn().await;
    let unknown = "f".repeat(64);
    let resp = app
        .call(
            "PUT",
            "/v2/api_auth",
            None,
            Some(json!({"data": {"api_key": unknown}})),
        )
        .await;
    assert_eq!(resp.status, 404, "{}", resp.text);
    assert_eq!(resp.json["message"], "bad identifier");
    assert_eq!(resp.json["data"], json!([unknown]));
    assert_eq!(resp.json["page_size"], 0);
    let resp = app
        .call(
            "PUT",
            "/v2/api_auth",
            None,
            Some(json!({"data": {"api_key": "short"}})),
        )
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json["data"]["api_key"]["minLength"]["target"], 64);
    let resp = app
        .call("PUT", "/v2/api_auth", None, Some(json!({"data": {}})))
        .await;
    assert_eq!(resp.status, 400);
    assert!(resp.json["data"]["api_key"]["required"].is_object());
    let resp = app
        .call(
            "PUT",
            "/v2/api_auth",
            None,
            Some(json!({"data": {"api_key": unknown, "as": {}}})),
        )
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    for method in ["POST", "GET"] {
        let resp = app.call(method, "/v2/api_auth", None, None).await;
        assert_eq!(resp.status, 405, "{method}");
    }
}

#[tokio::test]
async fn c47_to_c52_user_auth_by_name_or_realm() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    let user = app.create_login_user(&a.id, "Alice", "Secret1", true).await;
    let doc = app.raw(&a.id, &a.id).await.unwrap();
    let name = doc["name"]
        .as_str()
        .unwrap()
        .to_uppercase()
        .replace(' ', " - ");
    let realm = doc["realm"].as_str().unwrap().to_uppercase();
    let login = |data: Value| app.call("PUT", "/v2/user_auth", None, Some(json!({ "data": data })));
    let good = md5_hex("alice:Secret1");
    let resp = login(json!({"credentials": good, "account_name": name})).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert_eq!(resp.header("location"), Some("/v2/user_auth"));
    assert_eq!(resp.json["data"]["owner_id"], user.as_str());
    assert_eq!(resp.json["data"]["account_id"], a.id.as_str());
    let token = resp.json["auth_token"].as_str().unwrap().to_owned();
    let c = claims(&token);
    assert_eq!(c["method"], "cb_user_auth");
    assert_eq!(c["owner_id"], user.as_str());
    assert!(c["identity_sig"].is_string());
    // The user's secret was created at issue time, as Kazoo does.
    assert!(app.raw(&a.id, &user).await.unwrap()["pvt_signature_secret"].is_string());
    assert_eq!(
        app.call("GET", TestApp::groups_path(&a), Some(&token), None)
            .await
            .status,
        200
    );
    assert_eq!(
        login(json!({"credentials": good, "account_realm": realm}))
            .await
            .status,
        201
    );
    let a401 = |resp: &common::Response| {
        assert_eq!(resp.status, 401, "{}", resp.text);
        assert_eq!(resp.json["message"], "invalid_credentials");
    };
    a401(&login(json!({"credentials": md5_hex("alice:wrong"), "account_name": name})).await);
    a401(&login(json!({"credentials": good.to_uppercase(), "account_name": name})).await);
    a401(&login(json!({"credentials": md5_hex("Alice:Secret1"), "account_name": name})).await);
    a401(&login(json!({"credentials": good})).await);
    let sha = {
        use sha1::Digest as _;
        sha1::Sha1::digest(b"alice:Secret1")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(
        login(json!({"credentials": sha, "method": "sha", "account_name": name}))
            .await
            .status,
        201
    );
    let resp = login(json!({"account_name": "x"})).await;
    assert_eq!(resp.status, 400);
    assert!(resp.json["data"]["credentials"]["required"].is_object());
}

#[tokio::test]
async fn c55_c56_disabled_users_and_accounts_cannot_log_in() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    app.create_login_user(&a.id, "bob", "pw", false).await;
    let name = app.raw(&a.id, &a.id).await.unwrap()["name"].clone();
    let resp = app
        .call(
            "PUT",
            "/v2/user_auth",
            None,
            Some(json!({"data": {"credentials": md5_hex("bob:pw"), "account_name": name}})),
        )
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text);
    let d = app
        .create_account_with(None, json!({"pvt_enabled": false}))
        .await;
    app.create_login_user(&d.id, "carol", "pw", true).await;
    let name = app.raw(&d.id, &d.id).await.unwrap()["name"].clone();
    let resp = app
        .call(
            "PUT",
            "/v2/user_auth",
            None,
            Some(json!({"data": {"credentials": md5_hex("carol:pw"), "account_name": name}})),
        )
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    assert_eq!(
        resp.json["data"]["account"]["disabled"]["message"],
        "account disabled"
    );
    // #44: api_auth still works for a disabled account.
    let resp = app
        .call(
            "PUT",
            "/v2/api_auth",
            None,
            Some(json!({"data": {"api_key": api_key(&app, &d).await}})),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
}

#[tokio::test]
async fn c46_logins_from_one_address_are_rate_limited() {
    let app = TestApp::spawn().await;
    let body = json!({"data": {"api_key": "0".repeat(64)}});
    // 100 tokens at 2 per login, refilled at 10 a second: a fast client runs dry; the bound only
    // stops a broken limiter from looping for ever.
    let mut seen = Vec::new();
    for _ in 0..2000 {
        let resp = app
            .call("PUT", "/v2/api_auth", None, Some(body.clone()))
            .await;
        seen.push(resp.status);
        if resp.status == 429 {
            assert_eq!(resp.json["message"], "too_many_requests");
            assert_eq!(resp.json["data"], json!({"message": "too many requests"}));
            break;
        }
        assert_eq!(resp.status, 404, "{}", resp.text);
    }
    assert_eq!(
        seen.last(),
        Some(&429),
        "never limited after {} logins",
        seen.len()
    );
    assert!(seen.len() > 40, "limited too early: {seen:?}");
}

#[tokio::test]
async fn c57_c58_token_auth_shows_the_claims_and_revokes_nothing() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    let resp = app
        .call("GET", "/v2/token_auth", Some(&a.token), None)
        .await;
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
    let resp = app
        .call("DELETE", "/v2/token_auth", Some(&a.token), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["status"], "success");
    assert_eq!(
        app.call("GET", TestApp::groups_path(&a), Some(&a.token), None)
            .await
            .status,
        200
    );
    let resp = app.call("GET", "/v2/token_auth", None, None).await;
    assert_eq!(resp.status, 401);
}
