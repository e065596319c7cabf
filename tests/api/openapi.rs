//! `docs/openapi.json` kept true: every documented operation is exercised, through its success
//! and its usual errors, and each answer is checked against the document (its status is
//! documented for the operation, its Content-Type is the documented one, its body validates
//! against the documented schema, and a documented bare answer has no body). The document is
//! also what `GET /openapi.json` serves. scripts/fuzz-openapi fuzzes it with schemathesis in CI.
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use serde_json::{json, Value};

use kz_groups::domain::line::CrossbarLine;

use crate::helpers::{md5_hex, Account, Response, TestApp};

const DOCUMENT: &str = include_str!("../../docs/openapi.json");

struct Document {
    doc: Value,
    validators: Mutex<HashMap<String, jsonschema::Validator>>,
    exercised: Mutex<BTreeSet<(String, String)>>,
}

/// A JSON pointer token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

impl Document {
    fn load() -> Self {
        Self {
            doc: serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON"),
            validators: Mutex::default(),
            exercised: Mutex::default(),
        }
    }

    /// Every documented (path template, method).
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                    all.insert((path.clone(), method.clone()));
                }
            }
        }
        all
    }

    /// The pointer of a response object, following its `$ref`.
    fn response_pointer(&self, template: &str, method: &str, status: u16) -> Option<String> {
        let pointer = format!("/paths/{}/{method}/responses/{status}", escape(template));
        let response = self.doc.pointer(&pointer)?;
        Some(match response.get("$ref").and_then(Value::as_str) {
            Some(target) => target.trim_start_matches('#').to_owned(),
            None => pointer,
        })
    }

    /// A validator for the schema at `pointer`, with the whole document around it so that its
    /// `$ref`s resolve (OpenAPI 3.1 schemas are JSON Schema 2020-12).
    fn validate(&self, pointer: &str, body: &Value) -> Result<(), String> {
        let mut validators = self.validators.lock().unwrap();
        let validator = validators.entry(pointer.to_owned()).or_insert_with(|| {
            let mut root = self.doc.clone();
            root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
            // A URI fragment: the braces of path templates percent-encoded.
            let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
            root["$ref"] = json!(format!("#{fragment}"));
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&root)
                .unwrap_or_else(|e| panic!("the schema at {pointer} compiles: {e}"))
        });
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Checks an answer of `METHOD template` against the document.
    fn check(&self, method: &str, template: &str, resp: &Response) {
        let method = method.to_ascii_lowercase();
        let what = format!("{} {template} -> {}", method.to_uppercase(), resp.status);
        self.exercised
            .lock()
            .unwrap()
            .insert((template.to_owned(), method.clone()));
        let pointer = self
            .response_pointer(template, &method, resp.status)
            .unwrap_or_else(|| panic!("{what}: status not documented\n{}", resp.text));
        let response = self.doc.pointer(&pointer).unwrap();
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            assert!(resp.text.is_empty(), "{what}: documented bare, has a body");
            return;
        };
        let sent = resp.header("content-type").unwrap_or_else(|| {
            panic!("{what}: no Content-Type");
        });
        let media = sent.split(';').next().unwrap().trim();
        assert!(
            content.contains_key(media),
            "{what}: Content-Type {sent} is not documented ({:?})",
            content.keys()
        );
        if media == "application/json" {
            let schema = format!("{pointer}/content/application~1json/schema");
            if let Err(errors) = self.validate(&schema, &resp.json) {
                panic!(
                    "{what}: the body breaks the document: {errors}\n{}",
                    resp.text
                );
            }
        }
    }
}

/// CSV answers (and the 204 of one without rows) are documented, on the default line.
#[tokio::test]
async fn csv_answers_are_as_the_document_says() {
    let doc = Document::load();
    let app = TestApp::spawn_with(|config| config.crossbar = CrossbarLine::V4_3).await;
    let account = app.create_account(None).await;
    let groups = "/v2/accounts/{account_id}/groups";
    app.add_group(&account, json!({"name": "CSV"})).await;
    let as_csv = app
        .with_token(&account.token)
        .request("GET", account.groups_path())
        .header("accept", "text/csv")
        .send()
        .await;
    assert_eq!(as_csv.status, 200, "{}", as_csv.text);
    doc.check("GET", groups, &as_csv);
    let no_rows = app
        .with_token(&account.token)
        .request(
            "GET",
            format!("{}?accept=csv", account.user_groups_path(&account.id)),
        )
        .send()
        .await;
    assert_eq!(no_rows.status, 204, "{}", no_rows.text);
    doc.check(
        "GET",
        "/v2/accounts/{account_id}/users/{user_id}/groups",
        &no_rows,
    );
    let one = app
        .with_token(&account.token)
        .request("GET", format!("{}?accept=csv", account.groups_path()))
        .send()
        .await;
    let id = one.text.lines().nth(1).unwrap_or_default()[1..33].to_owned();
    let fetched = app
        .with_token(&account.token)
        .request("GET", account.group_path(&id))
        .header("accept", "text/csv")
        .send()
        .await;
    assert_eq!(fetched.status, 200, "{}", fetched.text);
    doc.check(
        "GET",
        "/v2/accounts/{account_id}/groups/{group_id}",
        &fetched,
    );
}

