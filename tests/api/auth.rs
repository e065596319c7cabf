//! Token verification and authorisation against key material provisioned the way Kazoo keeps
//! it. Numbers in comments are auth-contract §7 cases unless they say groups-contract.
use std::time::Duration;

use base64::Engine;
use kz_groups::auth::jwt::{self, Alg};
use kz_groups::auth::keys;
use kz_groups::domain::clock;
use kz_groups::domain::ids::{random_hex, DbName, DocId};
use serde_json::{json, Map, Value};

use crate::helpers::{eventually, Account, Response, TestApp, KEY_PEM, KID, OTHER_KEY_PEM};

async fn setup() -> (TestApp, Account) {
    let app = TestApp::spawn().await;
    let account = app.create_account(None).await;
    (app, account)
}

/// The account's groups, listed with `token`.
async fn list_with(app: &TestApp, account: &Account, token: &str) -> Response {
    app.with_token(token).list_groups(account, "").await
}

/// 401 variant A: `{"message":"invalid credentials"}` and no `version`.
fn assert_a401(resp: &Response) {
    assert_eq!(resp.status, 401, "{}", resp.text);
    assert_eq!(resp.json["message"], "invalid_credentials");
    assert_eq!(resp.json["data"], json!({"message": "invalid credentials"}));
    assert!(resp.json.get("version").is_none());
}

#[tokio::test]
async fn a_missing_empty_or_malformed_token_returns_401_variant_a() {
    let (app, a) = setup().await;
    assert_a401(&app.without_token().list_groups(&a, "").await);
    let resp = app.request("GET", a.groups_path()).token("").send().await;
    assert_a401(&resp);
    let resp = list_with(&app, &a, "garbage").await;
    assert_a401(&resp);
    assert_eq!(resp.json["auth_token"], "garbage");
    let parts = a.token.split('.').collect::<Vec<_>>();
    let four = format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[2]);
    assert_a401(&list_with(&app, &a, &four).await);
}

#[tokio::test]
async fn a_token_in_the_query_or_the_envelope_is_accepted() {
    let (app, a) = setup().await;
    let anonymous = app.without_token();
    let resp = anonymous
        .list_groups(&a, &format!("auth_token={}", a.token))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["auth_token"], a.token.as_str());
    assert!(resp.json["version"].is_string());
    let resp = anonymous
        .request("PUT", a.groups_path())
        .json(&json!({"auth_token": a.token, "data": {"name": "x"}}))
        .send()
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
}

#[tokio::test]
async fn a_bearer_authorization_header_is_refused() {
    let (app, a) = setup().await;
    let resp = app
        .request("GET", a.groups_path())
        .header("authorization", format!("Bearer {}", a.token))
        .send()
        .await;
    assert_a401(&resp);
}

#[tokio::test]
async fn an_unknown_account_returns_404_before_authentication() {
    let (app, a) = setup().await;
    let resp = app
        .with_token(&a.token)
        .request(
            "GET",
            "/v2/accounts/0123456789abcdef0123456789abcdef/groups",
        )
        .send()
        .await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json["message"], "bad_identifier");
}

/// #9–#12.
#[tokio::test]
async fn tokens_signed_with_another_key_an_unknown_kid_no_kid_or_alg_none_are_refused() {
    let (app, a) = setup().await;
    let mut claims = app.claims(&a, Some(&a.user_id)).await;
    claims.insert("exp".into(), json!(clock::unix_now() + 600));
    // #9: another key, same kid.
    let other = keys::private_key_from_pem(OTHER_KEY_PEM).unwrap();
    assert_a401(&list_with(&app, &a, &jwt::sign(&claims, KID, Alg::RS256, &other)).await);
    // #10: unknown kid, and nothing gets created in system_auth.
    let unknown_kid = "ffffffffffffffffffffffffffffffff";
    let token = jwt::sign(&claims, unknown_kid, Alg::RS256, app.key());
    assert_a401(&list_with(&app, &a, &token).await);
    let db = DbName::system(DbName::SYSTEM_AUTH);
    assert!(app
        .store
        .get_doc(&db, &DocId::parse(unknown_kid).unwrap())
        .await
        .unwrap()
        .is_none());
    // #11: no kid.
    let header: Map<String, Value> = json!({"alg": "RS256", "typ": "JWT"})
        .as_object()
        .unwrap()
        .clone();
    let token = jwt::sign_with_header(&header, &claims, Alg::RS256, app.key());
    assert_a401(&list_with(&app, &a, &token).await);
    // #12: alg none.
    let parts: Vec<&str> = a.token.split('.').collect();
    let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{KID}"}}"#));
    assert_a401(&list_with(&app, &a, &format!("{none_header}.{}.", parts[1])).await);
}

