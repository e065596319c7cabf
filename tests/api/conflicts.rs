//! Conflicted group documents (issue 10) are found and resolved: on a read, and from the change
//! feeds. Conflicts are made as a CouchDB cluster makes them, on one server: sibling leaf
//! revisions written with `_bulk_docs` and `"new_edits": false`, sharing an ancestor whose body
//! is still there or is gone (never stored, as after a compaction).
//!
//! Only CouchDB has conflicts, so every test here runs against the CouchDB-compatible server in
//! `COUCHDB_URL` in both passes of `scripts/test` (as the recovery test runs against a server of
//! its own in both); the embedded store's side of the port (one leaf, bulk writes with revision
//! checks) is checked on an embedded store of the test's own, also in both passes.
use std::time::{Duration, Instant};

use kz_groups::config::Backend;
use kz_groups::domain::ids::{random_hex, AccountId, DocId};
use kz_groups::resolver::Resolved;
use kz_groups::store::embedded::EmbeddedStore;
use kz_groups::store::{DocStore, StoreError};
use serde_json::{json, Map, Value};

use crate::helpers::bus::{amqp_config, amqp_url, db_word, Listener};
use crate::helpers::process::ServerProcess;
use crate::helpers::{
    account_db, config_for, couchdb_url, eventually, generation, Account, TestApp,
};

/// CouchDB itself, beside the service: what a cluster's replication would write, and what a
/// test checks behind the service's back.
struct Couch {
    http: reqwest::Client,
    base: reqwest::Url,
    user: String,
    password: String,
}

impl Couch {
    fn new() -> Self {
        let mut base = reqwest::Url::parse(&couchdb_url()).unwrap();
        let user = base.username().to_owned();
        let password = base.password().unwrap_or_default().to_owned();
        base.set_username("").unwrap();
        base.set_password(None).unwrap();
        Self {
            http: reqwest::Client::new(),
            base,
            user,
            password,
        }
    }

    fn url(&self, account: &Account, rest: &str) -> String {
        let db = account_db(&account.id).encoded();
        format!("{}{db}/{rest}", self.base)
    }

    async fn call(&self, method: reqwest::Method, url: String, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, url)
            .basic_auth(&self.user, Some(&self.password))
            .header("accept", "application/json");
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("CouchDB answers");
        resp.json().await.unwrap_or(Value::Null)
    }

    /// Writes revisions as they are (`new_edits: false`), each with its `_revisions`.
    async fn replicate(&self, account: &Account, docs: Vec<Value>) {
        self.replicate_into(&self.url(account, "_bulk_docs"), docs)
            .await;
    }

    /// The same into the database whose `_bulk_docs` is at `url`.
    async fn replicate_into(&self, url: &str, docs: Vec<Value>) {
        let url = url.to_owned();
        let answer = self
            .call(
                reqwest::Method::POST,
                url,
                Some(json!({"docs": docs, "new_edits": false})),
            )
            .await;
        assert!(
            answer
                .as_array()
                .is_some_and(|rows| rows.iter().all(|r| r.get("error").is_none())),
            "replicated revisions refused: {answer}"
        );
    }

    /// The document as CouchDB serves it with `conflicts=true`.
    async fn doc(&self, account: &Account, id: &str) -> Value {
        let url = self.url(account, &format!("{id}?conflicts=true"));
        self.call(reqwest::Method::GET, url, None).await
    }

    /// Every leaf: `[{"ok": doc}, …]`.
    async fn leaves(&self, account: &Account, id: &str) -> Vec<Value> {
        let url = self.url(account, &format!("{id}?open_revs=all"));
        let answer = self.call(reqwest::Method::GET, url, None).await;
        answer
            .as_array()
            .unwrap_or_else(|| panic!("open_revs answer: {answer}"))
            .iter()
            .filter_map(|a| a.get("ok").cloned())
            .collect()
    }

    async fn live_leaves(&self, account: &Account, id: &str) -> usize {
        self.leaves(account, id)
            .await
            .iter()
            .filter(|l| l.get("_deleted") != Some(&Value::Bool(true)))
            .count()
    }
}