#[tokio::test]
async fn every_documented_operation_answers_as_the_document_says() {
    let doc = Document::load();
    let app = TestApp::spawn().await;
    let account = app.create_account(None).await;
    let other = app.create_account(None).await;
    let token = account.token.as_str();
    let admin = || app.with_token(token);
    let groups = "/v2/accounts/{account_id}/groups";
    let group = "/v2/accounts/{account_id}/groups/{group_id}";
    let user_groups = "/v2/accounts/{account_id}/users/{user_id}/groups";
    let user_group = "/v2/accounts/{account_id}/users/{user_id}/groups/{group_id}";

    // Operations.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        doc.check("GET", path, &app.probe(path).await);
    }
    let served = app.probe("/openapi.json").await;
    assert_eq!(
        served.text, DOCUMENT,
        "/openapi.json serves docs/openapi.json"
    );

    // Logins.
    let login = app.login_with_api_key(&account.api_key).await;
    assert_eq!(login.status, 201);
    doc.check("PUT", "/v2/api_auth", &login);
    let unknown = app.login_with_api_key(&"0".repeat(64)).await;
    assert_eq!(unknown.status, 404);
    doc.check("PUT", "/v2/api_auth", &unknown);
    let malformed = app
        .request("PUT", "/v2/api_auth")
        .json(&json!({"data": {}}))
        .send()
        .await;
    assert_eq!(malformed.status, 400);
    doc.check("PUT", "/v2/api_auth", &malformed);
    app.create_user(&account, "openapi", "Open-Api1").await;
    let realm = account.realm.as_str();
    for (password, status) in [("Open-Api1", 201), ("wrong", 401)] {
        let resp = app
            .login_with_credentials(json!({"credentials": md5_hex(&format!("openapi:{password}")), "account_realm": realm}))
            .await;
        assert_eq!(resp.status, status, "{}", resp.text);
        doc.check("PUT", "/v2/user_auth", &resp);
    }
    let resp = app.request("PUT", "/v2/user_auth").body("{").send().await;
    assert_eq!(resp.status, 400);
    doc.check("PUT", "/v2/user_auth", &resp);
    for (caller, status) in [(admin(), 200), (app.with_token("not-a-token"), 401)] {
        let resp = caller.token_info().await;
        assert_eq!(resp.status, status);
        doc.check("GET", "/v2/token_auth", &resp);
    }
    let resp = admin().delete_token().await;
    doc.check("DELETE", "/v2/token_auth", &resp);

    // Groups: the collection.
    let created = admin()
        .create_group(
            &account,
            json!({"name": "Doc", "endpoints": {account.user_id.clone(): {"type": "user"}}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    doc.check("PUT", groups, &created);
    let id = created.id().to_owned();
    admin()
        .create_group(&account, json!({"name": "Doc 2"}))
        .await;
    for query in [
        "",
        "?page_size=1",
        "?paginate=false",
        "?page_size=0",
        "?filter_name=Doc",
    ] {
        let resp = admin().list_groups(&account, query).await;
        doc.check("GET", groups, &resp);
    }
    let invalid = admin().create_group(&account, json!({"name": ""})).await;
    assert_eq!(invalid.status, 400);
    doc.check("PUT", groups, &invalid);
    let anonymous = app.without_token().list_groups(&account, "").await;
    assert_eq!(anonymous.status, 401);
    doc.check("GET", groups, &anonymous);
    let foreign = app.with_token(&other.token).list_groups(&account, "").await;
    assert_eq!(foreign.status, 403);
    doc.check("GET", groups, &foreign);
    let bad_account = admin()
        .request("GET", "/v2/accounts/abc/groups")
        .send()
        .await;
    assert_eq!(bad_account.status, 404);
    doc.check("GET", groups, &bad_account);
    let refused = admin()
        .request("GET", account.groups_path())
        .header("accept", "text/html")
        .send()
        .await;
    assert_eq!(refused.status, 406);
    doc.check("GET", groups, &refused);

    // Groups: one group.
    let fetched = admin().get_group(&account, &id).await;
    assert_eq!(fetched.status, 200);
    doc.check("GET", group, &fetched);
    let etag = fetched.header("etag").unwrap().to_owned();
    let unchanged = admin()
        .request("GET", account.group_path(&id))
        .header("if-none-match", &etag)
        .send()
        .await;
    assert_eq!(unchanged.status, 304);
    doc.check("GET", group, &unchanged);
    let updated = admin()
        .update_group(&account, &id, json!({"name": "Doc renamed"}))
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    doc.check("POST", group, &updated);
    let stale = admin()
        .request("POST", account.group_path(&id))
        .header("if-match", "\"1-0\"")
        .json(&json!({"data": {"name": "x"}}))
        .send()
        .await;
    assert_eq!(stale.status, 412);
    doc.check("POST", group, &stale);
    let patched = admin()
        .patch_group(&account, &id, json!({"flags": ["vip"]}))
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    doc.check("PATCH", group, &patched);
    let broken = admin().patch_group(&account, &id, json!({"name": 5})).await;
    assert_eq!(broken.status, 400);
    doc.check("PATCH", group, &broken);
    let missing = admin()
        .get_group(&account, "0123456789abcdef0123456789abcdef")
        .await;
    assert_eq!(missing.status, 404);
    doc.check("GET", group, &missing);

    // The user's routes.
    let user = account.user_id.as_str();
    let listed = admin().list_user_groups(&account, user, "").await;
    assert_eq!(listed.status, 200);
    doc.check("GET", user_groups, &listed);
    let unknown_user = admin().list_user_groups(&account, "nobody", "").await;
    assert_eq!(unknown_user.status, 404);
    doc.check("GET", user_groups, &unknown_user);
    let made = admin()
        .request("PUT", account.user_groups_path(user))
        .json(&json!({"data": {"name": "Via user"}}))
        .send()
        .await;
    assert_eq!(made.status, 201, "{}", made.text);
    doc.check("PUT", user_groups, &made);
    let via_user = format!("{}/{}", account.user_groups_path(user), made.id());
    for (method, body) in [
        ("GET", None),
        ("POST", Some(json!({"data": {"name": "Via user 2"}}))),
        ("PATCH", Some(json!({"data": {"flags": []}}))),
        ("DELETE", None),
    ] {
        let request = admin().request(method, &via_user);
        let resp = match body {
            Some(body) => request.json(&body).send().await,
            None => request.send().await,
        };
        assert_eq!(resp.status, 200, "{method}: {}", resp.text);
        doc.check(method, user_group, &resp);
    }

    // The membership insight (kz-groups' extensions).
    let ringing = "/v2/accounts/{account_id}/groups/{group_id}/ringing";
    let callflow = kz_groups::domain::ids::random_hex(16);
    let flow = json!({"module": "ring_group",
                      "data": {"endpoints": [{"id": id, "endpoint_type": "group"}]}});
    app.write_doc(
        &account,
        &callflow,
        json!({"pvt_type": "callflow", "flow": flow}),
    )
    .await;
    let plain = kz_groups::domain::ids::random_hex(16);
    app.write_doc(
        &account,
        &plain,
        json!({"pvt_type": "callflow", "flow": {}}),
    )
    .await;
    for (query, status) in [
        (String::new(), 200),
        (format!("?callflow_id={callflow}"), 200),
        ("?callflow_id=nothing".to_owned(), 404),
        (format!("?callflow_id={plain}"), 400),
    ] {
        let path = format!("{}/ringing{query}", account.group_path(&id));
        let resp = admin().request("GET", path).send().await;
        assert_eq!(resp.status, status, "{query}: {}", resp.text);
        doc.check("GET", ringing, &resp);
    }
    for (template, path) in [
        (
            "/v2/accounts/{account_id}/groups/{group_id}/dangling",
            format!("{}/dangling", account.group_path(&id)),
        ),
        (
            "/v2/accounts/{account_id}/groups/{group_id}/references",
            format!("{}/references", account.group_path(&id)),
        ),
        (
            "/v2/accounts/{account_id}/groups/_account/dangling",
            format!("{}/_account/dangling", account.groups_path()),
        ),
    ] {
        let resp = admin().request("GET", &path).send().await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text);
        doc.check("GET", template, &resp);
        let anonymous = app.without_token().request("GET", &path).send().await;
        assert_eq!(anonymous.status, 401);
        doc.check("GET", template, &anonymous);
    }
    let unknown = format!(
        "{}/references",
        account.group_path("0123456789abcdef0123456789abcdef")
    );
    let resp = admin().request("GET", unknown).send().await;
    assert_eq!(resp.status, 404);
    doc.check(
        "GET",
        "/v2/accounts/{account_id}/groups/{group_id}/references",
        &resp,
    );

    exercise_history(&doc, &app, &account, &id).await;

    // Deletes, soft then hard.
    let deleted = admin().delete_group(&account, &id).await;
    assert_eq!(deleted.status, 200);
    doc.check("DELETE", group, &deleted);
    let gone = admin().delete_group(&account, &id).await;
    assert_eq!(gone.status, 404);
    doc.check("DELETE", group, &gone);

    let exercised = doc.exercised.lock().unwrap().clone();
    let missed: Vec<_> = doc.operations().difference(&exercised).cloned().collect();
    assert!(
        missed.is_empty(),
        "documented operations never exercised: {missed:?}"
    );
}

/// The group history's operations (kz-groups' extension), on a group written at least twice.
async fn exercise_history(doc: &Document, app: &TestApp, account: &Account, id: &str) {
    // The group history (kz-groups' extension): its entries are written just after the answers.
    let history = format!("{}/history", account.group_path(id));
    let mut listed = app
        .with_token(&account.token)
        .request("GET", &history)
        .send()
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while listed.json["data"].as_array().map_or(0, Vec::len) < 2
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        listed = app
            .with_token(&account.token)
            .request("GET", &history)
            .send()
            .await;
    }
    assert_eq!(listed.status, 200, "{}", listed.text);
    let history_template = "/v2/accounts/{account_id}/groups/{group_id}/history";
    doc.check("GET", history_template, &listed);
    let entry = listed.listed("id").last().cloned().unwrap();
    let entry_template = "/v2/accounts/{account_id}/groups/{group_id}/history/{entry_id}";
    for path in [
        format!("{history}/{entry}"),
        format!("{history}/000000000001-x"),
    ] {
        let resp = app
            .with_token(&account.token)
            .request("GET", path)
            .send()
            .await;
        doc.check("GET", entry_template, &resp);
    }
    let account_history = "/v2/accounts/{account_id}/groups/_account/history";
    let resp = app
        .with_token(&account.token)
        .request(
            "GET",
            format!("{}/_account/history?action=created", account.groups_path()),
        )
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    doc.check("GET", account_history, &resp);
    let restore_template = "/v2/accounts/{account_id}/groups/{group_id}/history/{entry_id}/restore";
    let current = app.with_token(&account.token).get_group(account, id).await;
    for (method, rev, status) in [
        ("PUT", "1-stale".to_owned(), 409),
        ("POST", current.revision().to_owned(), 200),
    ] {
        let resp = app
            .with_token(&account.token)
            .request(method, format!("{history}/{entry}/restore"))
            .json(&json!({"data": {"rev": rev}}))
            .send()
            .await;
        assert_eq!(resp.status, status, "{method}: {}", resp.text);
        doc.check(method, restore_template, &resp);
    }
}

