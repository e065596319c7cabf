//! The Groups API against a real CouchDB-compatible server: groups-contract §8 cases, numbered
//! in the test names where one case is covered.
mod common;

use common::{Account, TestApp};
use serde_json::{json, Value};

async fn setup() -> (TestApp, Account) {
    let app = TestApp::spawn().await;
    let account = app.create_account(None).await;
    (app, account)
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn assert_envelope_tail(body: &Value) {
    assert!(
        body["status"] == "success" || body["status"] == "error",
        "{body}"
    );
    let ts = body["timestamp"].as_str().expect("timestamp");
    assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
    assert!(body["tokens"]["consumed"].is_u64() && body["tokens"]["remaining"].is_u64());
    assert_eq!(body["node"].as_str().map(str::len), Some(22));
    if body["status"] == "error" {
        assert!(body["error"].is_string(), "error must be a string: {body}");
    }
}

#[tokio::test]
async fn c01_empty_listing_has_page_size_0_and_no_revision_or_etag() {
    let (app, a) = setup().await;
    let resp = app
        .call("GET", &TestApp::groups_path(&a), Some(&a.token), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["data"], json!([]));
    assert_eq!(resp.json["page_size"], 0);
    for key in ["revision", "next_start_key", "start_key"] {
        assert!(resp.json.get(key).is_none(), "{key} in {}", resp.text);
    }
    assert!(resp.header("etag").is_none());
    assert!(resp.json["version"].is_string());
    assert_envelope_tail(&resp.json);
}

#[tokio::test]
async fn c02_to_c04_create_returns_201_location_and_stores_every_pvt_field() {
    let (app, a) = setup().await;
    let resp = app
        .call(
            "PUT",
            &TestApp::groups_path(&a),
            Some(&a.token),
            Some(json!({"data": {"name": "G1"}})),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let id = resp.json["data"]["id"].as_str().unwrap().to_owned();
    assert!(is_hex32(&id));
    assert_eq!(
        resp.header("location").unwrap(),
        format!("/v2/accounts/{}/groups/{id}", a.id)
    );
    assert_eq!(
        resp.json["data"],
        json!({"name": "G1", "endpoints": {}, "music_on_hold": {}, "id": id})
    );
    assert!(resp.json["revision"].as_str().unwrap().starts_with("1-"));
    assert!(resp.header("etag").is_none());
    // #4: nothing private leaks.
    for key in resp.json["data"].as_object().unwrap().keys() {
        assert!(!key.starts_with("pvt_") && !key.starts_with('_'), "{key}");
    }
    // #3: the stored document.
    let doc = app.raw(&a.id, &id).await.unwrap();
    assert_eq!(doc["pvt_type"], "group");
    assert_eq!(doc["pvt_vsn"], "1");
    assert_eq!(doc["pvt_account_id"], a.id.as_str());
    assert_eq!(
        doc["pvt_account_db"],
        format!(
            "account%2F{}%2F{}%2F{}",
            &a.id[..2],
            &a.id[2..4],
            &a.id[4..]
        )
    );
    let created = doc["pvt_created"].as_i64().unwrap();
    let modified = doc["pvt_modified"].as_i64().unwrap();
    assert!(created > 63_000_000_000 && (modified - created).abs() <= 1);
    assert_eq!(doc["pvt_alphanum_name"], "g1");
    assert_eq!(doc["pvt_is_authenticated"], true);
    assert_eq!(doc["pvt_auth_account_id"], a.id.as_str());
    assert_eq!(doc["pvt_auth_user_id"], a.user_id.as_str());
    assert_eq!(doc["pvt_request_id"], resp.json["request_id"]);
    assert!(doc.get("id").is_none());
}

#[tokio::test]
async fn c05_c06_create_without_name_is_400_name_required() {
    let (app, a) = setup().await;
    let want = json!({"name": {"required": {"message": "Field is required but missing", "value": "name"}}});
    let resp = app
        .call(
            "PUT",
            &TestApp::groups_path(&a),
            Some(&a.token),
            Some(json!({"data": {}})),
        )
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json["error"], "400");
    assert_eq!(resp.json["message"], "validation error");
    assert_eq!(resp.json["data"], want);
    assert_envelope_tail(&resp.json);
    let resp = app
        .call("PUT", &TestApp::groups_path(&a), Some(&a.token), None)
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json["data"], want);
}