/// A revision id of generation `generation` whose hash is `tag` repeated (so tests choose which
/// leaf CouchDB makes the winner: the greater hash).
fn rev(generation: u64, tag: char) -> String {
    format!("{generation}-{}", tag.to_string().repeat(32))
}

/// A leaf revision `generation-tag` of `base` with `changes` applied (a `null` removes a key),
/// descending from the revisions in `parents` (newest first).
fn leaf(base: &Value, generation: u64, tag: char, parents: &[&str], changes: Value) -> Value {
    let mut doc: Map<String, Value> = base.as_object().unwrap().clone();
    doc.remove("_conflicts");
    for (k, v) in changes.as_object().unwrap() {
        match v {
            Value::Null => doc.remove(k),
            v => doc.insert(k.clone(), v.clone()),
        };
    }
    doc.extend(history(generation, tag, parents));
    Value::Object(doc)
}

/// A tombstone leaf `generation-tag` descending from `parents`.
fn tombstone(id: &str, generation: u64, tag: char, parents: &[&str]) -> Value {
    let mut doc = Map::from_iter([("_id".into(), json!(id)), ("_deleted".into(), json!(true))]);
    doc.extend(history(generation, tag, parents));
    Value::Object(doc)
}

/// `_rev` and `_revisions` of the leaf `generation-tag` over `parents`, as replication writes them.
fn history(generation: u64, tag: char, parents: &[&str]) -> Map<String, Value> {
    let mut ids = vec![tag.to_string().repeat(32)];
    ids.extend(
        parents
            .iter()
            .map(|p| p.split_once('-').unwrap().1.to_owned()),
    );
    Map::from_iter([
        ("_rev".into(), json!(rev(generation, tag))),
        (
            "_revisions".into(),
            json!({"start": generation, "ids": ids}),
        ),
    ])
}

/// A group created through the service, as CouchDB stores it: the revision a test's conflicting
/// leaves grow from.
struct Base {
    doc: Value,
    id: String,
    rev: String,
    modified: i64,
}

impl Base {
    /// A leaf one node wrote on top of this revision, `tag` choosing its hash.
    fn edit(&self, tag: char, changes: Value) -> Value {
        leaf(&self.doc, 2, tag, &[&self.rev], changes)
    }

    /// A delete one node made of this revision.
    fn delete(&self, tag: char) -> Value {
        tombstone(&self.id, 2, tag, &[&self.rev])
    }
}

async fn stored_group(app: &TestApp, couch: &Couch, a: &Account, data: Value) -> Base {
    let id = app.add_group(a, data).await.id;
    let doc = couch.doc(a, &id).await;
    Base {
        rev: doc["_rev"].as_str().unwrap().to_owned(),
        modified: doc["pvt_modified"].as_i64().unwrap(),
        id,
        doc,
    }
}

async fn couch_app() -> TestApp {
    TestApp::spawn_on_couchdb(&couchdb_url()).await
}

/// A service on CouchDB, an account, and a group created through the service whose sibling
/// leaves (`leaves` of it) were then written as a cluster's replication writes them.
struct Conflicted {
    couch: Couch,
    app: TestApp,
    a: Account,
    id: String,
    /// The base revision's `pvt_modified`.
    t: i64,
}

async fn conflicted(data: Value, leaves: impl FnOnce(&Base) -> Vec<Value>) -> Conflicted {
    let couch = Couch::new();
    let app = couch_app().await;
    let a = app.create_account(None).await;
    let base = stored_group(&app, &couch, &a, data).await;
    couch.replicate(&a, leaves(&base)).await;
    Conflicted {
        couch,
        app,
        a,
        id: base.id,
        t: base.modified,
    }
}

