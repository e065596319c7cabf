//! `PUT /v2/accounts/{account}/groups`: what is stored, what is answered, and how a bad body is
//! refused.
use serde_json::json;

use super::{assert_envelope_tail, is_hex32, setup};

/// #2–#4.
#[tokio::test]
async fn create_returns_201_with_location_and_stores_every_private_field() {
    let (app, a) = setup().await;
    let resp = app.create_group(&a, json!({"name": "G1"})).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let id = resp.id().to_owned();
    assert!(is_hex32(&id));
    assert_eq!(resp.header("location").unwrap(), a.group_path(&id));
    assert_eq!(
        resp.json["data"],
        json!({"name": "G1", "endpoints": {}, "music_on_hold": {}, "id": id})
    );
    assert!(resp.revision().starts_with("1-"));
    assert!(resp.header("etag").is_none());
    // #4: nothing private leaks.
    for key in resp.json["data"].as_object().unwrap().keys() {
        assert!(!key.starts_with("pvt_") && !key.starts_with('_'), "{key}");
    }
    // #3: the stored document.
    let doc = app.read_doc(&a, &id).await.unwrap();
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

/// #5, #6.
#[tokio::test]
async fn create_returns_400_name_required_without_a_name_or_without_a_body() {
    let (app, a) = setup().await;
    let want = json!({"name": {"required": {"message": "Field is required but missing", "value": "name"}}});
    let resp = app.create_group(&a, json!({})).await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json["error"], "400");
    assert_eq!(resp.json["message"], "validation error");
    assert_eq!(resp.json["data"], want);
    assert_envelope_tail(&resp.json);
    let resp = app
        .with_token(&a.token)
        .request("PUT", a.groups_path())
        .send()
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json["data"], want);
}

/// #7–#13.
#[tokio::test]
async fn create_renders_schema_errors_as_kazoo_does() {
    let (app, a) = setup().await;
    let long = "a".repeat(129);
    let resp = app.create_group(&a, json!({"name": long})).await;
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.json["data"]["name"]["maxLength"],
        json!({"message": "String must not be more than 128 characters", "target": 128, "cause": long, "value": long})
    );
    let resp = app.create_group(&a, json!({"name": "a".repeat(128)})).await;
    assert_eq!(resp.status, 201);
    let resp = app.create_group(&a, json!({"name": ""})).await;
    assert_eq!(
        resp.json["data"]["name"]["minLength"]["message"],
        "String must be at least 1 characters"
    );
    assert_eq!(resp.json["data"]["name"]["minLength"]["target"], 1);
    let resp = app.create_group(&a, json!({"name": 5})).await;
    assert_eq!(
        resp.json["data"]["name"]["type"],
        json!({"message": "Value did not match type(s): string", "target": "string", "value": 5})
    );
    let resp = app
        .create_group(&a, json!({"name": "x", "flags": ["a", 1]}))
        .await;
    assert_eq!(resp.json["data"]["flags.1"]["type"]["target"], "string");
    let resp = app
        .create_group(&a, json!({"name": "x", "endpoints": []}))
        .await;
    assert_eq!(resp.json["data"]["endpoints"]["type"]["target"], "object");
    let resp = app
        .create_group(
            &a,
            json!({"name": "x", "music_on_hold": {"media_id": "m".repeat(129)}}),
        )
        .await;
    assert!(
        resp.json["data"]["music_on_hold.media_id"]["maxLength"].is_object(),
        "{}",
        resp.text
    );
}

/// #14, #15.
#[tokio::test]
async fn create_returns_400_when_the_envelope_has_no_data_object() {
    let (app, a) = setup().await;
    let admin = app.with_token(&a.token);
    let resp = admin
        .request("PUT", a.groups_path())
        .json(&json!({"name": "x"}))
        .send()
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.json["data"]["data"]["required"],
        json!({"message": "Field is required but missing", "value": {"name": "x"}})
    );
    let resp = admin
        .request("PUT", a.groups_path())
        .json(&json!({"data": "x"}))
        .send()
        .await;
    assert_eq!(
        resp.json["data"]["data"]["type"]["message"],
        "Value did not match type(s): object, array"
    );
}