#[tokio::test]
async fn c07_to_c13_schema_errors_render_like_kazoo() {
    let (app, a) = setup().await;
    let path = TestApp::groups_path(&a);
    let long = "a".repeat(129);
    let resp = app
        .call(
            "PUT",
            &path,
            Some(&a.token),
            Some(json!({"data": {"name": long}})),
        )
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.json["data"]["name"]["maxLength"],
        json!({"message": "String must not be more than 128 characters", "target": 128, "cause": long, "value": long})
    );
    let resp = app
        .call(
            "PUT",
            &path,
            Some(&a.token),
            Some(json!({"data": {"name": "a".repeat(128)}})),
        )
        .await;
    assert_eq!(resp.status, 201);
    let resp = app
        .call(
            "PUT",
            &path,
            Some(&a.token),
            Some(json!({"data": {"name": ""}})),
        )
        .await;
    assert_eq!(
        resp.json["data"]["name"]["minLength"]["message"],
        "String must be at least 1 characters"
    );
    assert_eq!(resp.json["data"]["name"]["minLength"]["target"], 1);
    let resp = app
        .call(
            "PUT",
            &path,
            Some(&a.token),
            Some(json!({"data": {"name": 5}})),
        )
        .await;
    assert_eq!(
        resp.json["data"]["name"]["type"],
        json!({"message": "Value did not match type(s): string", "target": "string", "value": 5})
    );
    let resp = app
        .call(
            "PUT",
            &path,
            Some(&a.token),
            Some(json!({"data": {"name": "x", "flags": ["a", 1]}})),
        )
        .await;
    assert_eq!(resp.json["data"]["flags.1"]["type"]["target"], "string");
    let resp = app
        .call(
            "PUT",
            &path,
            Some(&a.token),
            Some(json!({"data": {"name": "x", "endpoints": []}})),
        )
        .await;
    assert_eq!(resp.json["data"]["endpoints"]["type"]["target"], "object");
    let resp = app
        .call(
            "PUT",
            &path,
            Some(&a.token),
            Some(json!({"data": {"name": "x", "music_on_hold": {"media_id": "m".repeat(129)}}})),
        )
        .await;
    assert!(
        resp.json["data"]["music_on_hold.media_id"]["maxLength"].is_object(),
        "{}",
        resp.text
    );
}

#[tokio::test]
async fn c14_to_c17_envelope_and_json_errors() {
    let (app, a) = setup().await;
    let path = TestApp::groups_path(&a);
    let resp = app
        .call("PUT", &path, Some(&a.token), Some(json!({"name": "x"})))
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.json["data"]["data"]["required"],
        json!({"message": "Field is required but missing", "value": {"name": "x"}})
    );
    let resp = app
        .call("PUT", &path, Some(&a.token), Some(json!({"data": "x"})))
        .await;
    assert_eq!(
        resp.json["data"]["data"]["type"]["message"],
        "Value did not match type(s): object, array"
    );
    // #16: broken JSON without a token is 400, not 401, and carries no auth_token or version.
    let resp = app
        .send(
            app.http
                .put(app.url(&path))
                .header("content-type", "application/json")
                .body("{\"data\":"),
        )
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json["data"]["json"]["invalid"]["target"], "body");
    assert_eq!(resp.json["message"], "validation error");
    assert!(resp.json.get("auth_token").is_none() && resp.json.get("version").is_none());
    let resp = app
        .send(
            app.http
                .put(app.url(&path))
                .header("x-auth-token", &a.token)
                .body("[1,2]"),
        )
        .await;
    assert_eq!(
        resp.json["data"]["json"]["invalid"]["message"],
        "All JSON must be valid"
    );
}

