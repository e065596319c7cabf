//! The design documents of `couch_views/`: installed by the service on first use (once, even
//! under concurrent first requests), repaired when they go missing, refreshed for every account
//! by `kz-groups refresh-views`, and never written where Kazoo's own stand.
use futures::TryStreamExt;
use serde_json::{json, Map, Value};

use crate::helpers::{account_db, eventually, generation, md5_hex, Account, TestApp, COHERENCE};

#[tokio::test]
async fn concurrent_first_requests_install_the_design_doc_once() {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    let removed = app.remove_design_doc(&a, "groups").await;
    assert!(app.design_doc(&a, "groups").await.is_none());
    let requests: Vec<_> = (0..10).map(|_| app.list_groups(&a, "")).collect();
    for resp in futures::future::join_all(requests).await {
        assert_eq!(resp.status, 200, "{}", resp.text);
    }
    let doc = app.design_doc(&a, "groups").await.expect("installed");
    assert_eq!(
        generation(doc["_rev"].as_str().unwrap()),
        generation(&removed) + 1,
        "written once after {removed}: {}",
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
    app.add_group(&a, json!({"name": "G"})).await;
    assert_eq!(app.list_groups(&a, "").await.status, 200);
    // Someone replaces the design document by one without our views.
    let mut doc = app.design_doc(&a, "groups").await.unwrap();
    doc["views"] = json!({});
    app.put_design_doc(&a, "groups", doc).await;
    let resp = eventually(|| app.list_groups(&a, ""), |r| r.status == 503).await;
    assert_eq!(resp.status, 503, "{}", resp.text);
    assert_eq!(resp.json["message"], "datastore missing view");
    let resp = app.list_groups(&a, "").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["data"].as_array().unwrap().len(), 1);
}