/// Waits until CouchDB holds one live leaf of the document and no `_conflicts`.
async fn resolved(couch: &Couch, a: &Account, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let doc = couch.doc(a, id).await;
        if doc.get("_conflicts").is_none() && couch.live_leaves(a, id).await <= 1 {
            return doc;
        }
        assert!(Instant::now() < deadline, "still in conflict: {doc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn endpoints_added_on_two_nodes_are_both_kept_and_announced() {
    let couch = Couch::new();
    let mut config = config_for(Backend::CouchDb { url: couchdb_url() });
    config.node_name = format!(
        "kz-groups-conflicts-{}@test",
        kz_groups::domain::ids::random_hex(6)
    );
    config.amqp = Some(amqp_config(&amqp_url()));
    let app = TestApp::spawn_configured(config, None).await;
    let a = app.create_account(None).await;
    let u = a.user_id.clone();
    let base = stored_group(&app, &couch, &a, json!({"name": "Sales"})).await;
    let id = base.id.clone();
    let mut notices = Listener::bind(&[format!("doc_edited.{}.group.{id}", db_word(&a.id))]).await;
    let t = base.modified;
    couch
        .replicate(
            &a,
            vec![
                base.edit(
                    'b',
                    json!({"endpoints": {u.clone(): {"type": "user"}}, "pvt_modified": t + 1}),
                ),
                base.edit(
                    'c',
                    json!({"endpoints": {"d1": {"type": "device"}}, "pvt_modified": t + 1}),
                ),
            ],
        )
        .await;
    assert!(couch.doc(&a, &id).await.get("_conflicts").is_some());

    // A read resolves it before answering.
    let resp = app.get_group(&a, &id).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(
        resp.json["data"]["endpoints"],
        json!({u.clone(): {"type": "user"}, "d1": {"type": "device"}}),
        "{}",
        resp.text
    );
    let stored = resolved(&couch, &a, &id).await;
    assert_eq!(resp.revision(), stored["_rev"]);
    assert_eq!(
        generation(resp.revision()),
        3,
        "one merged revision on the winner"
    );

    // The listings see the merged document.
    let list = app.list_groups(&a, "").await;
    assert_eq!(list.json["data"][0]["endpoints"], 2, "{}", list.text);
    let mine = app.list_user_groups(&a, &u, "").await;
    assert_eq!(mine.listed("id"), [id.as_str()], "{}", mine.text);

    // Announced as a POST would be: one doc_edited with the merged revision.
    let messages = notices.expect(1).await;
    assert_eq!(messages[0].json["Rev"], stored["_rev"]);
    assert_eq!(messages[0].json["Event-Name"], "doc_edited");
    notices.expect_quiet().await;
    notices.close().await;

    let metrics = app.probe("/metrics").await;
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l.starts_with("kz_groups_conflicts_resolved_total ") && !l.ends_with(" 0")),
        "{}",
        metrics.text
    );
}

#[tokio::test]
async fn a_conflict_no_read_touches_is_found_by_the_change_feed() {
    // One side removes a key, the other changes another one.
    let Conflicted {
        couch, app, a, id, ..
    } = conflicted(json!({"name": "G", "flags": ["x"]}), |base| {
        let t = base.modified;
        vec![
            base.edit('b', json!({"flags": null, "pvt_modified": t + 1})),
            base.edit(
                'c',
                json!({"name": "H", "pvt_alphanum_name": "h", "pvt_modified": t + 1}),
            ),
        ]
    })
    .await;
    // Only listings are asked for: the resolution comes from the feed.
    let list = eventually(
        || app.list_groups(&a, ""),
        |r| r.json["data"][0]["name"] == "H" && r.json["data"][0]["flags"] == json!([]),
    )
    .await;
    assert_eq!(list.json["data"][0]["name"], "H", "{}", list.text);
    let stored = resolved(&couch, &a, &id).await;
    assert_eq!(stored["name"], "H");
    assert!(stored.get("flags").is_none(), "the removal holds: {stored}");
    let resp = app.get_group(&a, &id).await;
    assert_eq!(resp.json["data"]["name"], "H");
    assert!(resp.json["data"].get("flags").is_none(), "{}", resp.text);
}