#[tokio::test]
async fn c18_c19_unknown_fields_are_kept_and_private_fields_dropped() {
    let (app, a) = setup().await;
    let data = app
        .create_group(
            &a,
            json!({"name": "x", "custom": {"a": 1}, "ui_metadata": {"ui": "kazoo-ui"}, "pvt_type": "user", "_rev": "9-z", "pvt_deleted": true}),
        )
        .await;
    assert_eq!(data["custom"], json!({"a": 1}));
    assert_eq!(data["ui_metadata"], json!({"ui": "kazoo-ui"}));
    let id = data["id"].as_str().unwrap();
    let got = app
        .call(
            "GET",
            &format!("{}/{id}", TestApp::groups_path(&a)),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(got.json["data"]["custom"], json!({"a": 1}));
    let doc = app.raw(&a.id, id).await.unwrap();
    assert_eq!(doc["pvt_type"], "group");
    assert!(doc.get("pvt_deleted").is_none());
    assert!(doc["_rev"].as_str().unwrap().starts_with("1-"));
}

#[tokio::test]
async fn c20_client_chosen_id_and_409_on_reuse() {
    let (app, a) = setup().await;
    let path = TestApp::groups_path(&a);
    let body = json!({"data": {"name": "x", "id": "my-group"}});
    let resp = app
        .call("PUT", &path, Some(&a.token), Some(body.clone()))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert_eq!(resp.json["data"]["id"], "my-group");
    assert!(resp.header("location").unwrap().ends_with("/my-group"));
    let resp = app.call("PUT", &path, Some(&a.token), Some(body)).await;
    assert_eq!(resp.status, 409);
    assert_eq!(resp.json["message"], "datastore_conflict");
    assert_eq!(
        resp.json["data"],
        json!({"message": "conflicting documents"})
    );
}

#[tokio::test]
async fn client_chosen_ids_cannot_name_design_docs_or_other_resources() {
    let (app, a) = setup().await;
    let path = TestApp::groups_path(&a);
    for id in ["_design/groups", "_all_docs", "a/b", ".."] {
        let resp = app
            .call(
                "PUT",
                &path,
                Some(&a.token),
                Some(json!({"data": {"name": "x", "id": id}})),
            )
            .await;
        assert_eq!(resp.status, 400, "{id}: {}", resp.text);
        assert!(resp.json["data"]["id"].is_object());
    }
    // The design document is untouched: the listing still works.
    let resp = app.call("GET", &path, Some(&a.token), None).await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn c21_post_tunnels_put_through_the_envelope_or_the_query() {
    let (app, a) = setup().await;
    let path = TestApp::groups_path(&a);
    let resp = app
        .call(
            "POST",
            &path,
            Some(&a.token),
            Some(json!({"data": {"name": "x"}, "verb": "PUT"})),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert!(resp.header("location").is_some());
    let resp = app
        .call(
            "POST",
            &format!("{path}?verb=PUT"),
            Some(&a.token),
            Some(json!({"data": {"name": "y"}})),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
}

#[tokio::test]
async fn c22_c23_fetch_with_etag_expires_and_304() {
    let (app, a) = setup().await;
    let created = app.create_group(&a, json!({"name": "G1"})).await;
    let path = format!(
        "{}/{}",
        TestApp::groups_path(&a),
        created["id"].as_str().unwrap()
    );
    let resp = app.call("GET", &path, Some(&a.token), None).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json["data"], created);
    let rev = resp.json["revision"].as_str().unwrap().to_owned();
    assert_eq!(resp.header("etag").unwrap(), format!("\"{rev}\""));
    assert_eq!(
        resp.header("expires").unwrap(),
        "Fri, 01 Jan 1999 00:00:00 GMT"
    );
    let resp = app
        .send(
            app.http
                .get(app.url(&path))
                .header("x-auth-token", &a.token)
                .header("if-none-match", format!("\"{rev}\"")),
        )
        .await;
    assert_eq!(resp.status, 304);
    assert!(resp.text.is_empty());
}

#[tokio::test]
async fn c24_c25_unknown_group_or_a_non_group_doc_is_bad_identifier() {
    let (app, a) = setup().await;
    let unknown = "0123456789abcdef0123456789abcdef";
    let resp = app
        .call(
            "GET",
            &format!("{}/{unknown}", TestApp::groups_path(&a)),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(resp.status, 404);
    assert_eq!(
        resp.json["data"],
        json!({"cause": unknown, "message": "bad identifier"})
    );
    assert_eq!(resp.json["message"], "bad_identifier");
    let resp = app
        .call(
            "GET",
            &format!("{}/{}", TestApp::groups_path(&a), a.user_id),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json["data"]["cause"], a.user_id.as_str());
}

#[tokio::test]
async fn c26_c27_post_replaces_the_public_part_and_keeps_the_url_id() {
    let (app, a) = setup().await;
    let created = app
        .create_group(&a, json!({"name": "G1", "custom": 1, "flags": ["f"]}))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let before = app.raw(&a.id, &id).await.unwrap();
    let path = format!("{}/{id}", TestApp::groups_path(&a));
    let resp = app
        .call(
            "POST",
            &path,
            Some(&a.token),
            Some(json!({"data": {"name": "G1b", "id": "other"}})),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(
        resp.json["data"],
        json!({"name": "G1b", "endpoints": {}, "music_on_hold": {}, "id": id})
    );
    assert!(resp.json["revision"].as_str().unwrap().starts_with("2-"));
    let after = app.raw(&a.id, &id).await.unwrap();
    assert_eq!(after["pvt_created"], before["pvt_created"]);
    assert_eq!(after["pvt_alphanum_name"], "g1b");
    assert!(app.raw(&a.id, "other").await.is_none());
}

#[tokio::test]
async fn c28_post_to_an_unknown_group_validates_first() {
    let (app, a) = setup().await;
    let path = format!(
        "{}/0123456789abcdef0123456789abcdef",
        TestApp::groups_path(&a)
    );
    let resp = app
        .call("POST", &path, Some(&a.token), Some(json!({"data": {}})))
        .await;
    assert_eq!(resp.status, 400);
    let resp = app
        .call(
            "POST",
            &path,
            Some(&a.token),
            Some(json!({"data": {"name": "x"}})),
        )
        .await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json["message"], "bad_identifier");
}

#[tokio::test]
async fn c29_stale_if_match_is_412_and_changes_nothing() {
    let (app, a) = setup().await;
    let created = app.create_group(&a, json!({"name": "G1"})).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("{}/{id}", TestApp::groups_path(&a));
    let resp = app
        .send(
            app.http
                .post(app.url(&path))
                .header("x-auth-token", &a.token)
                .header("if-match", "\"1-stale\"")
                .body(json!({"data": {"name": "changed"}}).to_string()),
        )
        .await;
    assert_eq!(resp.status, 412);
    assert!(resp.text.is_empty());
    assert_eq!(app.raw(&a.id, id).await.unwrap()["name"], "G1");
}

#[tokio::test]
async fn c30_to_c34_patch_deep_merges_and_null_removes() {
    let (app, a) = setup().await;
    let created = app
        .create_group(
            &a,
            json!({"name": "G1", "endpoints": {"u1": {"type": "user"}}}),
        )
        .await;
    let path = format!(
        "{}/{}",
        TestApp::groups_path(&a),
        created["id"].as_str().unwrap()
    );
    let patch = |body: Value| {
        app.call(
            "PATCH",
            &path,
            Some(&a.token),
            Some(json!({ "data": body })),
        )
    };
    let resp = patch(json!({"flags": ["f"]})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["data"]["name"], "G1");
    assert_eq!(resp.json["data"]["flags"], json!(["f"]));
    let resp = patch(json!({"endpoints": {"u2": {"type": "user"}}})).await;
    assert_eq!(
        resp.json["data"]["endpoints"],
        json!({"u1": {"type": "user"}, "u2": {"type": "user"}})
    );
    let resp = patch(json!({"endpoints": {"u1": null}, "flags": null})).await;
    assert_eq!(
        resp.json["data"]["endpoints"],
        json!({"u2": {"type": "user"}})
    );
    assert!(resp.json["data"].get("flags").is_none());
    let resp = patch(json!({"endpoints": {}})).await;
    assert_eq!(resp.json["data"]["endpoints"], json!({}));
    let resp = patch(json!({"name": null})).await;
    assert_eq!(resp.status, 400);
    assert!(resp.json["data"]["name"]["required"].is_object());
}

#[tokio::test]
async fn c35_patch_of_an_unknown_group() {
    let (app, a) = setup().await;
    let path = format!(
        "{}/0123456789abcdef0123456789abcdef",
        TestApp::groups_path(&a)
    );
    let resp = app
        .call(
            "PATCH",
            &path,
            Some(&a.token),
            Some(json!({"data": {"flags": []}})),
        )
        .await;
    assert_eq!(resp.status, 400);
    let resp = app
        .call(
            "PATCH",
            &path,
            Some(&a.token),
            Some(json!({"data": {"name": "x"}})),
        )
        .await;
    assert_eq!(resp.status, 404);
}

#[tokio::test]
async fn c36_c37_soft_delete_hides_the_group_and_blocks_its_id() {
    let (app, a) = setup().await;
    let created = app.create_group(&a, json!({"name": "G1"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("{}/{id}", TestApp::groups_path(&a));
    let rev = app.raw(&a.id, &id).await.unwrap()["_rev"].clone();
    let resp = app.call("DELETE", &path, Some(&a.token), None).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["data"]["_read_only"], json!({"deleted": true}));
    assert_eq!(resp.json["data"]["id"], id.as_str());
    assert_eq!(resp.json["revision"], rev);
    let doc = app.raw(&a.id, &id).await.unwrap();
    assert_eq!(doc["pvt_deleted"], true);
    assert_ne!(doc["_rev"], rev);
    assert_eq!(
        app.call("GET", &path, Some(&a.token), None).await.status,
        404
    );
    assert_eq!(
        app.call("DELETE", &path, Some(&a.token), None).await.status,
        404
    );
    let list = app
        .call("GET", &TestApp::groups_path(&a), Some(&a.token), None)
        .await;
    assert_eq!(list.json["data"], json!([]));
    let resp = app
        .call(
            "PUT",
            &TestApp::groups_path(&a),
            Some(&a.token),
            Some(json!({"data": {"name": "x", "id": id}})),
        )
        .await;
    assert_eq!(resp.status, 409);
}

#[tokio::test]
async fn c38_should_soft_delete_other_than_true_hard_deletes() {
    let (app, a) = setup().await;
    for flag in ["false", "0"] {
        let created = app.create_group(&a, json!({"name": "G"})).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let path = format!(
            "{}/{id}?should_soft_delete={flag}",
            TestApp::groups_path(&a)
        );
        let resp = app.call("DELETE", &path, Some(&a.token), None).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json["data"]["_read_only"], json!({"deleted": true}));
        assert!(app.raw(&a.id, &id).await.is_none(), "{flag}");
    }
}

#[tokio::test]
async fn c39_c40_methods_not_allowed_are_405_without_allow() {
    let (app, a) = setup().await;
    let path = TestApp::groups_path(&a);
    let resp = app
        .call(
            "POST",
            &path,
            Some(&a.token),
            Some(json!({"data": {"name": "x"}})),
        )
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
    for (method, p) in [
        ("PUT", format!("{path}/0123456789abcdef0123456789abcdef")),
        ("DELETE", path.clone()),
        ("PATCH", path.clone()),
        ("HEAD", path.clone()),
    ] {
        let resp = app.call(method, &p, Some(&a.token), None).await;
        assert_eq!(resp.status, 405, "{method} {p}");
    }
}

#[tokio::test]
async fn c41_options_is_a_preflight_only_with_cors_headers() {
    let (app, a) = setup().await;
    let path = TestApp::groups_path(&a);
    let resp = app
        .send(app.http.request(reqwest::Method::OPTIONS, app.url(&path)))
        .await;
    assert_eq!(resp.status, 405);
    let resp = app
        .send(
            app.http
                .request(reqwest::Method::OPTIONS, app.url(&path))
                .header("origin", "https://x")
                .header("access-control-request-method", "PUT"),
        )
        .await;
    assert_eq!(resp.status, 200);
    assert!(resp.text.is_empty());
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    assert_eq!(resp.header("access-control-max-age"), Some("86400"));
}

#[tokio::test]
async fn c42_deeper_paths_are_not_found() {
    let (app, a) = setup().await;
    let resp = app
        .call(
            "GET",
            &format!("{}/g/extra", TestApp::groups_path(&a)),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json["message"], "not_found");
    assert_eq!(resp.json["data"], json!({"message": "not found"}));
}

#[tokio::test]
async fn c46_c47_unknown_and_malformed_accounts() {
    let app = TestApp::spawn().await;
    let n = "0123456789abcdef0123456789abcdef";
    let resp = app
        .call("GET", &format!("/v2/accounts/{n}/groups"), None, None)
        .await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json["message"], "bad_identifier");
    assert_eq!(
        resp.json["data"],
        json!({"cause": n, "message": "bad identifier"})
    );
    let resp = app.call("GET", "/v2/accounts/abc/groups", None, None).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json["message"], "bad identifier");
    assert_eq!(
        resp.json["data"],
        json!({"message": "invalid account_id 'abc'"})
    );
}

#[tokio::test]
async fn c50_c51_paging_with_kazoo_keys_and_raw_keys() {
    let (app, a) = setup().await;
    let mut ids = Vec::new();
    for name in ["G1", "G2", "G3"] {
        ids.push(
            app.create_group(&a, json!({ "name": name })).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids.sort();
    let path = TestApp::groups_path(&a);
    let first = app
        .call("GET", &format!("{path}?page_size=2"), Some(&a.token), None)
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.json["data"].as_array().unwrap().len(), 2);
    assert_eq!(first.json["page_size"], 2);
    assert!(first.json.get("start_key").is_none());
    let next = first.json["next_start_key"].as_str().unwrap().to_owned();
    assert!(
        next.starts_with("g20AAAAg"),
        "ETF binary of a 32-char id: {next}"
    );
    assert!(first.header("etag").is_some());
    assert_eq!(
        first.header("etag").unwrap(),
        format!("\"{}\"", first.json["revision"].as_str().unwrap())
    );
    let second = app
        .call(
            "GET",
            &format!("{path}?page_size=2&start_key={next}"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(second.json["data"].as_array().unwrap().len(), 1);
    assert_eq!(second.json["page_size"], 1);
    assert_eq!(second.json["start_key"], next.as_str());
    assert!(second.json.get("next_start_key").is_none());
    let listed: Vec<&str> = first.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second.json["data"].as_array().unwrap())
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids);
    // #51: a raw id as start key.
    let raw = app
        .call(
            "GET",
            &format!("{path}?start_key={}", ids[1]),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(raw.json["data"][0]["id"], ids[1].as_str());
    assert!(raw.json["start_key"]
        .as_str()
        .unwrap()
        .starts_with("g20AAAAg"));
}

#[tokio::test]
async fn c52_bad_page_sizes_are_404_faulty_request() {
    let (app, a) = setup().await;
    let path = TestApp::groups_path(&a);
    let resp = app
        .call("GET", &format!("{path}?page_size=0"), Some(&a.token), None)
        .await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json["message"], "faulty_request");
    assert_eq!(
        resp.json["data"],
        json!({"message": "page size must be at least 1"})
    );
    let resp = app
        .call(
            "GET",
            &format!("{path}?page_size=abc"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(resp.json["data"], json!({"message": "invalid page size"}));
}

#[tokio::test]
async fn c53_c54_unpaginated_and_descending_listings() {
    let (app, a) = setup().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            app.create_group(&a, json!({ "name": format!("G{i}") }))
                .await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids.sort();
    let path = TestApp::groups_path(&a);
    let all = app
        .call(
            "GET",
            &format!("{path}?paginate=false"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(all.status, 200, "{}", all.text);
    let got: Vec<&str> = all.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids);
    for key in ["page_size", "start_key", "next_start_key"] {
        assert!(all.json.get(key).is_none(), "{key}");
    }
    assert_envelope_tail(&all.json);
    let desc = app
        .call(
            "GET",
            &format!("{path}?descending=true"),
            Some(&a.token),
            None,
        )
        .await;
    let mut reversed = ids.clone();
    reversed.reverse();
    let got: Vec<&str> = desc.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, reversed);
}

#[tokio::test]
async fn c55_listing_items_are_view_values() {
    let (app, a) = setup().await;
    let created = app
        .create_group(
            &a,
            json!({"name": "L", "endpoints": {"u1": {"type": "user"}, "d1": {"type": "device"}}, "music_on_hold": {"media_id": "m1"}}),
        )
        .await;
    let list = app
        .call("GET", &TestApp::groups_path(&a), Some(&a.token), None)
        .await;
    assert_eq!(
        list.json["data"],
        json!([{"id": created["id"], "name": "L", "features": ["music_on_hold"], "endpoints": 2, "flags": []}])
    );
}

#[tokio::test]
async fn c56_c57_filters() {
    let (app, a) = setup().await;
    app.create_group(&a, json!({"name": "G1", "flags": ["f"]}))
        .await;
    let g2 = app
        .create_group(&a, json!({"name": "G2", "custom": 1}))
        .await;
    let path = TestApp::groups_path(&a);
    let names = |resp: &common::Response| -> Vec<String> {
        let mut v: Vec<String> = resp.json["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    let get = |q: &str| app.call("GET", format!("{path}?{q}"), Some(&a.token), None);
    assert_eq!(names(&get("filter_name=G1").await), ["G1"]);
    assert_eq!(names(&get("filter_not_name=G1").await), ["G2"]);
    assert_eq!(names(&get("has_key=custom").await), ["G2"]);
    assert_eq!(names(&get("key_missing=flags").await), ["G2"]);
    assert_eq!(names(&get("filter_pvt_type=group").await), ["G1", "G2"]);
    assert_eq!(names(&get("missing_value=flags").await), ["G1", "G2"]);
    let created = app.raw(&a.id, g2["id"].as_str().unwrap()).await.unwrap()["pvt_created"].clone();
    assert!(names(&get(&format!("created_from={created}")).await).contains(&"G2".to_owned()));
    assert_eq!(get("created_from=abc").await.json["data"], json!([]));
}

#[tokio::test]
async fn c58_c59_user_groups_lists_only_user_endpoints() {
    let (app, a) = setup().await;
    let u = a.user_id.clone();
    app.create_group(
        &a,
        json!({"name": "Member", "endpoints": {u.clone(): {"type": "user"}}}),
    )
    .await;
    app.create_group(
        &a,
        json!({"name": "AsDevice", "endpoints": {u.clone(): {"type": "device"}}}),
    )
    .await;
    app.create_group(&a, json!({"name": "Other"})).await;
    let resp = app
        .call(
            "GET",
            &format!("/v2/accounts/{}/users/{u}/groups", a.id),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let names: Vec<&str> = resp.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Member"]);
    let unknown = "0123456789abcdef0123456789abcdef";
    let resp = app
        .call(
            "GET",
            &format!("/v2/accounts/{}/users/{unknown}/groups", a.id),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json["data"]["cause"], unknown);
}

#[tokio::test]
async fn user_groups_paging_really_advances() {
    let (app, a) = setup().await;
    let u = a.user_id.clone();
    let mut ids = Vec::new();
    for i in 0..5 {
        let g = app
            .create_group(
                &a,
                json!({"name": format!("M{i}"), "endpoints": {u.clone(): {"type": "user"}}}),
            )
            .await;
        ids.push(g["id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    let path = format!("/v2/accounts/{}/users/{u}/groups", a.id);
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..5 {
        let q = match &next {
            Some(k) => format!("{path}?page_size=2&start_key={k}"),
            None => format!("{path}?page_size=2"),
        };
        let resp = app.call("GET", &q, Some(&a.token), None).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        seen.extend(
            resp.json["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["id"].as_str().unwrap().to_owned()),
        );
        next = resp.json["next_start_key"].as_str().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn user_route_put_creates_an_ordinary_group_with_user_location() {
    let (app, a) = setup().await;
    let path = format!("/v2/accounts/{}/users/{}/groups", a.id, a.user_id);
    let resp = app
        .call(
            "PUT",
            &path,
            Some(&a.token),
            Some(json!({"data": {"name": "x"}})),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let id = resp.json["data"]["id"].as_str().unwrap();
    assert_eq!(resp.header("location").unwrap(), format!("{path}/{id}"));
    assert_eq!(resp.json["data"]["endpoints"], json!({}));
}

#[tokio::test]
async fn c60_request_id_is_echoed_or_generated() {
    let (app, a) = setup().await;
    let path = TestApp::groups_path(&a);
    let resp = app
        .send(
            app.http
                .get(app.url(&path))
                .header("x-auth-token", &a.token)
                .header("x-request-id", "test-123"),
        )
        .await;
    assert_eq!(resp.header("x-request-id"), Some("test-123"));
    assert_eq!(resp.json["request_id"], "test-123");
    let resp = app.call("GET", &path, Some(&a.token), None).await;
    let id = resp.json["request_id"].as_str().unwrap();
    assert!(is_hex32(id));
    assert_eq!(resp.header("x-request-id"), Some(id));
}

#[tokio::test]
async fn c62_v1_is_gone() {
    let (app, a) = setup().await;
    let resp = app
        .call(
            "GET",
            &format!("/v1/accounts/{}/groups", a.id),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(resp.status, 410);
    assert_eq!(resp.json["message"], "gone");
    assert_eq!(
        resp.json["data"]["message"],
        "API version 1 is not supported. Please upgrade your code to use version 2."
    );
}

#[tokio::test]
async fn c64_curl_form_content_type_with_json_body_creates() {
    let (app, a) = setup().await;
    let resp = app
        .send(
            app.http
                .put(app.url(&TestApp::groups_path(&a)))
                .header("x-auth-token", &a.token)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(r#"{"data":{"name":"x"}}"#),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
}

#[tokio::test]
async fn real_client_habits_are_accepted() {
    let (app, a) = setup().await;
    let created = app.create_group(&a, json!({"name": "G"})).await;
    let id = created["id"].as_str().unwrap();
    let path = TestApp::groups_path(&a);
    // Cache-busting parameter and trailing slash on a GET with a JSON content type.
    let resp = app
        .call(
            "GET",
            &format!("{path}/?_=1700000000000"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    // A {"data":{...}} body on DELETE.
    let resp = app
        .call(
            "DELETE",
            &format!("{path}/{id}"),
            Some(&a.token),
            Some(json!({"data": {}})),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}

#[tokio::test]
async fn hostile_ids_in_the_url_are_404_and_reach_nothing_else() {
    let (app, a) = setup().await;
    let path = TestApp::groups_path(&a);
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
            let resp = app
                .call(
                    method,
                    &format!("{path}/{id}"),
                    Some(&a.token),
                    Some(json!({"data": {"name": "x"}})),
                )
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
        let resp = app
            .call(
                "GET",
                &format!("/v2/accounts/{account}/groups"),
                Some(&a.token),
                None,
            )
            .await;
        assert_eq!(resp.status, 404, "{account}: {}", resp.text);
    }
    // The design document survived.
    let resp = app.call("GET", &path, Some(&a.token), None).await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn concurrent_updates_never_lose_a_write() {
    let (app, a) = setup().await;
    let created = app.create_group(&a, json!({"name": "G"})).await;
    let path = format!(
        "{}/{}",
        TestApp::groups_path(&a),
        created["id"].as_str().unwrap()
    );
    let futures: Vec<_> = (0..8)
        .map(|i| {
            app.call(
                "PATCH",
                &path,
                Some(&a.token),
                Some(json!({"data": {"flags": [format!("f{i}")]}})),
            )
        })
        .collect();
    let results = futures::future::join_all(futures).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    let conflicts = results.iter().filter(|r| r.status == 409).count();
    assert_eq!(
        ok + conflicts,
        8,
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(ok >= 1);
    // Every acknowledged write produced its own revision.
    let doc = app
        .raw(&a.id, created["id"].as_str().unwrap())
        .await
        .unwrap();
    let generation: usize = doc["_rev"]
        .as_str()
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(generation, 1 + ok);
}

#[tokio::test]
async fn token_restrictions_deny_with_their_cause() {
    let (app, a) = setup().await;
    let created = app.create_group(&a, json!({"name": "G"})).await;
    app.put(
        &a.id,
        "token_restrictions",
        json!({"pvt_type": "token_restrictions",
               "restrictions": {"cb_user_auth": {"admin": {"groups": [{"rules": {"*": ["GET"]}}]}}}}),
    )
    .await;
    let path = TestApp::groups_path(&a);
    let resp = app
        .call(
            "GET",
            &format!("{path}/{}", created["id"].as_str().unwrap()),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let resp = app
        .call(
            "PUT",
            &path,
            Some(&a.token),
            Some(json!({"data": {"name": "x"}})),
        )
        .await;
    assert_eq!(resp.status, 403);
    assert_eq!(
        resp.json["data"],
        json!({"cause": "access denied by token restrictions", "message": "forbidden"})
    );
}

#[tokio::test]
async fn unauthenticated_clients_run_out_of_tokens() {
    let (app, a) = setup().await;
    let path = TestApp::groups_path(&a);
    // The bucket holds 100 tokens and refills 10 a second, so a client faster than that empties
    // it; the bound only keeps a broken limiter from looping for ever.
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..2000 {
        let resp = app.call("GET", &path, None, None).await;
        statuses.push(resp.status);
        if resp.status != 401 {
            refused = Some(resp);
            break;
        }
    }
    assert!(statuses.len() > 100, "refused too early: {statuses:?}");
    let resp = refused.expect("the bucket never emptied");
    assert_eq!(resp.status, 429, "{}", resp.text);
    assert_eq!(resp.json["message"], "too_many_requests");
    assert_eq!(resp.json["data"], json!({"message": "too many requests"}));
    // An authenticated client is not charged.
    assert_eq!(
        app.call("GET", &path, Some(&a.token), None).await.status,
        200
    );
}

#[tokio::test]
async fn unacceptable_accept_is_a_bare_406() {
    let (app, a) = setup().await;
    let resp = app
        .send(
            app.http
                .get(app.url(&TestApp::groups_path(&a)))
                .header("x-auth-token", &a.token)
                .header("accept", "text/html"),
        )
        .await;
    assert_eq!(resp.status, 406);
    assert!(resp.text.is_empty());
}

#[tokio::test]
async fn oversized_bodies_are_400_max_size_and_store_nothing() {
    let (app, a) = setup().await;
    let name = "x".repeat(8_000_001);
    let resp = app
        .call(
            "PUT",
            &TestApp::groups_path(&a),
            Some(&a.token),
            Some(json!({"data": {"name": name}})),
        )
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.json["data"]["file"]["maxSize"],
        json!({"message": "Payload or Files must not be more than 8000000 bytes", "target": 8000000})
    );
    let list = app
        .call("GET", &TestApp::groups_path(&a), Some(&a.token), None)
        .await;
    assert_eq!(list.json["data"], json!([]));
}

#[tokio::test]
async fn pretty_print_is_honoured() {
    let (app, a) = setup().await;
    let resp = app
        .call(
            "GET",
            &format!("{}?pretty_print=true", TestApp::groups_path(&a)),
            Some(&a.token),
            None,
        )
        .await;
    assert!(resp.text.contains("\n  \""), "{}", resp.text);
    let resp = app
        .call("GET", &TestApp::groups_path(&a), Some(&a.token), None)
        .await;
    assert!(!resp.text.contains('\n'));
}

#[tokio::test]
async fn cors_headers_on_errors_and_cors_requests() {
    let (app, a) = setup().await;
    let path = TestApp::groups_path(&a);
    let resp = app.call("GET", &path, None, None).await;
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        resp.header("access-control-expose-headers"),
        Some("content-type, x-auth-token, x-request-id, x-kazoo-cluster-id, location, etag, etag")
    );
    let resp = app.call("GET", &path, Some(&a.token), None).await;
    assert!(resp.header("access-control-allow-origin").is_none());
    let resp = app
        .send(
            app.http
                .get(app.url(&path))
                .header("x-auth-token", &a.token)
                .header("origin", "https://ui"),
        )
        .await;
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    let methods = resp.header("access-control-allow-methods").unwrap();
    assert!(
        methods.starts_with("OPTIONS, ") && methods.contains("GET") && methods.contains("PUT"),
        "{methods}"
    );
}

#[tokio::test]
async fn unpaginated_listings_cross_chunk_boundaries_with_filters_and_users() {
    let (app, a) = setup().await;
    let u = a.user_id.clone();
    let mut member_ids = Vec::new();
    for i in 0..120 {
        let mut data = json!({"name": format!("G{i:03}")});
        if i % 2 == 0 {
            data["endpoints"] = json!({u.clone(): {"type": "user"}});
        }
        let created = app.create_group(&a, data).await;
        if i % 2 == 0 {
            member_ids.push(created["id"].as_str().unwrap().to_owned());
        }
    }
    member_ids.sort();
    let path = TestApp::groups_path(&a);
    let all = app
        .call(
            "GET",
            format!("{path}?paginate=false"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(all.status, 200);
    assert_eq!(all.json["data"].as_array().unwrap().len(), 120);
    assert!(all.header("etag").is_some());
    let filtered = app
        .call(
            "GET",
            format!("{path}?paginate=false&has_key=endpoints.{u}"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(
        filtered.json["data"].as_array().unwrap().len(),
        60,
        "{}",
        filtered.text
    );
    let by_user = app
        .call(
            "GET",
            format!("/v2/accounts/{}/users/{u}/groups?paginate=false", a.id),
            Some(&a.token),
            None,
        )
        .await;
    let got: Vec<&str> = by_user.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, member_ids);
    // Filtered pages stay full.
    let page = app
        .call(
            "GET",
            format!("{path}?page_size=7&has_key=endpoints.{u}"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(page.json["page_size"], 7);
    assert!(page.json["next_start_key"].is_string());
}

#[tokio::test]
async fn jsonp_wraps_the_envelope_for_plain_callback_names_only() {
    let (app, a) = setup().await;
    let path = TestApp::groups_path(&a);
    let resp = app
        .call("GET", format!("{path}?jsonp=cb_1"), Some(&a.token), None)
        .await;
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
    let resp = app
        .call(
            "GET",
            format!("{path}?jsonp=alert(1)%3B//"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(resp.header("content-type"), Some("application/json"));
}