/// #13–#15.
#[tokio::test]
async fn tokens_without_typ_or_with_another_typ_or_signed_rs512_are_accepted() {
    let (app, a) = setup().await;
    let mut claims = app.claims(&a, Some(&a.user_id)).await;
    claims.insert("exp".into(), json!(clock::unix_now() + 600));
    // #13, #14: typ absent or not JWT is fine.
    for header in [
        json!({"alg": "RS256", "kid": KID}),
        json!({"alg": "RS256", "typ": "JWS", "kid": KID}),
    ] {
        let token =
            jwt::sign_with_header(header.as_object().unwrap(), &claims, Alg::RS256, app.key());
        assert_eq!(list_with(&app, &a, &token).await.status, 200, "{header}");
    }
    // #15: RS512.
    let token = app.sign_with(&claims, Alg::RS512);
    assert_eq!(list_with(&app, &a, &token).await.status, 200);
}

/// #16, #17, #19, #26.
#[tokio::test]
async fn tokens_with_a_bad_issuer_account_id_identity_sig_or_exp_are_refused() {
    let (app, a) = setup().await;
    let base = app.claims(&a, Some(&a.user_id)).await;
    let changed = |(name, value): (&str, Option<Value>)| {
        let mut claims = base.clone();
        match value {
            Some(value) => claims.insert(name.into(), value),
            None => claims.remove(name),
        };
        app.sign(&claims)
    };
    for change in [
        // #16
        ("iss", Some(json!("foo"))),
        // #17
        ("account_id", None),
        // #19
        (
            "identity_sig",
            Some(json!("4K58MoGYRKjE2k1a-gIKsGraZIcxDb0ZpwhFd_Qgelk")),
        ),
        // #26
        ("exp", Some(json!("9999999999"))),
    ] {
        let token = changed(change.clone());
        let resp = list_with(&app, &a, &token).await;
        assert_eq!(resp.status, 401, "{change:?}: {}", resp.text);
        assert_a401(&resp);
    }
}

/// #18, #21.
#[tokio::test]
async fn tokens_without_identity_sig_or_without_exp_are_accepted() {
    let (app, a) = setup().await;
    let mut claims = app.claims(&a, Some(&a.user_id)).await;
    // #21: no exp never expires.
    assert_eq!(list_with(&app, &a, &app.sign(&claims)).await.status, 200);
    // #18: no identity_sig is accepted.
    claims.remove("identity_sig");
    assert_eq!(list_with(&app, &a, &app.sign(&claims)).await.status, 200);
}

#[tokio::test]
async fn resetting_the_identity_secret_revokes_its_tokens() {
    let (app, a) = setup().await;
    assert_eq!(list_with(&app, &a, &a.token).await.status, 200);
    app.amend_doc(
        &a,
        &a.user_id,
        json!({"pvt_signature_secret": "00000000000000000000000000000000"}),
    )
    .await;
    let resp = eventually(|| list_with(&app, &a, &a.token), |r| r.status == 401).await;
    assert_a401(&resp);
}