#[tokio::test]
async fn both_sides_changing_a_field_keep_the_later_write_not_couchdbs_winner() {
    let Conflicted {
        couch,
        app,
        a,
        id,
        t,
    } = conflicted(json!({"name": "G"}), |base| {
        let t = base.modified;
        vec![
            // CouchDB's winner (the greater hash) holds the earlier write.
            base.edit('f', json!({"name": "early", "pvt_modified": t + 1})),
            base.edit('1', json!({"name": "late", "pvt_modified": t + 2})),
        ]
    })
    .await;
    assert_eq!(couch.doc(&a, &id).await["name"], "early");
    let resp = app.get_group(&a, &id).await;
    assert_eq!(resp.json["data"]["name"], "late", "{}", resp.text);
    let stored = resolved(&couch, &a, &id).await;
    assert_eq!(stored["name"], "late");
    assert_eq!(stored["pvt_modified"], t + 2);
}

#[tokio::test]
async fn a_hard_delete_on_one_node_deletes_the_group_edited_on_another() {
    let couch = Couch::new();
    let app = couch_app().await;
    let a = app.create_account(None).await;
    let u = a.user_id.clone();
    let base = stored_group(
        &app,
        &couch,
        &a,
        json!({"name": "Doomed", "endpoints": {u.clone(): {"type": "user"}}}),
    )
    .await;
    let id = base.id.clone();
    let kept = app.add_group(&a, json!({"name": "Kept"})).await.id;
    let t = base.modified;
    couch
        .replicate(
            &a,
            vec![
                base.edit('b', json!({"name": "Edited", "pvt_modified": t + 1})),
                base.delete('d'),
            ],
        )
        .await;
    // CouchDB shows the live leaf (no `_conflicts`: the other leaf is a tombstone), so only
    // the change feed finds this one.
    assert_eq!(couch.doc(&a, &id).await["name"], "Edited");
    let resp = eventually(|| app.get_group(&a, &id), |r| r.status == 404).await;
    assert_eq!(resp.status, 404, "{}", resp.text);
    assert_eq!(couch.live_leaves(&a, &id).await, 0);
    let list = app.list_groups(&a, "").await;
    assert_eq!(list.listed("id"), [kept], "{}", list.text);
    let mine = app.list_user_groups(&a, &u, "").await;
    assert!(mine.listed("id").is_empty(), "{}", mine.text);
}

#[tokio::test]
async fn three_leaves_whose_ancestor_is_gone_merge_into_one() {
    let couch = Couch::new();
    let app = couch_app().await;
    let a = app.create_account(None).await;
    let u = a.user_id.clone();
    // The shared ancestor `1-a…` was compacted away: only its id is known.
    let gone = rev(1, 'a');
    let template = stored_group(&app, &couch, &a, json!({"name": "Template"})).await;
    let id = DocId::generate().to_string();
    let mut base = template.doc.clone();
    base["_id"] = json!(id);
    base["name"] = json!("Trio");
    base["pvt_alphanum_name"] = json!("trio");
    let t = template.modified;
    couch
        .replicate(
            &a,
            vec![
                leaf(&base, 2, 'b', &[&gone],
                     json!({"endpoints": {u.clone(): {"type": "user"}}, "pvt_modified": t})),
                leaf(&base, 2, 'c', &[&gone],
                     json!({"endpoints": {"d1": {"type": "device"}}, "pvt_modified": t})),
                leaf(&base, 2, 'e', &[&gone],
                     json!({"endpoints": {"d2": {"type": "device"}}, "flags": ["vip"], "pvt_modified": t})),
            ],
        )
        .await;
    let conflicts = couch.doc(&a, &id).await["_conflicts"].clone();
    assert_eq!(conflicts.as_array().map(Vec::len), Some(2), "{conflicts}");
    let resp = app.get_group(&a, &id).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let endpoints = resp.json["data"]["endpoints"].as_object().unwrap();
    assert_eq!(endpoints.len(), 3, "{}", resp.text);
    assert_eq!(resp.json["data"]["flags"], json!(["vip"]));
    resolved(&couch, &a, &id).await;
    let mine = app.list_user_groups(&a, &u, "").await;
    assert_eq!(mine.listed("id"), [id.as_str()], "{}", mine.text);
    let list = app.list_groups(&a, "paginate=false").await;
    let trio: Vec<&Value> = list.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["id"] == id.as_str())
        .collect();
    assert_eq!(trio.len(), 1, "{}", list.text);
    assert_eq!(trio[0]["endpoints"], 3);
}

