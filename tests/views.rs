//! The design documents of `couch_views/`: installed by the service on first use (once, even
//! under concurrent first requests), repaired when they go missing, and refreshed for every
//! account by `kz-groups refresh-views`.
mod common;

use futures::TryStreamExt;

use common::TestApp;
use kz_groups::domain::ids::AccountId;
use serde_json::{json, Value};

async fn design(app: &TestApp, account: &str) -> Option<Value> {
    let db = AccountId::parse(account).unwrap().db();
    app.store.get_design(&db, "groups").await.unwrap()
}

#[tokio::test]
async fn concurrent_first_requests_install_the_design_doc_once() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    assert!(design(&app, &a.id).await.is_none());
    let path = TestApp::groups_path(&a);
    let requests: Vec<_> = (0..10)
        .map(|_| app.call("GET", &path, Some(&a.token), None))
        .collect();
    for resp in futures::future::join_all(requests).await {
        assert_eq!(resp.status, 200, "{}", resp.text);
    }
    let doc = design(&app, &a.id).await.expect("installed");
    assert!(
        doc["_rev"].as_str().unwrap().starts_with("1-"),
        "written once: {}",
        doc["_rev"]
    );
    let views = doc["views"].as_object().unwrap();
    assert!(
        views.contains_key("crossbar_listing") && views.contains_key("crossbar_listing_by_user")
    );
}

#[tokio::test]
async fn a_broken_design_doc_is_repaired_after_one_503() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    let path = TestApp::groups_path(&a);
    app.create_group(&a, json!({"name": "G"})).await;
    assert_eq!(
        app.call("GET", &path, Some(&a.token), None).await.status,
        200
    );
    // Someone replaces the design document by one without our views.
    let mut doc = design(&app, &a.id).await.unwrap();
    doc["views"] = json!({});
    let db = AccountId::parse(&a.id).unwrap().db();
    app.store.put_design(&db, "groups", &doc).await.unwrap();
    let resp = app.call("GET", &path, Some(&a.token), None).await;
    assert_eq!(resp.status, 503, "{}", resp.text);
    assert_eq!(resp.json["message"], "datastore missing view");
    let resp = app.call("GET", &path, Some(&a.token), None).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn refresh_views_installs_and_updates_only_its_own_design_docs() {
    let app = TestApp::spawn().await;
    let fresh = app.create_account(None).await;
    let stale = app.create_account(None).await;
    let db = AccountId::parse(&stale.id).unwrap().db();
    // An older kz-groups' doc (it carries the marker), missing a view since added.
    let old = json!({"_id": "_design/groups", "kz_groups": {"installed_by": "kz-groups"},
                     "language": "javascript",
                     "views": {"crossbar_listing": {"map": "function(doc) { emit(doc._id, null); }"}}});
    app.store.put_design(&db, "groups", &old).await.unwrap();
    let visited = kz_groups::cli::refresh_views(&app.config)
        .await
        .expect("refresh-views succeeds");
    assert!(visited >= 2);
    for account in [&fresh, &stale] {
        let doc = design(&app, &account.id).await.expect("installed");
        assert!(
            doc["views"]["crossbar_listing_by_user"].is_object(),
            "{doc}"
        );
        assert_eq!(doc["kz_groups"], json!({"installed_by": "kz-groups"}));
    }
    // The refreshed views serve listings.
    app.create_group(&stale, json!({"name": "G"})).await;
    let resp = app
        .call(
            "GET",
            &TestApp::groups_path(&stale),
            Some(&stale.token),
            None,
        )
        .await;
    assert_eq!(resp.json["data"][0]["name"], "G");
}

/// Kazoo's `_design/groups` as Kazoo's refresh stores it (groups-contract §4.5): its
/// `kazoo.view_map` metadata and JavaScript of its own, with `views` as given.
fn kazoo_groups(views: &[&str]) -> Value {
    let summary = "var f = []; for (var k in (doc.smartpbx || {})) { if (doc.smartpbx[k].enabled) f.push(k); } \
                   if (doc.music_on_hold && doc.music_on_hold.media_id) f.push('music_on_hold'); \
                   var n = 0, o = doc.endpoints || {}; for (var p in o) if (o.hasOwnProperty(p)) n++; \
                   var v = {'id': doc._id, 'name': doc.name, 'features': f, 'endpoints': n, 'flags': doc.flags || []};";
    let all = json!({
        "crossbar_listing": {"map": format!(
            "function(doc) {{ if (doc.pvt_type != 'group' || doc.pvt_deleted) return; {summary} emit(doc._id, v); }}")},
        "crossbar_listing_by_user": {"map": format!(
            "function(doc) {{ if (doc.pvt_type != 'group' || doc.pvt_deleted) return; {summary} \
             for (var id in doc.endpoints) if (doc.endpoints[id].type === 'user') emit(id, v); }}")},
    });
    let views: serde_json::Map<String, Value> = views
        .iter()
        .map(|v| (v.to_string(), all[*v].clone()))
        .collect();
    json!({"_id": "_design/groups", "kazoo": {"view_map": [{"classification": "account"}]},
           "language": "javascript", "views": views})
}