#[test]
fn the_document_is_openapi_3_1_and_names_every_route_of_the_route_table() {
    let doc: Value = serde_json::from_str(DOCUMENT).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // The route table's names (routes::route_name), each with its documented path.
    for (name, path) in [
        ("healthz", "/healthz"),
        ("readyz", "/readyz"),
        ("metrics", "/metrics"),
        ("openapi", "/openapi.json"),
        ("api_auth", "/v2/api_auth"),
        ("user_auth", "/v2/user_auth"),
        ("token_auth", "/v2/token_auth"),
        ("groups", "/v2/accounts/{account_id}/groups"),
        ("group", "/v2/accounts/{account_id}/groups/{group_id}"),
        (
            "user_groups",
            "/v2/accounts/{account_id}/users/{user_id}/groups",
        ),
        (
            "user_group",
            "/v2/accounts/{account_id}/users/{user_id}/groups/{group_id}",
        ),
        (
            "group_ringing",
            "/v2/accounts/{account_id}/groups/{group_id}/ringing",
        ),
        (
            "group_dangling",
            "/v2/accounts/{account_id}/groups/{group_id}/dangling",
        ),
        (
            "group_references",
            "/v2/accounts/{account_id}/groups/{group_id}/references",
        ),
        (
            "account_dangling",
            "/v2/accounts/{account_id}/groups/_account/dangling",
        ),
        (
            "group_history",
            "/v2/accounts/{account_id}/groups/{group_id}/history",
        ),
        (
            "group_history_entry",
            "/v2/accounts/{account_id}/groups/{group_id}/history/{entry_id}",
        ),
        (
            "group_history_restore",
            "/v2/accounts/{account_id}/groups/{group_id}/history/{entry_id}/restore",
        ),
        (
            "account_history",
            "/v2/accounts/{account_id}/groups/_account/history",
        ),
    ] {
        assert!(paths.contains(path), "{path} missing");
        let concrete = path
            .replace("{account_id}", "4b31dd1d32ce6d249897c06332375d65")
            .replace("{user_id}", "u1")
            .replace("{group_id}", "g1")
            .replace("{entry_id}", "000000000001-a");
        assert_eq!(kz_groups::routes::route_name(&concrete), name, "{path}");
    }
    assert_eq!(paths.len(), 19, "{paths:?}");
}
