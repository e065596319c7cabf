//! Kazoo's document-change notices on the real RabbitMQ (`KZ_TEST_AMQP_URL`): every case of
//! amqp-notices §6 that needs no Kazoo node, on whichever store the suite runs against. Each test
//! binds its own exclusive queue to its own accounts' routing keys, so tests run in parallel.
use std::collections::{HashMap, HashSet};

use kz_groups::config::{check_node_name, Backend};
use lapin::{Connection, ConnectionProperties};
use serde_json::{json, Value};

use crate::helpers::bus::{
    close_connections_named, db_word, declare_kazoo_exchange, FaultyLink, Listener, Message, Vhost,
    ARRIVAL, QUIET,
};
use crate::helpers::{cli, generation, Account, Response, TestApp};

/// Every message must be one Kazoo's consumers accept (§3.3, §4, §6.2, §6.15).
fn assert_kazoo_message(m: &Message) {
    assert_eq!(m.exchange, "configuration");
    let p = &m.properties;
    assert_eq!(
        p.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert!(p.content_encoding().is_none(), "no content_encoding");
    assert!(p.headers().is_none(), "no AMQP header table");
    assert!(p.delivery_mode().is_none(), "transient, as Kazoo sends");
    assert!(p.message_id().is_none());
    assert!(
        p.timestamp().is_some(),
        "Kazoo stamps Gregorian microseconds"
    );
    // Compact JSON: the body is exactly its own compact re-encoding (key order kept).
    assert_eq!(
        String::from_utf8(m.body.clone()).unwrap(),
        m.json.to_string(),
        "compact JSON object"
    );
    let body = m.json.as_object().expect("a JSON object");
    for key in [
        "App-Name",
        "App-Version",
        "Event-Category",
        "Event-Name",
        "Msg-ID",
        "ID",
        "Database",
    ] {
        assert!(
            body.get(key).is_some_and(|v| !v.is_null()),
            "{key} required: {body:?}"
        );
    }
    assert_eq!(body["Event-Category"], "configuration");
    assert!(["doc_edited", "doc_created", "doc_deleted", "db_created"]
        .contains(&body["Event-Name"].as_str().unwrap()));
    assert!(body["ID"].is_string());
    assert!(body.get("Rev").is_none_or(Value::is_string));
    assert!(body.get("Is-Soft-Deleted").is_none_or(Value::is_boolean));
    let msg_id = body["Msg-ID"].as_str().unwrap();
    assert!(
        msg_id.len() == 32
            && msg_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "Msg-ID {msg_id}"
    );
    let node = body["Node"].as_str().unwrap();
    assert!(check_node_name(node.to_owned()).is_ok(), "Node {node}");
    assert!(body.get("Server-ID").is_none());
}

fn doc_key(action: &str, account: &Account, id: &str) -> String {
    format!("{action}.{}.group.{id}", db_word(&account.id))
}

fn any_doc_of(account: &Account) -> String {
    format!("*.{}.*.*", db_word(&account.id))
}

/// The revision a write answered 200 with.
fn written(resp: Response) -> String {
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.json["revision"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn raw(app: &TestApp, a: &Account, id: &str) -> Value {
    app.read_doc(a, id).await.expect("stored doc")
}

/// The revision of a hard-deleted document's tombstone, read from the store itself.
async fn tombstone_rev(app: &TestApp, a: &Account, id: &str) -> String {
    let db = db_word(&a.id);
    match &app.config.backend {
        Backend::CouchDb { url } => {
            let url = format!("{url}/{}/{}?open_revs=all", db, id);
            let rows: Value = reqwest::Client::new()
                .get(url)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let doc = &rows[0]["ok"];
            assert_eq!(doc["_deleted"], json!(true), "{rows}");
            doc["_rev"].as_str().unwrap().to_owned()
        }
        Backend::Embedded { dir } => {
            let conn = rusqlite::Connection::open(dir.join("kz-groups.sqlite3")).unwrap();
            let unencoded = db.replace("%2F", "/");
            let (rev, deleted): (String, bool) = conn
                .query_row(
                    "SELECT rev, deleted FROM docs WHERE db = ?1 AND id = ?2",
                    [&unencoded, id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .unwrap();
            assert!(deleted);
            rev
        }
    }
}

#[tokio::test]
async fn create_publishes_one_doc_created_exactly_as_kazoo_does() {
    let app = TestApp::spawn_with_bus().await;
    let a = app.create_account(None).await;
    let mut q = Listener::bind(&[doc_key("doc_created", &a, "*")]).await;
    let group = app.add_group(&a, json!({"name": "G1"})).await;
    let (id, rev) = (group.id, group.revision);
    let m = q.expect(1).await.remove(0);
    assert_kazoo_message(&m);
    assert_eq!(m.routing_key, doc_key("doc_created", &a, &id));
    let b = &m.json;
    assert_eq!(b["Event-Name"], "doc_created");
    assert_eq!(b["Event-Category"], "configuration");
    assert_eq!(b["ID"], id.as_str());
    assert_eq!(b["Database"], db_word(&a.id));
    assert_eq!(b["Type"], "group");
    assert_eq!(b["Account-ID"], a.id.as_str());
    assert_eq!(b["Is-Soft-Deleted"], json!(false));
    assert_eq!(b["Rev"], rev.as_str());
    assert!(rev.starts_with("1-"));
    assert_eq!(b["App-Name"], "datamgr");
    assert_eq!(b["App-Version"], "4.0.0");
    assert_eq!(b["Origin-Cache"], "kazoo_data_cache");
    assert_eq!(b["Node"], app.config.node_name.as_str());
    // §6.3: the swapped dates, as integers.
    let doc = raw(&app, &a, &id).await;
    assert!(b["Date-Modified"].is_u64() && b["Date-Created"].is_u64());
    assert_eq!(b["Date-Modified"], doc["pvt_created"]);
    assert_eq!(b["Date-Created"], doc["pvt_modified"]);
    // A second message has another Msg-ID.
    app.add_group(&a, json!({"name": "G2"})).await;
    let second = q.expect(1).await.remove(0);
    assert_ne!(second.json["Msg-ID"], b["Msg-ID"]);
}

#[tokio::test]
async fn post_and_patch_publish_doc_edited_with_the_new_revision() {
    let app = TestApp::spawn_with_bus().await;
    let a = app.create_account(None).await;
    let id = app.add_group(&a, json!({"name": "G1"})).await.id;
    let created = raw(&app, &a, &id).await;
    let mut q = Listener::bind(&[doc_key("doc_edited", &a, &id)]).await;

    let rev = written(app.update_group(&a, &id, json!({"name": "G1b"})).await);
    let m = q.expect(1).await.remove(0);
    assert_kazoo_message(&m);
    assert_eq!(m.routing_key, doc_key("doc_edited", &a, &id));
    assert_eq!(m.json["Event-Name"], "doc_edited");
    assert_eq!(m.json["Is-Soft-Deleted"], json!(false));
    assert!(rev.starts_with("2-"));
    assert_eq!(m.json["Rev"], rev.as_str());
    let doc = raw(&app, &a, &id).await;
    assert_eq!(m.json["Date-Created"], doc["pvt_modified"]);
    assert_eq!(m.json["Date-Modified"], created["pvt_created"]);

    let rev = written(app.patch_group(&a, &id, json!({"flags": ["f"]})).await);
    let m = q.expect(1).await.remove(0);
    assert_kazoo_message(&m);
    assert_eq!(m.json["Event-Name"], "doc_edited");
    assert!(rev.starts_with("3-"));
    assert_eq!(m.json["Rev"], rev.as_str());
}

#[tokio::test]
async fn soft_delete_publishes_doc_deleted_with_the_revision_after_the_delete() {
    let app = TestApp::spawn_with_bus().await;
    let a = app.create_account(None).await;
    let mut deleted = Listener::bind(&[doc_key("doc_deleted", &a, "*")]).await;
    let mut all = Listener::bind(&[any_doc_of(&a)]).await;
    let id = app.add_group(&a, json!({"name": "G1"})).await.id;
    // The create's own notice is sent after its answer: taken first, so it is not the extra.
    all.expect(1).await;
    let answered = written(app.delete_group(&a, &id).await);
    let m = deleted.expect(1).await.remove(0);
    assert_kazoo_message(&m);
    assert_eq!(m.routing_key, doc_key("doc_deleted", &a, &id));
    assert_eq!(m.json["Event-Name"], "doc_deleted");
    assert_eq!(m.json["Is-Soft-Deleted"], json!(true));
    let doc = raw(&app, &a, &id).await;
    assert_eq!(m.json["Rev"], doc["_rev"]);
    assert_ne!(
        m.json["Rev"],
        answered.as_str(),
        "the answer names the rev before"
    );
    assert_eq!(m.json["Date-Created"], doc["pvt_modified"]);
    // Nothing else, no doc_edited in particular.
    let only = all.expect(1).await.remove(0);
    assert_eq!(only.routing_key, m.routing_key);
}

#[tokio::test]
async fn hard_delete_publishes_doc_deleted_with_the_tombstone_revision() {
    let app = TestApp::spawn_with_bus().await;
    let a = app.create_account(None).await;
    let mut q = Listener::bind(&[any_doc_of(&a)]).await;
    let id = app.add_group(&a, json!({"name": "G2"})).await.id;
    q.expect(1).await;
    let before = raw(&app, &a, &id).await;
    let resp = app.hard_delete_group(&a, &id).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let m = q.expect(1).await.remove(0);
    assert_kazoo_message(&m);
    assert_eq!(m.routing_key, doc_key("doc_deleted", &a, &id));
    assert_eq!(m.json["Is-Soft-Deleted"], json!(false));
    assert_eq!(m.json["Rev"], tombstone_rev(&app, &a, &id).await.as_str());
    assert!(m.json["Rev"].as_str().unwrap().starts_with("2-"));
    assert_eq!(m.json["Date-Created"], before["pvt_modified"]);
    assert_eq!(m.json["Date-Modified"], before["pvt_created"]);
}

#[tokio::test]
async fn failed_requests_reads_and_design_documents_publish_nothing() {
    let app = TestApp::spawn_with_bus().await;
    let a = app.create_account(None).await;
    // As in an account Kazoo made: the service installs its design documents on the account's
    // first request, while the listener is bound.
    app.remove_design_doc(&a, "groups").await;
    app.remove_design_doc(&a, "users").await;
    let mut q = Listener::bind(&[any_doc_of(&a)]).await;
    let resp = app.create_group(&a, json!({})).await;
    assert_eq!(resp.status, 400);
    let unknown = kz_groups::domain::ids::random_hex(16);
    let resp = app.update_group(&a, &unknown, json!({"name": "x"})).await;
    assert_eq!(resp.status, 404);
    app.add_group(&a, json!({"name": "x", "id": "my-group"}))
        .await;
    assert_eq!(q.expect(1).await[0].json["ID"], "my-group");
    let resp = app
        .create_group(&a, json!({"name": "x", "id": "my-group"}))
        .await;
    assert_eq!(resp.status, 409);
    let resp = app
        .with_token(&a.token)
        .request("POST", a.group_path("my-group"))
        .header("if-match", "\"1-stale\"")
        .json(&json!({"data": {"name": "y"}}))
        .send()
        .await;
    assert_eq!(resp.status, 412);
    assert_eq!(app.list_groups(&a, "").await.status, 200);
    assert_eq!(app.get_group(&a, "my-group").await.status, 200);
    assert!(
        app.design_doc(&a, "groups").await.is_some(),
        "the design documents were installed meanwhile"
    );
    q.expect_quiet().await;
}

#[tokio::test]
async fn only_group_bindings_receive_group_notices() {
    let app = TestApp::spawn_with_bus().await;
    let a = app.create_account(None).await;
    let db = db_word(&a.id);
    let mut groups = Listener::bind(&[format!("*.{db}.group.*")]).await;
    let mut users = Listener::bind(&[format!("*.{db}.user.*")]).await;
    let id = app.add_group(&a, json!({"name": "G"})).await.id;
    written(app.update_group(&a, &id, json!({"name": "G'"})).await);
    written(app.delete_group(&a, &id).await);
    let got = groups.expect(3).await;
    let events: HashSet<_> = got
        .iter()
        .map(|m| m.json["Event-Name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        events,
        HashSet::from([
            "doc_created".into(),
            "doc_edited".into(),
            "doc_deleted".into()
        ])
    );
    users.expect_quiet().await;
}

#[tokio::test]
async fn the_database_word_is_the_encoded_account_database_only() {
    let app = TestApp::spawn_with_bus().await;
    let a = app.create_account(None).await;
    let b = app.create_account(None).await;
    let raw_db = format!("account/{}/{}/{}", &a.id[..2], &a.id[2..4], &a.id[4..]);
    let mut encoded = Listener::bind(&[any_doc_of(&a)]).await;
    let mut slashed = Listener::bind(&[format!("*.{raw_db}.*.*")]).await;
    let mut lower =
        Listener::bind(&[format!("*.{}.*.*", db_word(&a.id).replace("%2F", "%2f"))]).await;
    let in_a = app.add_group(&a, json!({"name": "A"})).await.id;
    app.add_group(&b, json!({"name": "B"})).await;
    let got = encoded.expect(1).await;
    assert_eq!(got[0].json["ID"], in_a.as_str());
    slashed.expect_quiet().await;
    lower.expect_quiet().await;
}

#[tokio::test]
async fn client_chosen_ids_are_escaped_in_the_routing_key_only() {
    let app = TestApp::spawn_with_bus().await;
    let a = app.create_account(None).await;
    let exact = doc_key("doc_created", &a, "sales%2Eteam+1");
    let mut q = Listener::bind(std::slice::from_ref(&exact)).await;
    app.add_group(&a, json!({"name": "x", "id": "sales.team 1"}))
        .await;
    let m = q.expect(1).await.remove(0);
    assert_kazoo_message(&m);
    assert_eq!(m.routing_key, exact);
    assert_eq!(m.json["ID"], "sales.team 1");
}

#[tokio::test]
async fn the_user_route_and_tunnelled_verbs_announce_like_the_plain_ones() {
    let app = TestApp::spawn_with_bus().await;
    let a = app.create_account(None).await;
    let mut q = Listener::bind(&[any_doc_of(&a)]).await;
    // §6.12: the users route creates a group.
    let admin = app.with_token(&a.token);
    let resp = admin
        .request("PUT", a.user_groups_path(&a.user_id))
        .json(&json!({"data": {"name": "G2"}}))
        .send()
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let id = resp.id().to_owned();
    let m = q.expect(1).await.remove(0);
    assert_kazoo_message(&m);
    assert_eq!(m.routing_key, doc_key("doc_created", &a, &id));
    assert_eq!(m.json["Type"], "group");
    // §6.13: POST ?verb=PUT creates, POST {"verb":"DELETE"} soft-deletes.
    let resp = admin
        .request("POST", format!("{}?verb=PUT", a.groups_path()))
        .json(&json!({"data": {"name": "T"}}))
        .send()
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let tunnelled = resp.id().to_owned();
    let m = q.expect(1).await.remove(0);
    assert_eq!(m.routing_key, doc_key("doc_created", &a, &tunnelled));
    assert!(m.json["Rev"].as_str().unwrap().starts_with("1-"));
    let resp = admin
        .request("POST", a.group_path(&tunnelled))
        .json(&json!({"data": {}, "verb": "DELETE"}))
        .send()
        .await;
    written(resp);
    let m = q.expect(1).await.remove(0);
    assert_kazoo_message(&m);
    assert_eq!(m.routing_key, doc_key("doc_deleted", &a, &tunnelled));
    assert_eq!(m.json["Is-Soft-Deleted"], json!(true));
    assert_eq!(m.json["Rev"], raw(&app, &a, &tunnelled).await["_rev"]);
}

#[tokio::test]
async fn concurrent_writes_publish_one_notice_each() {
    let app = TestApp::spawn_with_bus().await;
    let a = app.create_account(None).await;
    let mut q = Listener::bind(&[any_doc_of(&a)]).await;
    let mut existing = Vec::new();
    for n in 0..10 {
        existing.push(
            app.add_group(&a, json!({ "name": format!("old {n}") }))
                .await
                .id,
        );
    }
    q.expect(10).await;
    let creates = (0..10).map(|n| app.add_group(&a, json!({ "name": format!("new {n}") })));
    let edits = existing
        .iter()
        .map(|id| async { written(app.update_group(&a, id, json!({"name": "edited"})).await) });
    let (created, _) = futures::join!(
        futures::future::join_all(creates),
        futures::future::join_all(edits)
    );
    let got = q.expect(20).await;
    let pairs: HashSet<(String, String)> = got
        .iter()
        .map(|m| {
            assert_kazoo_message(m);
            (
                m.json["ID"].as_str().unwrap().to_owned(),
                m.json["Rev"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(pairs.len(), 20, "each (ID, Rev) once");
    let mut expected = HashSet::new();
    for id in existing.iter().chain(created.iter().map(|group| &group.id)) {
        let rev = raw(&app, &a, id).await["_rev"].as_str().unwrap().to_owned();
        expected.insert((id.clone(), rev));
    }
    assert_eq!(pairs, expected);
}

#[tokio::test]
async fn without_an_amqp_url_nothing_is_published() {
    let app = TestApp::spawn().await;
    assert!(app.config.amqp.is_none());
    let a = app.create_account(None).await;
    let mut q = Listener::bind(&[any_doc_of(&a)]).await;
    app.add_group(&a, json!({"name": "G"})).await;
    q.expect_quiet().await;
    let ready = app.probe("/readyz").await;
    assert_eq!(ready.json["amqp"], json!({"enabled": false}));
}

/// §6.16: the service declares `configuration` exactly as Kazoo does, on a broker where it does
/// not exist yet, and publishes where Kazoo declared it first.
#[tokio::test]
async fn the_exchange_is_declared_exactly_as_kazoo_declares_it() {
    let empty = Vhost::create();
    let app = TestApp::spawn_with_bus_at(&empty.url()).await;
    wait_connected(&app).await;
    let conn = Connection::connect(&empty.url(), ConnectionProperties::default())
        .await
        .unwrap();
    // Kazoo's own declaration is accepted...
    declare_kazoo_exchange(&conn.create_channel().await.unwrap())
        .await
        .expect("Kazoo's declare succeeds");
    // ...and it is the only one: durable or auto-delete ones are refused as inequivalent.
    for (durable, auto_delete) in [(true, false), (false, true)] {
        let channel = conn.create_channel().await.unwrap();
        let refused = channel
            .exchange_declare(
                "configuration",
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions {
                    durable,
                    auto_delete,
                    ..Default::default()
                },
                Default::default(),
            )
            .await;
        assert!(
            refused.is_err(),
            "durable={durable} auto_delete={auto_delete} must be inequivalent"
        );
    }
    let _ = conn.close(200, "done").await;

    // Where Kazoo declared the exchange first, the service publishes into it.
    let kazoo_first = Vhost::create();
    let app = TestApp::spawn_with_bus_at(&kazoo_first.url()).await;
    let a = app.create_account(None).await;
    let mut q = Listener::bind_at(&kazoo_first.url(), &[any_doc_of(&a)]).await;
    let id = app.add_group(&a, json!({"name": "G"})).await.id;
    let m = q.expect(1).await.remove(0);
    assert_eq!(m.routing_key, doc_key("doc_created", &a, &id));
    q.close().await;
}

async fn ready(app: &TestApp) -> Value {
    let resp = app.probe("/readyz").await;
    assert_eq!(resp.status, 200, "the bus never makes the service unready");
    resp.json
}

/// Bounded wait until `/readyz` reports the bus state wanted.
async fn wait_bus(app: &TestApp, connected: bool) -> Value {
    for _ in 0..200 {
        let body = ready(app).await;
        if body["amqp"]["connected"] == json!(connected) {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "the bus never became connected={connected}: {}",
        ready(app).await
    );
}

async fn wait_connected(app: &TestApp) -> Value {
    wait_bus(app, true).await
}

/// Notices (by ID, in arrival order) until every id in `ids` has been seen, waiting at most
/// `wait` for each next message.
async fn collect_ids(q: &mut Listener, ids: &HashSet<String>) -> Vec<Message> {
    let mut got = Vec::new();
    let mut seen = HashSet::new();
    while !ids.is_subset(&seen) {
        match q.next_within(std::time::Duration::from_secs(20)).await {
            Some(m) => {
                seen.insert(m.json["ID"].as_str().unwrap_or_default().to_owned());
                got.push(m);
            }
            None => break,
        }
    }
    let missing: Vec<_> = ids.difference(&seen).collect();
    assert!(missing.is_empty(), "notices never arrived for {missing:?}");
    got
}

#[tokio::test]
async fn a_connection_closed_by_the_broker_loses_no_notice() {
    let app = TestApp::spawn_with_bus().await;
    let body = wait_connected(&app).await;
    assert_eq!(body["amqp"]["enabled"], json!(true));
    let a = app.create_account(None).await;
    let mut q = Listener::bind(&[any_doc_of(&a)]).await;
    let name = format!("kz-groups {}", app.config.node_name);
    let mut ids = HashSet::new();
    let mut closed = 0;
    for n in 0..40 {
        if n == 10 || n == 25 {
            let name = name.clone();
            closed += tokio::task::spawn_blocking(move || close_connections_named(&name))
                .await
                .unwrap();
        }
        // Every write is answered 2xx whatever the bus is doing.
        ids.insert(
            app.add_group(&a, json!({ "name": format!("g{n}") }))
                .await
                .id,
        );
    }
    assert!(closed >= 1, "the broker closed the service's connection");
    let got = collect_ids(&mut q, &ids).await;
    for m in &got {
        assert_kazoo_message(m);
    }
    wait_connected(&app).await;
}

#[tokio::test]
async fn notices_held_through_an_outage_arrive_in_write_order_afterwards() {
    let link = FaultyLink::start().await;
    let app = TestApp::spawn_with_bus_at(&link.url()).await;
    wait_connected(&app).await;
    let a = app.create_account(None).await;
    let mut q = Listener::bind(&[any_doc_of(&a)]).await;

    link.cut();
    wait_bus(&app, false).await;
    let g = app.add_group(&a, json!({"name": "v1"})).await.id;
    let mut ids = HashSet::from([g.clone()]);
    for n in 2..=6 {
        written(
            app.patch_group(&a, &g, json!({"name": format!("v{n}")}))
                .await,
        );
    }
    for n in 0..10 {
        ids.insert(
            app.add_group(&a, json!({ "name": format!("other {n}") }))
                .await
                .id,
        );
    }
    let body = ready(&app).await;
    assert_eq!(body["amqp"]["connected"], json!(false));
    assert_eq!(body["amqp"]["queued"], json!(16), "{body}");
    assert!(q.next_within(QUIET).await.is_none());

    link.restore();
    let got = collect_ids(&mut q, &ids).await;
    // Read on until all six of g's notices are in (duplicates allowed, never reordered).
    let mut got = got;
    while got.iter().filter(|m| m.json["ID"] == g.as_str()).count() < 6 {
        match q.next_within(ARRIVAL).await {
            Some(m) => got.push(m),
            None => break,
        }
    }
    let revs: Vec<u64> = got
        .iter()
        .filter(|m| m.json["ID"] == g.as_str())
        .map(|m| {
            assert_kazoo_message(m);
            generation(m.json["Rev"].as_str().unwrap())
        })
        .collect();
    let mut first_seen: Vec<u64> = Vec::new();
    for r in &revs {
        if !first_seen.contains(r) {
            first_seen.push(*r);
        }
    }
    assert_eq!(
        first_seen,
        vec![1, 2, 3, 4, 5, 6],
        "write order kept: {revs:?}"
    );
    let body = wait_connected(&app).await;
    assert_eq!(body["amqp"]["dropped"], json!(0));
    let per_event: HashMap<String, usize> = got.iter().fold(HashMap::new(), |mut acc, m| {
        *acc.entry(m.json["Event-Name"].as_str().unwrap().to_owned())
            .or_default() += 1;
        acc
    });
    assert!(per_event["doc_created"] >= 11 && per_event["doc_edited"] >= 5);
}

/// §1.6 and Kazoo's account creation: the new database, then the account doc in it and its copy
/// in `accounts`, each announced once; the design documents not at all. On a vhost of its own,
/// since the new account's id (hence its routing keys) is only known afterwards.
#[tokio::test]
async fn accounts_create_announces_the_database_and_both_account_docs() {
    let vhost = Vhost::create();
    let mut q = Listener::bind_at(&vhost.url(), &["#".into()]).await;
    let app = TestApp::spawn().await;
    let parent = app.create_account(None).await;
    let name = format!("Bus {}", kz_groups::domain::ids::random_hex(4));
    let mut cmd = cli::command(
        &app.config.backend,
        &[
            "accounts", "create", "--name", &name, "--parent", &parent.id,
        ],
    );
    cmd.env("KZ_GROUPS_AMQP_URL", vhost.url())
        .env("KZ_GROUPS_NODE", &app.config.node_name);
    let run = tokio::task::spawn_blocking(move || cli::run_command(&mut cmd))
        .await
        .unwrap();
    assert!(run.ok, "{}", run.output);
    let id = run.json["account_id"].as_str().unwrap();
    let db = db_word(id);
    let got = q.expect(3).await;
    for m in &got {
        assert_kazoo_message(m);
    }
    assert_eq!(
        got[0].routing_key,
        format!("db_created.{db}.database.{}", db.replace('%', "%25"))
    );
    assert_eq!(got[0].json["Type"], "database");
    assert_eq!(got[0].json["ID"], db.as_str());
    assert_eq!(got[0].json["Database"], db.as_str());
    assert_eq!(got[0].json["Event-Name"], "db_created");
    assert_eq!(got[1].routing_key, format!("doc_created.{db}.account.{id}"));
    assert_eq!(
        got[2].routing_key,
        format!("doc_created.accounts.account.{id}")
    );
    for m in &got[1..] {
        assert_eq!(m.json["Account-ID"], id);
        assert_eq!(m.json["Type"], "account");
        assert!(m.json["Rev"].as_str().unwrap().starts_with("1-"));
    }
}