/// Kazoo's `_design/users`, with the credential views as given and views kz-groups never reads.
fn kazoo_users(views: &[&str]) -> Value {
    let creds = |field: &str| {
        json!({"map": format!(
            "function(doc) {{ if (!doc.{field} || doc.pvt_type != 'user' || doc.pvt_deleted || !doc.enabled) return; \
             emit(doc.{field}, {{'owner_id': doc._id, 'account_id': doc.pvt_account_id}}); }}")})
    };
    let all = json!({
        "creds_by_md5": creds("pvt_md5_auth"),
        "creds_by_sha": creds("pvt_sha1_auth"),
        "list_by_username": {"map": "function(doc) { if (doc.pvt_type != 'user' || !doc.username || doc.pvt_deleted) return; emit(doc.username, null); }"},
    });
    let mut views: serde_json::Map<String, Value> = views
        .iter()
        .map(|v| (v.to_string(), all[*v].clone()))
        .collect();
    views.insert(
        "list_by_email".into(),
        json!({"map": "function(doc) { if (doc.pvt_type != 'user' || !doc.email) return; emit(doc.email.toLowerCase(), null); }"}),
    );
    json!({"_id": "_design/users", "kazoo": {"view_map": [{"classification": "account"}]},
           "language": "javascript", "views": views})
}

async fn stored_design(app: &TestApp, account: &str, name: &str) -> Value {
    let db = AccountId::parse(account).unwrap().db();
    app.store
        .get_design(&db, name)
        .await
        .unwrap()
        .expect("design doc")
}

/// Installs Kazoo's design documents first, then runs kz-groups' first requests (writes,
/// listings, paging, a login) and `refresh-views`; returns the listings' names.
async fn run_beside_kazoo(groups: Value, users: Value) {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    let db = AccountId::parse(&a.id).unwrap().db();
    app.store.put_design(&db, "groups", &groups).await.unwrap();
    app.store.put_design(&db, "users", &users).await.unwrap();
    let before = [
        stored_design(&app, &a.id, "groups").await,
        stored_design(&app, &a.id, "users").await,
    ];

    let member = json!({ a.user_id.clone(): {"type": "user"} });
    for (name, endpoints) in [
        ("b", member.clone()),
        ("a", member.clone()),
        ("c", json!({})),
    ] {
        app.create_group(&a, json!({"name": name, "endpoints": endpoints}))
            .await;
    }
    let path = TestApp::groups_path(&a);
    let names = |resp: &common::Response| -> Vec<String> {
        let mut names: Vec<String> = resp.json["data"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", resp.text))
            .iter()
            .map(|g| g["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let all = app.call("GET", &path, Some(&a.token), None).await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(names(&all), ["a", "b", "c"]);
    let by_user = format!("/v2/accounts/{}/users/{}/groups", a.id, a.user_id);
    let mine = app.call("GET", &by_user, Some(&a.token), None).await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    assert_eq!(names(&mine), ["a", "b"]);
    // Paging the by-user listing one group at a time reaches both, then stops.
    let first = app
        .call(
            "GET",
            format!("{by_user}?page_size=1"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(first.json["page_size"], 1, "{}", first.text);
    let next = first.json["next_start_key"]
        .as_str()
        .expect("a second page");
    let second = app
        .call(
            "GET",
            format!("{by_user}?page_size=1&start_key={next}"),
            Some(&a.token),
            None,
        )
        .await;
    assert!(
        second.json.get("next_start_key").is_none(),
        "{}",
        second.text
    );
    let mut paged = names(&first);
    paged.extend(names(&second));
    paged.sort();
    assert_eq!(paged, ["a", "b"]);
    let unpaged = app
        .call(
            "GET",
            format!("{by_user}?paginate=false"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(names(&unpaged), ["a", "b"]);
    // A login reads users/creds_by_md5.
    let user = app.create_login_user(&a.id, "Alice", "Secret1", true).await;
    let realm = app.raw(&a.id, &a.id).await.unwrap()["realm"].clone();
    let login = app
        .call(
            "PUT",
            "/v2/user_auth",
            None,
            Some(
                json!({"data": {"credentials": common::md5_hex("alice:Secret1"), "account_realm": realm}}),
            ),
        )
        .await;
    assert_eq!(login.status, 201, "{}", login.text);
    assert_eq!(login.json["data"]["owner_id"], user.as_str());

    kz_groups::cli::refresh_views(&app.config)
        .await
        .expect("refresh-views succeeds");
    let after = [
        stored_design(&app, &a.id, "groups").await,
        stored_design(&app, &a.id, "users").await,
    ];
    assert_eq!(
        after, before,
        "Kazoo's design documents are left byte for byte"
    );
    // And kz-groups kept no design document of its own there.
    let rows: Vec<_> = app
        .store
        .all_docs(&db)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let designs: Vec<String> = rows
        .into_iter()
        .map(|row| row.id)
        .filter(|id| id.starts_with("_design/"))
        .collect();
    assert_eq!(designs, ["_design/groups", "_design/users"]);
}

#[tokio::test]
async fn kazoos_design_documents_are_used_as_they_are_and_never_rewritten() {
    run_beside_kazoo(
        kazoo_groups(&["crossbar_listing", "crossbar_listing_by_user"]),
        kazoo_users(&["creds_by_md5", "creds_by_sha", "list_by_username"]),
    )
    .await;
}

#[tokio::test]
async fn views_kazoos_design_documents_lack_are_read_without_a_design_document() {
    run_beside_kazoo(
        kazoo_groups(&["crossbar_listing"]),
        kazoo_users(&["creds_by_sha", "list_by_username"]),
    )
    .await;
}
