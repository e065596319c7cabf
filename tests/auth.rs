//! Token verification and authorisation against key material provisioned in CouchDB the way
//! Kazoo keeps it (auth-contract §7, groups-contract §8 #43–#49, #63).
mod common;

use common::{Account, TestApp, KID};
use kz_groups::auth::jwt::{self, Alg};
use kz_groups::auth::keys;
use kz_groups::domain::clock;
use kz_groups::domain::ids::{DbName, DocId};
use serde_json::{json, Map, Value};

const A401: &str = r#"{"message":"invalid credentials"}"#;

async fn setup() -> (TestApp, Account) {
    let app = TestApp::spawn().await;
    let account = app.create_account(None).await;
    (app, account)
}

async fn get_groups(app: &TestApp, account: &Account, token: Option<&str>) -> common::Response {
    app.call("GET", &TestApp::groups_path(account), token, None)
        .await
}

fn assert_a401(resp: &common::Response) {
    assert_eq!(resp.status, 401, "{}", resp.text);
    assert_eq!(resp.json["message"], "invalid_credentials");
    assert_eq!(
        resp.json["data"],
        serde_json::from_str::<Value>(A401).unwrap()
    );
    assert!(resp.json.get("version").is_none());
}

#[tokio::test]
async fn no_token_empty_token_and_garbage_are_variant_a() {
    let (app, a) = setup().await;
    assert_a401(&get_groups(&app, &a, None).await);
    let resp = app
        .send(
            app.http
                .get(app.url(&TestApp::groups_path(&a)))
                .header("x-auth-token", ""),
        )
        .await;
    assert_a401(&resp);
    let resp = get_groups(&app, &a, Some("garbage")).await;
    assert_a401(&resp);
    assert_eq!(resp.json["auth_token"], "garbage");
    let parts = a.token.split('.').collect::<Vec<_>>();
    let four = format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[2]);
    assert_a401(&get_groups(&app, &a, Some(&four)).await);
}

#[tokio::test]
async fn token_in_the_query_or_the_envelope_is_accepted() {
    let (app, a) = setup().await;
    let path = format!("{}?auth_token={}", TestApp::groups_path(&a), a.token);
    let resp = app.call("GET", &path, None, None).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["auth_token"], a.token.as_str());
    assert!(resp.json["version"].is_string());
    let resp = app
        .call(
            "PUT",
            &TestApp::groups_path(&a),
            None,
            Some(json!({"auth_token": a.token, "data": {"name": "x"}})),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
}

#[tokio::test]
async fn bearer_jwts_are_refused() {
    let (app, a) = setup().await;
    let resp = app
        .send(
            app.http
                .get(app.url(&TestApp::groups_path(&a)))
                .header("authorization", format!("Bearer {}", a.token)),
        )
        .await;
    assert_a401(&resp);
}