#[tokio::test]
async fn a_patch_of_a_conflicted_group_applies_to_the_merged_group() {
    let Conflicted {
        couch, app, a, id, ..
    } = conflicted(json!({"name": "G"}), |base| {
        let t = base.modified;
        vec![
            base.edit('b', json!({"flags": ["b"], "pvt_modified": t + 1})),
            base.edit(
                'c',
                json!({"music_on_hold": {"media_id": "m"}, "pvt_modified": t + 1}),
            ),
        ]
    })
    .await;
    let resp = app.patch_group(&a, &id, json!({"name": "Patched"})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let data = &resp.json["data"];
    assert_eq!(
        (&data["name"], &data["flags"], &data["music_on_hold"]),
        (&json!("Patched"), &json!(["b"]), &json!({"media_id": "m"})),
        "{}",
        resp.text
    );
    let stored = resolved(&couch, &a, &id).await;
    assert_eq!(stored["_rev"], resp.revision());
    assert_eq!(
        generation(resp.revision()),
        4,
        "the merge, then the patch on it"
    );
}

#[tokio::test]
async fn a_soft_delete_on_one_node_holds_against_an_edit_on_another() {
    let Conflicted {
        couch, app, a, id, ..
    } = conflicted(json!({"name": "G"}), |base| {
        let t = base.modified;
        vec![
            // CouchDB's winner is the edit.
            base.edit('f', json!({"name": "Edited", "pvt_modified": t + 1})),
            base.edit('1', json!({"pvt_deleted": true, "pvt_modified": t + 1})),
        ]
    })
    .await;
    let resp = app.get_group(&a, &id).await;
    assert_eq!(resp.status, 404, "{}", resp.text);
    let stored = resolved(&couch, &a, &id).await;
    assert_eq!(stored["pvt_deleted"], true, "{stored}");
    assert_eq!(
        stored["name"], "Edited",
        "the edit is kept in the soft-deleted group"
    );
    let list = app.list_groups(&a, "").await;
    assert!(list.listed("id").is_empty(), "{}", list.text);
}

#[tokio::test]
async fn two_instances_resolving_the_same_conflict_converge_on_one_revision() {
    let couch = Couch::new();
    let app = couch_app().await;
    let a = app.create_account(None).await;
    let base = stored_group(&app, &couch, &a, json!({"name": "Race"})).await;
    let id = base.id.clone();
    let t = base.modified;
    let backend = Backend::CouchDb { url: couchdb_url() };
    let first = ServerProcess::start(&backend, &[]);
    let second = ServerProcess::start(&backend, &[]);
    couch
        .replicate(
            &a,
            (0..4)
                .map(|i| {
                    let tag = char::from(b'b' + i);
                    base.edit(tag, json!({"endpoints": {format!("d{i}"): {"type": "device"}}, "pvt_modified": t + 1}))
                })
                .collect(),
        )
        .await;
    let http = reqwest::Client::new();
    let get = |server: &ServerProcess| {
        http.get(format!("{}{}", server.base(), a.group_path(&id)))
            .header("x-auth-token", &a.token)
            .send()
    };
    let (one, two) = tokio::join!(get(&first), get(&second));
    for resp in [one.unwrap(), two.unwrap()] {
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["data"]["endpoints"].as_object().map(Map::len),
            Some(4),
            "{body}"
        );
    }
    let stored = resolved(&couch, &a, &id).await;
    // One merge: the instance that lost the race found nothing left to do, or, having read
    // between the other's merge and its tombstones, wrote the merge once more (a resolution
    // closes leaves only after a revision of its own).
    let merged = generation(stored["_rev"].as_str().unwrap());
    assert!(merged == 3 || merged == 4, "{stored}");
    let leaves = couch.leaves(&a, &id).await;
    assert_eq!(
        leaves.len(),
        4,
        "the merge and three tombstones: {leaves:?}"
    );
    // Nothing moves afterwards: neither instance finds more to do.
    let settled = eventually(
        || app.get_group(&a, &id),
        |r| r.revision() != stored["_rev"].as_str().unwrap(),
    )
    .await;
    assert_eq!(settled.revision(), stored["_rev"].as_str().unwrap());
    drop((first, second));
}