/// #16, #17.
#[tokio::test]
async fn broken_json_returns_400_before_authentication() {
    let (app, a) = setup().await;
    // #16: broken JSON without a token is 400, not 401, and carries no auth_token or version.
    let resp = app
        .request("PUT", a.groups_path())
        .json_type()
        .body("{\"data\":")
        .send()
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json["data"]["json"]["invalid"]["target"], "body");
    assert_eq!(resp.json["message"], "validation error");
    assert!(resp.json.get("auth_token").is_none() && resp.json.get("version").is_none());
    // #17: JSON that is no object, sent without a content type.
    let resp = app
        .request("PUT", a.groups_path())
        .token(&a.token)
        .body("[1,2]")
        .send()
        .await;
    assert_eq!(
        resp.json["data"]["json"]["invalid"]["message"],
        "All JSON must be valid"
    );
}

/// #18, #19.
#[tokio::test]
async fn create_keeps_unknown_fields_and_drops_private_ones() {
    let (app, a) = setup().await;
    let group = app
        .add_group(
            &a,
            json!({"name": "x", "custom": {"a": 1}, "ui_metadata": {"ui": "kazoo-ui"}, "pvt_type": "user", "_rev": "9-z", "pvt_deleted": true}),
        )
        .await;
    assert_eq!(group.data["custom"], json!({"a": 1}));
    assert_eq!(group.data["ui_metadata"], json!({"ui": "kazoo-ui"}));
    let got = app.get_group(&a, &group.id).await;
    assert_eq!(got.json["data"]["custom"], json!({"a": 1}));
    let doc = app.read_doc(&a, &group.id).await.unwrap();
    assert_eq!(doc["pvt_type"], "group");
    assert!(doc.get("pvt_deleted").is_none());
    assert!(doc["_rev"].as_str().unwrap().starts_with("1-"));
}

/// #20.
#[tokio::test]
async fn create_uses_a_client_chosen_id_and_returns_409_when_it_is_taken() {
    let (app, a) = setup().await;
    let data = json!({"name": "x", "id": "my-group"});
    let resp = app.create_group(&a, data.clone()).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert_eq!(resp.json["data"]["id"], "my-group");
    assert!(resp.header("location").unwrap().ends_with("/my-group"));
    let resp = app.create_group(&a, data).await;
    assert_eq!(resp.status, 409);
    assert_eq!(resp.json["message"], "datastore_conflict");
    assert_eq!(
        resp.json["data"],
        json!({"message": "conflicting documents"})
    );
}

#[tokio::test]
async fn create_refuses_client_chosen_ids_naming_design_docs_or_other_resources() {
    let (app, a) = setup().await;
    for id in ["_design/groups", "_all_docs", "a/b", ".."] {
        let resp = app.create_group(&a, json!({"name": "x", "id": id})).await;
        assert_eq!(resp.status, 400, "{id}: {}", resp.text);
        assert!(resp.json["data"]["id"].is_object());
    }
    // The design document is untouched: the listing still works.
    assert_eq!(app.list_groups(&a, "").await.status, 200);
}

/// #21.
#[tokio::test]
async fn post_with_verb_put_in_the_envelope_or_the_query_creates() {
    let (app, a) = setup().await;
    let admin = app.with_token(&a.token);
    let resp = admin
        .request("POST", a.groups_path())
        .json(&json!({"data": {"name": "x"}, "verb": "PUT"}))
        .send()
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert!(resp.header("location").is_some());
    let resp = admin
        .request("POST", format!("{}?verb=PUT", a.groups_path()))
        .json(&json!({"data": {"name": "y"}}))
        .send()
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
}

/// #64.
#[tokio::test]
async fn create_accepts_a_json_body_sent_with_the_form_content_type_curl_uses() {
    let (app, a) = setup().await;
    let resp = app
        .request("PUT", a.groups_path())
        .token(&a.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"data":{"name":"x"}}"#)
        .send()
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
}

#[tokio::test]
async fn oversized_bodies_return_400_max_size_and_store_nothing() {
    let (app, a) = setup().await;
    let name = "x".repeat(8_000_001);
    let resp = app.create_group(&a, json!({ "name": name })).await;
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.json["data"]["file"]["maxSize"],
        json!({"message": "Payload or Files must not be more than 8000000 bytes", "target": 8000000})
    );
    let list = app.list_groups(&a, "").await;
    assert_eq!(list.json["data"], json!([]));
}