/// The staging copy of `_design/groups` a swap builds, once no swap is under way: other tests'
/// `refresh-views` runs visit every account, this one's too, and may be mid-swap.
async fn staging_copy(app: &TestApp, account: &Account) -> Option<Value> {
    let deadline = std::time::Instant::now() + COHERENCE;
    loop {
        let copy = app.design_doc(account, "groups-kz-groups-next").await;
        if copy.is_none() || std::time::Instant::now() > deadline {
            return copy;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn instances_changing_one_design_document_at_once_leave_no_staging_copy() {
    let app = TestApp::spawn().await;
    let designs = kz_groups::startup::design_docs().unwrap();
    let groups = designs.iter().find(|d| d.name == "groups").unwrap();
    for _ in 0..3 {
        let account = app.create_account(None).await;
        // An older kz-groups' doc (it carries the marker), missing a view since added.
        let old = json!({"_id": "_design/groups", "kz_groups": {"installed_by": "kz-groups"},
                         "language": "javascript",
                         "views": {"crossbar_listing": {"map": "function(doc) { emit(doc._id, null); }"}}});
        app.put_design_doc(&account, "groups", old).await;
        let db = account_db(&account.id);
        let ensure = || kz_groups::store::views::ensure_design(&app.store, &db, groups);
        let (first, second) = tokio::join!(ensure(), ensure());
        assert!(first.is_ok() && second.is_ok(), "{first:?} {second:?}");
        let live = app.design_doc(&account, "groups").await.unwrap();
        assert!(
            live["views"]["crossbar_listing_by_user"].is_object(),
            "{live}"
        );
        assert_eq!(
            staging_copy(&app, &account).await,
            None,
            "the copies built for the swap are gone"
        );
    }
}

#[tokio::test]
async fn refresh_views_installs_and_updates_only_its_own_design_docs() {
    let app = TestApp::spawn().await;
    let fresh = app.create_account(None).await;
    app.remove_design_doc(&fresh, "groups").await;
    let stale = app.create_account(None).await;
    // An older kz-groups' doc (it carries the marker), missing a view since added.
    let old = json!({"_id": "_design/groups", "kz_groups": {"installed_by": "kz-groups"},
                     "language": "javascript",
                     "views": {"crossbar_listing": {"map": "function(doc) { emit(doc._id, null); }"}}});
    app.put_design_doc(&stale, "groups", old).await;
    let visited = kz_groups::cli::refresh_views(&app.store)
        .await
        .expect("refresh-views succeeds");
    assert!(visited >= 2);
    for account in [&fresh, &stale] {
        let doc = app.design_doc(account, "groups").await.expect("installed");
        assert!(
            doc["views"]["crossbar_listing_by_user"].is_object(),
            "{doc}"
        );
        assert_eq!(doc["kz_groups"], json!({"installed_by": "kz-groups"}));
        // The changed one was built under another name first; that copy is gone.
        assert_eq!(
            staging_copy(&app, account).await,
            None,
            "no staging copy is left behind"
        );
    }
    // The refreshed views serve listings.
    app.add_group(&stale, json!({"name": "G"})).await;
    let resp = app.list_groups(&stale, "").await;
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
    let views: Map<String, Value> = views
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
    let mut views: Map<String, Value> = views
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

/// Puts Kazoo's design documents in place of ours, as in an account Kazoo made, then runs
/// kz-groups' first requests (writes, listings, paging, a login) and `refresh-views`.
async fn run_beside_kazoo(groups: Value, users: Value) {
    let app = TestApp::spawn().await;
    let a = app.create_account(None).await;
    app.put_design_doc(&a, "groups", groups).await;
    app.put_design_doc(&a, "users", users).await;
    let stored = || async {
        [
            app.design_doc(&a, "groups").await.expect("_design/groups"),
            app.design_doc(&a, "users").await.expect("_design/users"),
        ]
    };
    let before = stored().await;

    let member = json!({ a.user_id.clone(): {"type": "user"} });
    for (name, endpoints) in [
        ("b", member.clone()),
        ("a", member.clone()),
        ("c", json!({})),
    ] {
        app.add_group(&a, json!({"name": name, "endpoints": endpoints}))
            .await;
    }
    let sorted = |mut names: Vec<String>| {
        names.sort();
        names
    };
    let all = app.list_groups(&a, "").await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(sorted(all.listed("name")), ["a", "b", "c"]);
    let mine = app.list_user_groups(&a, &a.user_id, "").await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    assert_eq!(sorted(mine.listed("name")), ["a", "b"]);
    // Paging the by-user listing one group at a time reaches both, then stops.
    let first = app.list_user_groups(&a, &a.user_id, "page_size=1").await;
    assert_eq!(first.json["page_size"], 1, "{}", first.text);
    let next = first.json["next_start_key"]
        .as_str()
        .expect("a second page");
    let second = app
        .list_user_groups(&a, &a.user_id, &format!("page_size=1&start_key={next}"))
        .await;
    assert!(
        second.json.get("next_start_key").is_none(),
        "{}",
        second.text
    );
    let mut paged = first.listed("name");
    paged.extend(second.listed("name"));
    assert_eq!(sorted(paged), ["a", "b"]);
    let unpaged = app.list_user_groups(&a, &a.user_id, "paginate=false").await;
    assert_eq!(sorted(unpaged.listed("name")), ["a", "b"]);
    // A login reads users/creds_by_md5.
    let user = app.create_user(&a, "Alice", "Secret1").await;
    let login = app
        .login_with_credentials(
            json!({"credentials": md5_hex("alice:Secret1"), "account_realm": a.realm}),
        )
        .await;
    assert_eq!(login.status, 201, "{}", login.text);
    assert_eq!(login.json["data"]["owner_id"], user.as_str());

    kz_groups::cli::refresh_views(&app.store)
        .await
        .expect("refresh-views succeeds");
    assert_eq!(
        stored().await,
        before,
        "Kazoo's design documents are left byte for byte"
    );
    // And kz-groups kept no design document of its own there.
    let rows: Vec<_> = app
        .store
        .all_docs(&account_db(&a.id))
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