#[tokio::test]
async fn the_embedded_store_has_one_leaf_and_checks_each_bulk_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let db = AccountId::parse("4b31dd1d32ce6d249897c06332375d65")
        .unwrap()
        .db();
    store.create_db(&db).await.unwrap();
    let id = DocId::parse("g1").unwrap();
    assert!(store.leaves(&db, &id).await.unwrap().is_empty());
    let first = store
        .put_doc(&db, &id, &json!({"_id": "g1", "name": "a"}))
        .await
        .unwrap();
    let leaves = store.leaves(&db, &id).await.unwrap();
    assert_eq!(leaves.len(), 1);
    assert_eq!(
        (leaves[0].rev.as_str(), leaves[0].deleted),
        (first.as_str(), false)
    );
    assert_eq!(
        store.get_rev(&db, &id, &first).await.unwrap().unwrap()["name"],
        "a"
    );
    let results = store
        .bulk_docs(
            &db,
            &[
                json!({"_id": "g1", "_rev": first, "name": "b"}),
                json!({"_id": "g1", "_rev": first, "_deleted": true}),
            ],
        )
        .await
        .unwrap();
    let second = results[0].as_ref().unwrap().clone();
    assert!(matches!(results[1], Err(StoreError::Conflict)));
    // Only the current revision's body is kept, as after a compaction.
    assert!(store.get_rev(&db, &id, &first).await.unwrap().is_none());
    assert_eq!(
        store.get_doc(&db, &id).await.unwrap().unwrap()["_rev"],
        second
    );
}

/// A resolver of its own over the test's CouchDB, as another kz-groups instance runs one: tests
/// drive its two steps (read every leaf, then write) around other writes.
fn resolver() -> std::sync::Arc<kz_groups::resolver::Resolver> {
    let store = kz_groups::startup::store(&config_for(Backend::CouchDb { url: couchdb_url() }))
        .expect("the test CouchDB");
    std::sync::Arc::new(kz_groups::resolver::Resolver::new(
        store,
        std::sync::Arc::new(kz_groups::notices::LogNotifier),
        std::sync::Arc::new(kz_groups::metrics::Metrics::new()),
    ))
}

/// A conflicted group the test's own resolvers alone act on: in a database of its own that is
/// no account database, which no running kz-groups follows (on a real CouchDB every instance
/// of the suite follows `_db_updates`, and would resolve it under the test's feet).
struct Private {
    couch: Couch,
    db: kz_groups::domain::ids::DbName,
    id: DocId,
    /// The group's first revision, which the leaves grow from.
    base: Value,
}

impl Private {
    async fn new() -> Self {
        let couch = Couch::new();
        let name: &'static str =
            Box::leak(format!("kz_groups_resolver_test_{}", random_hex(8)).into_boxed_str());
        let db = kz_groups::domain::ids::DbName::system(name);
        let created = couch
            .call(reqwest::Method::PUT, format!("{}{name}", couch.base), None)
            .await;
        assert_eq!(created["ok"], true, "{created}");
        let id = DocId::parse(&random_hex(16)).unwrap();
        let mut base =
            json!({"_id": id.as_str(), "pvt_type": "group", "name": "Sales", "endpoints": {}});
        base.as_object_mut().unwrap().extend(history(1, 'a', &[]));
        let private = Self {
            couch,
            db,
            id,
            base,
        };
        private.replicate(vec![private.base.clone()]).await;
        private
    }

    fn base_rev(&self) -> String {
        rev(1, 'a')
    }

    /// A leaf `generation-tag` over `parents` (newest first) with `endpoints` as its members.
    fn leaf(
        &self,
        from: &Value,
        generation: u64,
        tag: char,
        parents: &[&str],
        keys: &[&str],
    ) -> Value {
        let endpoints: Map<String, Value> = keys
            .iter()
            .map(|k| (k.to_string(), json!({"type": "device"})))
            .collect();
        leaf(
            from,
            generation,
            tag,
            parents,
            json!({"endpoints": endpoints}),
        )
    }