/// #24, #25.
#[tokio::test]
async fn expired_tokens_return_401_variant_b_even_on_unknown_accounts() {
    let (app, a) = setup().await;
    let mut claims = app.claims(&a, Some(&a.user_id)).await;
    claims.insert("exp".into(), json!(clock::unix_now() - 10));
    let expired = app.sign(&claims);
    for path in [
        a.groups_path(),
        "/v2/accounts/0123456789abcdef0123456789abcdef/groups".into(),
    ] {
        let resp = app.with_token(&expired).request("GET", path).send().await;
        assert_eq!(resp.status, 401, "{}", resp.text);
        assert_eq!(resp.json["message"], "invalid credentials");
        assert_eq!(resp.json["data"], json!({}));
        assert_eq!(resp.json["auth_token"], expired.as_str());
    }
    // #25: expired and badly signed: the signature is checked first.
    let other = keys::private_key_from_pem(OTHER_KEY_PEM).unwrap();
    let bad = jwt::sign(&claims, KID, Alg::RS256, &other);
    assert_a401(&list_with(&app, &a, &bad).await);
}

#[tokio::test]
async fn only_the_account_and_its_ancestors_may_act_on_it() {
    let app = TestApp::spawn().await;
    let reseller = app.create_account(None).await;
    let parent = app.create_account(Some(&reseller)).await;
    let a = app.create_account(Some(&parent)).await;
    let sibling = app.create_account(Some(&parent)).await;
    for caller in [&a, &parent, &reseller] {
        assert_eq!(list_with(&app, &a, &caller.token).await.status, 200);
    }
    let resp = list_with(&app, &parent, &a.token).await;
    assert_eq!(resp.status, 403);
    assert_eq!(resp.json["error"], "403");
    assert_eq!(resp.json["message"], "forbidden");
    assert_eq!(resp.json["data"], json!({"message": "forbidden"}));
    assert_eq!(list_with(&app, &a, &sibling.token).await.status, 403);
    // A parent's write records who wrote.
    let resp = app
        .with_token(&parent.token)
        .create_group(&a, json!({"name": "x"}))
        .await;
    assert_eq!(resp.status, 201);
    let doc = app.read_doc(&a, resp.id()).await.unwrap();
    assert_eq!(doc["pvt_auth_account_id"], parent.id.as_str());
}

#[tokio::test]
async fn superduper_admins_may_act_on_any_account() {
    let app = TestApp::spawn().await;
    let master = app.create_superduper_account().await;
    let other = app.create_account(None).await;
    let resp = list_with(&app, &other, &master.token).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let resp = app
        .with_token(&other.token)
        .request("GET", "/v2/groups")
        .send()
        .await;
    assert_eq!(resp.status, 403);
}

#[tokio::test]
async fn an_x_auth_account_id_header_must_match_the_token() {
    let app = TestApp::spawn().await;
    let parent = app.create_account(None).await;
    let a = app.create_account(Some(&parent)).await;
    let with_header = |account_id: &str| {
        app.request("GET", a.groups_path())
            .token(&a.token)
            .header("x-auth-account-id", account_id)
            .send()
    };
    assert_eq!(with_header(&a.id).await.status, 200);
    assert_a401(&with_header(&parent.id).await);
}

#[tokio::test]
async fn masquerading_is_allowed_only_as_a_descendant_account() {
    let app = TestApp::spawn().await;
    let parent = app.create_account(None).await;
    let a = app.create_account(Some(&parent)).await;
    let sibling = app.create_account(None).await;
    let mut claims = app.claims(&parent, Some(&parent.user_id)).await;
    claims.insert(
        "as".into(),
        json!({"account_id": a.id, "owner_id": a.user_id}),
    );
    let token = app.sign(&claims);
    let resp = app
        .with_token(&token)
        .create_group(&a, json!({"name": "x"}))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let doc = app.read_doc(&a, resp.id()).await.unwrap();
    assert_eq!(doc["pvt_auth_account_id"], a.id.as_str());
    let mut claims = app.claims(&a, Some(&a.user_id)).await;
    claims.insert(
        "as".into(),
        json!({"account_id": sibling.id, "owner_id": sibling.user_id}),
    );
    assert_a401(&list_with(&app, &a, &app.sign(&claims)).await);
}