#[tokio::test]
async fn unknown_account_is_404_before_authentication() {
    let (app, a) = setup().await;
    let n = "0123456789abcdef0123456789abcdef";
    let resp = app
        .call(
            "GET",
            &format!("/v2/accounts/{n}/groups"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json["message"], "bad_identifier");
}

#[tokio::test]
async fn signature_key_and_header_checks() {
    let (app, a) = setup().await;
    let mut claims = app.claims(&a.id, Some(&a.user_id)).await;
    claims.insert("exp".into(), json!(clock::unix_now() + 600));
    // #9: another key, same kid.
    let other = keys::private_key_from_pem(common::OTHER_KEY_PEM).unwrap();
    assert_a401(&get_groups(&app, &a, Some(&jwt::sign(&claims, KID, Alg::RS256, &other))).await);
    // #10: unknown kid, and nothing gets created in system_auth.
    let unknown_kid = "ffffffffffffffffffffffffffffffff";
    let token = jwt::sign(&claims, unknown_kid, Alg::RS256, app.key());
    assert_a401(&get_groups(&app, &a, Some(&token)).await);
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
    assert_a401(
        &get_groups(
            &app,
            &a,
            Some(&jwt::sign_with_header(
                &header,
                &claims,
                Alg::RS256,
                app.key(),
            )),
        )
        .await,
    );
    // #13, #14: typ absent or not JWT is fine.
    for header in [
        json!({"alg": "RS256", "kid": KID}),
        json!({"alg": "RS256", "typ": "JWS", "kid": KID}),
    ] {
        let token =
            jwt::sign_with_header(header.as_object().unwrap(), &claims, Alg::RS256, app.key());
        assert_eq!(get_groups(&app, &a, Some(&token)).await.status, 200);
    }
    // #15: RS512.
    assert_eq!(
        get_groups(&app, &a, Some(&app.sign_with(&claims, Alg::RS512)))
            .await
            .status,
        200
    );
    // #12: alg none.
    let parts: Vec<&str> = a.token.split('.').collect();
    use base64::Engine;
    let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{KID}"}}"#));
    assert_a401(&get_groups(&app, &a, Some(&format!("{none_header}.{}.", parts[1]))).await);
}

#[tokio::test]
async fn claim_checks() {
    let (app, a) = setup().await;
    let base = app.claims(&a.id, Some(&a.user_id)).await;
    let with = |f: &dyn Fn(&mut Map<String, Value>)| {
        let mut c = base.clone();
        f(&mut c);
        app.sign(&c)
    };
    // #16: foreign issuer.
    assert_a401(
        &get_groups(
            &app,
            &a,
            Some(&with(&|c| {
                c.insert("iss".into(), json!("foo"));
            })),
        )
        .await,
    );
    // #17: no account_id.
    assert_a401(
        &get_groups(
            &app,
            &a,
            Some(&with(&|c| {
                c.remove("account_id");
            })),
        )
        .await,
    );
    // #18: no identity_sig is accepted; #21: no exp never expires.
    assert_eq!(
        get_groups(
            &app,
            &a,
            Some(&with(&|c| {
                c.remove("identity_sig");
            }))
        )
        .await
        .status,
        200
    );
    assert_eq!(get_groups(&app, &a, Some(&with(&|_| {}))).await.status, 200);
    // #19: wrong identity_sig.
    let wrong = with(&|c| {
        c.insert(
            "identity_sig".into(),
            json!("4K58MoGYRKjE2k1a-gIKsGraZIcxDb0ZpwhFd_Qgelk"),
        );
    });
    assert_a401(&get_groups(&app, &a, Some(&wrong)).await);
    // #26: a string exp.
    assert_a401(
        &get_groups(
            &app,
            &a,
            Some(&with(&|c| {
                c.insert("exp".into(), json!("9999999999"));
            })),
        )
        .await,
    );
}

#[tokio::test]
async fn identity_secret_reset_revokes_tokens() {
    let (app, a) = setup().await;
    assert_eq!(get_groups(&app, &a, Some(&a.token)).await.status, 200);
    let mut user = app.raw(&a.id, &a.user_id).await.unwrap();
    user["pvt_signature_secret"] = json!("00000000000000000000000000000000");
    app.put(&a.id, &a.user_id, user).await;
    assert_a401(&get_groups(&app, &a, Some(&a.token)).await);
}

#[tokio::test]
async fn expired_tokens_are_variant_b_even_on_unknown_accounts() {
    let (app, a) = setup().await;
    let mut claims = app.claims(&a.id, Some(&a.user_id)).await;
    claims.insert("exp".into(), json!(clock::unix_now() - 10));
    let expired = app.sign(&claims);
    for path in [
        TestApp::groups_path(&a),
        "/v2/accounts/0123456789abcdef0123456789abcdef/groups".into(),
    ] {
        let resp = app.call("GET", &path, Some(&expired), None).await;
        assert_eq!(resp.status, 401, "{}", resp.text);
        assert_eq!(resp.json["message"], "invalid credentials");
        assert_eq!(resp.json["data"], json!({}));
        assert_eq!(resp.json["auth_token"], expired.as_str());
    }
    // #25: expired and badly signed: the signature is checked first.
    let other = keys::private_key_from_pem(common::OTHER_KEY_PEM).unwrap();
    let bad = jwt::sign(&claims, KID, Alg::RS256, &other);
    assert_a401(&get_groups(&app, &a, Some(&bad)).await);
}

#[tokio::test]
async fn authorisation_follows_the_account_tree() {
    let app = TestApp::spawn().await;
    let reseller = app.create_account(None).await;
    let parent = app.create_account(Some(&reseller)).await;
    let a = app.create_account(Some(&parent)).await;
    let sibling = app.create_account(Some(&parent)).await;
    let path = TestApp::groups_path(&a);
    assert_eq!(
        app.call("GET", &path, Some(&a.token), None).await.status,
        200
    );
    assert_eq!(
        app.call("GET", &path, Some(&parent.token), None)
            .await
            .status,
        200
    );
    assert_eq!(
        app.call("GET", &path, Some(&reseller.token), None)
            .await
            .status,
        200
    );
    let resp = app
        .call("GET", &TestApp::groups_path(&parent), Some(&a.token), None)
        .await;
    assert_eq!(resp.status, 403);
    assert_eq!(resp.json["error"], "403");
    assert_eq!(resp.json["message"], "forbidden");
    assert_eq!(resp.json["data"], json!({"message": "forbidden"}));
    assert_eq!(
        app.call("GET", &path, Some(&sibling.token), None)
            .await
            .status,
        403
    );
    // A parent's write records who wrote.
    let resp = app
        .call(
            "PUT",
            &path,
            Some(&parent.token),
            Some(json!({"data": {"name": "x"}})),
        )
        .await;
    assert_eq!(resp.status, 201);
    let doc = app
        .raw(&a.id, resp.json["data"]["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(doc["pvt_auth_account_id"], parent.id.as_str());
}

#[tokio::test]
async fn superduper_admins_may_act_anywhere() {
    let app = TestApp::spawn().await;
    let master = app
        .create_account_with(None, json!({"pvt_superduper_admin": true}))
        .await;
    let other = app.create_account(None).await;
    let resp = app
        .call(
            "GET",
            &TestApp::groups_path(&other),
            Some(&master.token),
            None,
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(
        app.call("GET", "/v2/groups", Some(&other.token), None)
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn account_header_must_match_the_token() {
    let app = TestApp::spawn().await;
    let parent = app.create_account(None).await;
    let a = app.create_account(Some(&parent)).await;
    let path = TestApp::groups_path(&a);
    let with_header = |v: &str| {
        app.http
            .get(app.url(&path))
            .header("x-auth-token", &a.token)
            .header("x-auth-account-id", v.to_owned())
    };
    assert_eq!(app.send(with_header(&a.id)).await.status, 200);
    assert_a401(&app.send(with_header(&parent.id)).await);
}

#[tokio::test]
async fn masquerading_needs_a_descendant() {
    let app = TestApp::spawn().await;
    let parent = app.create_account(None).await;
    let a = app.create_account(Some(&parent)).await;
    let sibling = app.create_account(None).await;
    let mut claims = app.claims(&parent.id, Some(&parent.user_id)).await;
    claims.insert(
        "as".into(),
        json!({"account_id": a.id, "owner_id": a.user_id}),
    );
    let token = app.sign(&claims);
    let resp = app
        .call(
            "PUT",
            &TestApp::groups_path(&a),
            Some(&token),
            Some(json!({"data": {"name": "x"}})),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let doc = app
        .raw(&a.id, resp.json["data"]["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(doc["pvt_auth_account_id"], a.id.as_str());
    let mut claims = app.claims(&a.id, Some(&a.user_id)).await;
    claims.insert(
        "as".into(),
        json!({"account_id": sibling.id, "owner_id": sibling.user_id}),
    );
    assert_a401(&get_groups(&app, &a, Some(&app.sign(&claims))).await);
}

#[tokio::test]
async fn expired_trial_is_400_account_expired() {
    let app = TestApp::spawn().await;
    let a = app
        .create_account_with(
            None,
            json!({"pvt_trial_expires": clock::gregorian_now() - 1}),
        )
        .await;
    let resp = get_groups(&app, &a, Some(&a.token)).await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    assert_eq!(
        resp.json["data"]["account"]["expired"]["message"],
        "account expired"
    );
}

#[tokio::test]
async fn api_key_style_tokens_sign_the_account_identity() {
    let (app, a) = setup().await;
    let claims = app.claims(&a.id, None).await;
    let resp = get_groups(&app, &a, Some(&app.sign(&claims))).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}

#[tokio::test]
async fn a_reset_key_revokes_old_tokens_and_accepts_new_ones() {
    let (backend, data) = common::test_backend();
    let mut config = common::config_for(backend);
    config.key_cache = std::time::Duration::ZERO;
    let app = TestApp::spawn_configured(config, data).await;
    let a = app.create_account(None).await;
    // A key of this test's own, so the shared one is never rotated under other tests.
    let kid = kz_groups::domain::ids::random_hex(16);
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
    let rev = store_key(common::KEY_PEM).await;
    let claims = app.claims(&a.id, Some(&a.user_id)).await;
    let old_key = keys::private_key_from_pem(common::KEY_PEM).unwrap();
    let new_key = keys::private_key_from_pem(common::OTHER_KEY_PEM).unwrap();
    let old_token = jwt::sign(&claims, &kid, Alg::RS256, &old_key);
    assert_eq!(get_groups(&app, &a, Some(&old_token)).await.status, 200);
    // Kazoo's reset_private_key deletes the doc; the next use recreates it with a new key.
    app.store.delete_doc(&db, &id, &rev).await.unwrap();
    assert_a401(&get_groups(&app, &a, Some(&old_token)).await);
    store_key(common::OTHER_KEY_PEM).await;
    assert_a401(&get_groups(&app, &a, Some(&old_token)).await);
    let new_token = jwt::sign(&claims, &kid, Alg::RS256, &new_key);
    assert_eq!(get_groups(&app, &a, Some(&new_token)).await.status, 200);
}