    async fn replicate(&self, docs: Vec<Value>) {
        let url = format!("{}{}/_bulk_docs", self.couch.base, self.db.encoded());
        self.couch.replicate_into(&url, docs).await;
    }

    /// Every leaf, and the winner as CouchDB serves it.
    async fn state(&self) -> (Vec<Value>, Value) {
        let url = |q: &str| {
            format!(
                "{}{}/{}?{q}",
                self.couch.base,
                self.db.encoded(),
                self.id.as_str()
            )
        };
        let leaves = self
            .couch
            .call(reqwest::Method::GET, url("open_revs=all"), None)
            .await;
        let leaves = leaves
            .as_array()
            .unwrap_or_else(|| panic!("open_revs answer: {leaves}"))
            .iter()
            .filter_map(|a| a.get("ok").cloned())
            .collect();
        let doc = self
            .couch
            .call(reqwest::Method::GET, url("conflicts=true"), None)
            .await;
        (leaves, doc)
    }

    /// The winner, once CouchDB holds one live leaf and no `_conflicts`.
    async fn settled(&self) -> Value {
        let (leaves, doc) = self.state().await;
        let live = leaves
            .iter()
            .filter(|l| l.get("_deleted") != Some(&Value::Bool(true)))
            .count();
        assert!(
            live == 1 && doc.get("_conflicts").is_none(),
            "still in conflict: {leaves:?}"
        );
        doc
    }
}