#[tokio::test]
async fn an_expired_trial_returns_400_account_expired() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    app.amend_account(&a, json!({"pvt_trial_expires": clock::gregorian_now() - 1}))
        .await;
    let resp = list_with(&app, &a, &a.token).await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    assert_eq!(
        resp.json["data"]["account"]["expired"]["message"],
        "account expired"
    );
}

#[tokio::test]
async fn tokens_for_the_account_identity_are_accepted() {
    let (app, a) = setup().await;
    // The account's signature secret is made when its first token is issued (auth-contract
    // §1.6), as Kazoo does.
    assert_eq!(app.login_with_api_key(&a.api_key).await.status, 201);
    let claims = app.claims(&a, None).await;
    let resp = list_with(&app, &a, &app.sign(&claims)).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}

/// #60.
#[tokio::test]
async fn a_reset_key_revokes_old_tokens_and_accepts_new_ones() {
    let app = TestApp::spawn_with(|config| config.key_cache = Duration::ZERO).await;
    let a = app.create_account(None).await;
    // A key of this test's own, so the shared one is never rotated under other tests.
    let kid = random_hex(16);
    let db = DbName::system(DbName::SYSTEM_AUTH);
    let id = DocId::parse(&kid).unwrap();
    let store_key = |pem: &'static str| {
        let (store, id, db) = (app.store.clone(), id.clone(), db.clone());
        async move {
            let doc = json!({"_id": id.as_str(), "pvt_type": "system_key"});
            let rev = store.put_doc(&db, &id, &doc).await.unwrap();
            store
                .put_attachment(
                    &db,
                    &id,
                    "private_key.pem",
                    &rev,
                    "application/x-pem-file",
                    pem.as_bytes().to_vec(),
                )
                .await
                .unwrap()
        }
    };
    let rev = store_key(KEY_PEM).await;
    let claims = app.claims(&a, Some(&a.user_id)).await;
    let old_key = keys::private_key_from_pem(KEY_PEM).unwrap();
    let new_key = keys::private_key_from_pem(OTHER_KEY_PEM).unwrap();
    let old_token = jwt::sign(&claims, &kid, Alg::RS256, &old_key);
    assert_eq!(list_with(&app, &a, &old_token).await.status, 200);
    // Kazoo's reset_private_key deletes the doc; the next use recreates it with a new key.
    app.store.delete_doc(&db, &id, &rev).await.unwrap();
    let resp = eventually(|| list_with(&app, &a, &old_token), |r| r.status == 401).await;
    assert_a401(&resp);
    store_key(OTHER_KEY_PEM).await;
    let new_token = jwt::sign(&claims, &kid, Alg::RS256, &new_key);
    let resp = eventually(|| list_with(&app, &a, &new_token), |r| r.status == 200).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_a401(&list_with(&app, &a, &old_token).await);
}

/// groups-contract §7.3: an account's `token_restrictions` refuse what their rules do not allow.
#[tokio::test]
async fn token_restrictions_deny_with_403_and_their_cause() {
    let (app, a) = setup().await;
    let group = app.add_group(&a, json!({"name": "G"})).await;
    app.write_doc(
        &a,
        "token_restrictions",
        json!({"pvt_type": "token_restrictions",
               "restrictions": {"cb_user_auth": {"admin": {"groups": [{"rules": {"*": ["GET"]}}]}}}}),
    )
    .await;
    let resp = eventually(
        || app.create_group(&a, json!({"name": "x"})),
        |r| r.status == 403,
    )
    .await;
    assert_eq!(resp.status, 403, "{}", resp.text);
    assert_eq!(
        resp.json["data"],
        json!({"cause": "access denied by token restrictions", "message": "forbidden"})
    );
    let resp = app.get_group(&a, &group.id).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}