fn endpoint_keys(doc: &Value) -> Vec<String> {
    let mut keys: Vec<String> = doc["endpoints"]
        .as_object()
        .map(|e| e.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

/// Issue 16: a resolution closed the loser `b`, but another copy had taken a PATCH on `b`
/// first (leaf `e`, acknowledged; replication brings it here after the tombstone). `b` is then
/// both a closed leaf's parent and the live `e`'s ancestor: the next resolution must merge `e`,
/// not take the resolution's tombstone for a delete of the group.
#[tokio::test]
async fn a_patch_made_on_another_copy_of_a_leaf_a_resolution_closed_is_kept() {
    let g = Private::new().await;
    let base = g.base_rev();
    let b = g.leaf(&g.base, 2, 'b', &[&base], &["kb"]);
    let c = g.leaf(&g.base, 2, 'c', &[&base], &["kc"]);
    g.replicate(vec![b.clone(), c]).await;
    let (first, second) = (resolver(), resolver());
    let resolved = first.resolve(&g.db, &g.id).await.unwrap();
    assert!(matches!(resolved, Resolved::Merged(_)), "{resolved:?}");
    // The PATCH another node took on `b` before the tombstone reached its copy.
    let patch = g.leaf(&b, 3, 'e', &[&rev(2, 'b'), &base], &["kb", "ke"]);
    g.replicate(vec![patch]).await;

    second.resolve(&g.db, &g.id).await.unwrap();
    let doc = g.settled().await;
    assert_ne!(doc.get("_deleted"), Some(&Value::Bool(true)), "{doc}");
    assert_eq!(endpoint_keys(&doc), ["kb", "kc", "ke"], "{doc}");
}

/// Issue 16: one resolver reads the leaves, a sibling arrives (internal replication), another
/// resolver reads all three and resolves; the first then writes from its older reading. It
/// closes nothing it did not merge, and what everyone acknowledged is there in the end.
#[tokio::test]
async fn a_leaf_arriving_between_one_resolvers_read_and_its_write_is_neither_closed_nor_lost() {
    let g = Private::new().await;
    let base = g.base_rev();
    g.replicate(vec![
        g.leaf(&g.base, 2, 'b', &[&base], &["kb"]),
        g.leaf(&g.base, 2, 'c', &[&base], &["kc"]),
    ])
    .await;
    let (first, second) = (resolver(), resolver());
    let stale = first.read_leaves(&g.db, &g.id).await.unwrap();
    assert_eq!(stale.leaves.len(), 2);
    // `d` arrives; the second resolver sees it (the winner now) and resolves b, c and d.
    g.replicate(vec![g.leaf(&g.base, 2, 'd', &[&base], &["kd"])])
        .await;
    second.resolve(&g.db, &g.id).await.unwrap();
    // Then `a0…` (the smallest hash) arrives after both read.
    g.replicate(vec![g.leaf(&g.base, 2, '0', &[&base], &["k0"])])
        .await;
    // The first writes from its reading of b and c: `c` is closed already, so CouchDB refuses
    // its merge on `c`, and it closes nothing.
    let outcome = first.write_resolution(&g.db, &g.id, &stale).await;
    assert!(matches!(outcome, Err(StoreError::Conflict)), "{outcome:?}");
    // `0` is merged by the next resolution.
    first.resolve(&g.db, &g.id).await.unwrap();
    let doc = g.settled().await;
    assert_eq!(endpoint_keys(&doc), ["k0", "kb", "kc", "kd"], "{doc}");
}

/// Issue 16: a resolution cut short after its merge (the loser never closed) is finished by the
/// next one with a revision of its own before it closes anything; its tombstone names it.
#[tokio::test]
async fn a_resolution_closes_a_leaf_only_after_writing_the_revision_that_holds_it() {
    let g = Private::new().await;
    let base = g.base_rev();
    let c = g.leaf(&g.base, 2, 'c', &[&base], &["kc"]);
    g.replicate(vec![
        g.leaf(&g.base, 2, 'b', &[&base], &["kb"]),
        // 3-f merged b into c; the tombstone of b was never written.
        g.leaf(&c, 3, 'f', &[&rev(2, 'c'), &base], &["kb", "kc"]),
    ])
    .await;
    let resolved = resolver().resolve(&g.db, &g.id).await.unwrap();
    let Resolved::Merged(written) = resolved else {
        panic!("{resolved:?}")
    };
    assert_eq!(generation(&written), 4, "a revision of its own, on 3-f");
    let doc = g.settled().await;
    assert_eq!(doc["_rev"], written.as_str());
    assert_eq!(endpoint_keys(&doc), ["kb", "kc"]);
    let (leaves, _) = g.state().await;
    let closed = leaves
        .into_iter()
        .find(|l| l["_deleted"] == true)
        .expect("b's tombstone");
    assert_eq!(closed[kz_groups::resolver::MERGED_INTO], written.as_str());
}

#[tokio::test]
async fn a_resolution_is_one_history_entry_naming_the_merged_leaves() {
    let Conflicted {
        couch, app, a, id, ..
    } = conflicted(json!({"name": "G"}), |base| {
        let t = base.modified;
        vec![
            base.edit('b', json!({"flags": ["b"], "pvt_modified": t + 1})),
            base.edit('c', json!({"name": "H", "pvt_modified": t + 1})),
        ]
    })
    .await;
    assert_eq!(app.get_group(&a, &id).await.status, 200);
    let stored = resolved(&couch, &a, &id).await;
    let merged = stored["_rev"].as_str().unwrap().to_owned();
    let path = format!("{}/history", a.group_path(&id));
    let deadline = Instant::now() + Duration::from_secs(10);
    let entries = loop {
        let resp = app.with_token(&a.token).request("GET", &path).send().await;
        let entries = resp.json["data"].as_array().cloned().unwrap_or_default();
        if entries.iter().any(|e| e["action"] == "resolved") || Instant::now() > deadline {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let resolutions: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "resolved")
        .collect();
    assert_eq!(resolutions.len(), 1, "{entries:?}");
    let entry = resolutions[0];
    assert_eq!(entry["rev_after"], merged.as_str(), "{entry}");
    assert_eq!(entry["actor"], json!({"kind": "kz_groups"}));
    let leaves: Vec<&str> = entry["merged_leaves"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(leaves.contains(&rev(2, 'b').as_str()), "{entry}");
    assert!(leaves.contains(&rev(2, 'c').as_str()), "{entry}");
}
