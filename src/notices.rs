//! Kazoo's document-change notices (../shared/kazoo/amqp-notices.md): what a successful write
//! announces (`Change`), and the exact AMQP message it becomes (`Notice`: routing key §2, JSON
//! body §3, properties §4). Delivering them is `bus`'s job; with no bus they are only logged.
use serde_json::{Map, Value};

use crate::domain::clock;
use crate::domain::ids::{random_hex, AccountId, DbName, DocId};

/// The exchange every notice goes to (§2.1).
pub const EXCHANGE: &str = "configuration";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeAction {
    Created,
    Edited,
    Deleted { soft: bool },
}

/// One written document, with the fields of it that the notice carries (§3.1), taken from the
/// document as written (for a hard delete: as it was before the delete).
#[derive(Debug, Clone, PartialEq)]
pub struct DocChange {
    pub db: DbName,
    pub id: DocId,
    /// The revision after the write; for a hard delete, the tombstone's.
    pub rev: String,
    pub action: ChangeAction,
    pub doc_type: Option<String>,
    pub pvt_created: Option<Value>,
    pub pvt_modified: Option<Value>,
    pub pvt_account_id: Option<String>,
}

impl DocChange {
    pub fn written(
        db: DbName,
        id: &DocId,
        doc: &Map<String, Value>,
        rev: &str,
        action: ChangeAction,
    ) -> Self {
        let field = |k: &str| doc.get(k).filter(|v| !v.is_null()).cloned();
        Self {
            db,
            id: id.clone(),
            rev: rev.to_owned(),
            action,
            doc_type: doc
                .get("pvt_type")
                .and_then(Value::as_str)
                .map(str::to_owned),
            pvt_created: field("pvt_created"),
            pvt_modified: field("pvt_modified"),
            pvt_account_id: doc
                .get("pvt_account_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }
}

/// What a successful write announces.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Doc(Box<DocChange>),
    /// A database kz-groups created (`db_created`, §1.6).
    DbCreated(DbName),
}

impl Change {
    /// The database and id a log line names.
    pub fn describe(&self) -> (String, String) {
        match self {
            Change::Doc(doc) => (doc.db.encoded(), doc.id.to_string()),
            Change::DbCreated(db) => (db.encoded(), db.encoded()),
        }
    }
}

/// What the bus looks like from `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusStatus {
    pub connected: bool,
    /// Notices not yet confirmed by the broker.
    pub queued: usize,
    pub capacity: usize,
    /// Notices dropped because the queue was full, since start.
    pub dropped: u64,
}

/// Receives one call per successful write, after the store acknowledged it; never blocks.
pub trait ChangeNotifier: Send + Sync {
    fn announce(&self, change: Change);
    /// `None` when no bus is configured.
    fn bus_status(&self) -> Option<BusStatus> {
        None
    }
}

/// No bus (`KZ_GROUPS_AMQP_URL` unset): the notice is written to the log at debug level.
pub struct LogNotifier;

impl ChangeNotifier for LogNotifier {
    fn announce(&self, change: Change) {
        log::debug!("not published (no KZ_GROUPS_AMQP_URL): {change:?}");
    }
}

/// One AMQP message, ready to publish: built once, so a re-publish after a reconnect sends the
/// very same bytes (same `Msg-ID`).
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub routing_key: String,
    pub body: Vec<u8>,
    /// The AMQP `timestamp` property: Gregorian microseconds (§4).
    pub timestamp: u64,
    /// For logs: the database (encoded) and document id.
    pub db: String,
    pub id: String,
}

impl Notice {
    pub fn build(change: &Change, node: &str) -> Self {
        let timestamp = clock::gregorian_now_micros();
        let (db, id) = change.describe();
        let (routing_key, body) = match change {
            Change::Doc(doc) => (doc_routing_key(doc), doc_body(doc, node)),
            Change::DbCreated(db) => (db_routing_key(db, "created"), db_body(db, "created", node)),
        };
        Self {
            routing_key,
            body: Value::Object(body).to_string().into_bytes(),
            timestamp,
            db,
            id,
        }
    }
}

impl ChangeAction {
    /// The routing key's first word and the `Event-Name` (§1.2).
    fn event_name(self) -> &'static str {
        match self {
            ChangeAction::Created => "doc_created",
            ChangeAction::Edited => "doc_edited",
            ChangeAction::Deleted { .. } => "doc_deleted",
        }
    }
}

/// `kz_amqp_util:encode/1` (§2.3): the id word of a routing key.
pub fn encode_key_word(id: &str) -> String {
    if id.is_empty() || id == "*" || id == "#" {
        return id.to_owned();
    }
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'~' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn doc_routing_key(doc: &DocChange) -> String {
    format!(
        "{}.{}.{}.{}",
        doc.action.event_name(),
        doc.db.encoded(),
        doc.doc_type.as_deref().unwrap_or("undefined"),
        encode_key_word(doc.id.as_str())
    )
}

fn db_routing_key(db: &DbName, action: &str) -> String {
    let name = db.encoded();
    format!("db_{action}.{name}.database.{}", encode_key_word(&name))
}

/// The envelope keys every Kazoo message ends with, in Kazoo's order (§3.1 rows 10-15).
fn envelope(body: &mut Map<String, Value>, node: &str, event: &str, version: &str) {
    body.insert("Node".into(), Value::from(node));
    body.insert("Msg-ID".into(), Value::from(random_hex(16)));
    body.insert("Event-Name".into(), Value::from(event));
    body.insert("Event-Category".into(), Value::from(EXCHANGE));
    body.insert("App-Version".into(), Value::from(version));
    body.insert("App-Name".into(), Value::from("datamgr"));
}

/// The body of §3.1, keys in its order; `Date-Modified` carries `pvt_created` and
/// `Date-Created` `pvt_modified`, swapped as Kazoo swaps them.
fn doc_body(doc: &DocChange, node: &str) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("Origin-Cache".into(), Value::from("kazoo_data_cache"));
    if let Some(t) = &doc.doc_type {
        body.insert("Type".into(), Value::from(t.as_str()));
    }
    body.insert("Rev".into(), Value::from(doc.rev.as_str()));
    body.insert(
        "Is-Soft-Deleted".into(),
        Value::Bool(doc.action == ChangeAction::Deleted { soft: true }),
    );
    if let Some(created) = &doc.pvt_created {
        body.insert("Date-Modified".into(), created.clone());
    }
    if let Some(modified) = &doc.pvt_modified {
        body.insert("Date-Created".into(), modified.clone());
    }
    let account = doc
        .pvt_account_id
        .clone()
        .filter(|a| a.len() == 32)
        .or_else(|| account_of(&doc.db).map(|a| a.to_string()));
    if let Some(account) = account {
        body.insert("Account-ID".into(), Value::from(account));
    }
    body.insert("Database".into(), Value::from(doc.db.encoded()));
    body.insert("ID".into(), Value::from(doc.id.as_str()));
    envelope(&mut body, node, doc.action.event_name(), "4.0.0");
    body
}

/// `db_created`'s body: Kazoo's `Type`/`ID`/`Database` with the same envelope, App-Version
/// `1.0.0` (kzs_publish's database notice), in the order Kazoo's message builder gives them.
fn db_body(db: &DbName, action: &str, node: &str) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("Type".into(), Value::from("database"));
    body.insert("Database".into(), Value::from(db.encoded()));
    body.insert("ID".into(), Value::from(db.encoded()));
    envelope(&mut body, node, &format!("db_{action}"), "1.0.0");
    body
}

fn account_of(db: &DbName) -> Option<AccountId> {
    DbName::parse_account_db(db.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "4b31dd1d32ce6d249897c06332375d65";
    const DB: &str = "account%2F4b%2F31%2Fdd1d32ce6d249897c06332375d65";
    const G: &str = "1743724cd775bf6994380dbc79c1af09";

    fn group(extra: Value) -> Map<String, Value> {
        let mut doc = json!({
            "_id": G, "name": "G", "pvt_type": "group", "pvt_account_id": A,
            "pvt_created": 63880000000u64, "pvt_modified": 63880000060u64,
        });
        for (k, v) in extra.as_object().unwrap() {
            doc[k] = v.clone();
        }
        doc.as_object().unwrap().clone()
    }

    fn keys_of(body: &Value) -> Vec<&str> {
        body.as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect()
    }

    fn gid() -> DocId {
        DocId::parse(G).unwrap()
    }

    fn db() -> DbName {
        AccountId::parse(A).unwrap().db()
    }

    fn notice(action: ChangeAction, doc: Map<String, Value>) -> (String, Value) {
        let change = Change::Doc(Box::new(DocChange::written(
            db(),
            &gid(),
            &doc,
            "2-abc",
            action,
        )));
        let n = Notice::build(&change, "kz-groups@h");
        (n.routing_key, serde_json::from_slice(&n.body).unwrap())
    }

    #[test]
    fn routing_keys_follow_kazoos_examples() {
        for (action, word) in [
            (ChangeAction::Created, "doc_created"),
            (ChangeAction::Edited, "doc_edited"),
            (ChangeAction::Deleted { soft: true }, "doc_deleted"),
            (ChangeAction::Deleted { soft: false }, "doc_deleted"),
        ] {
            let (key, _) = notice(action, group(json!({})));
            assert_eq!(key, format!("{word}.{DB}.group.{G}"));
        }
        let (key, _) = notice(ChangeAction::Edited, group(json!({"pvt_type": null})));
        assert_eq!(key, format!("doc_edited.{DB}.undefined.{G}"));
    }

    #[test]
    fn ids_are_escaped_like_kz_amqp_util_encode() {
        assert_eq!(encode_key_word(G), G);
        assert_eq!(encode_key_word("my.group 1"), "my%2Egroup+1");
        assert_eq!(encode_key_word("Ab-_~.: /%é"), "Ab-_~%2E%3A+%2F%25%C3%A9");
        assert_eq!(encode_key_word("*"), "*");
        assert_eq!(encode_key_word("#"), "#");
    }

    /// The notice of a group created with revision `1-x`, its body as sent, and that body parsed.
    fn created() -> (Notice, String, Value) {
        let doc = group(json!({}));
        let change = Change::Doc(Box::new(DocChange::written(
            db(),
            &gid(),
            &doc,
            "1-x",
            ChangeAction::Created,
        )));
        let n = Notice::build(&change, "kz-groups@h");
        let text = String::from_utf8(n.body.clone()).unwrap();
        let body = serde_json::from_str(&text).unwrap();
        (n, text, body)
    }

    #[test]
    fn the_body_has_kazoos_keys_in_kazoos_order() {
        let (_, _, body) = created();
        assert_eq!(
            keys_of(&body),
            [
                "Origin-Cache",
                "Type",
                "Rev",
                "Is-Soft-Deleted",
                "Date-Modified",
                "Date-Created",
                "Account-ID",
                "Database",
                "ID",
                "Node",
                "Msg-ID",
                "Event-Name",
                "Event-Category",
                "App-Version",
                "App-Name"
            ]
        );
    }

    #[test]
    fn the_body_is_kazoos_byte_for_byte_with_swapped_dates() {
        // Date-Modified carries pvt_created and Date-Created pvt_modified, as Kazoo sends them.
        let (_, text, body) = created();
        let msg_id = body["Msg-ID"].as_str().unwrap();
        let expected = format!(
            "{{\"Origin-Cache\":\"kazoo_data_cache\",\"Type\":\"group\",\"Rev\":\"1-x\",\
             \"Is-Soft-Deleted\":false,\"Date-Modified\":63880000000,\"Date-Created\":63880000060,\
             \"Account-ID\":\"{A}\",\"Database\":\"{DB}\",\"ID\":\"{G}\",\"Node\":\"kz-groups@h\",\
             \"Msg-ID\":\"{msg_id}\",\"Event-Name\":\"doc_created\",\
             \"Event-Category\":\"configuration\",\"App-Version\":\"4.0.0\",\"App-Name\":\"datamgr\"}}"
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn the_msg_id_is_32_lower_case_hex() {
        let (_, _, body) = created();
        let msg_id = body["Msg-ID"].as_str().unwrap();
        assert_eq!(msg_id.len(), 32);
        assert!(msg_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn the_timestamp_is_gregorian_microseconds_of_now() {
        let (n, _, _) = created();
        let now_us = (clock::gregorian_now() as u64) * 1_000_000;
        assert!(n.timestamp.abs_diff(now_us) < 5_000_000, "{}", n.timestamp);
    }

    #[test]
    fn soft_delete_alone_sets_is_soft_deleted() {
        let (_, soft) = notice(ChangeAction::Deleted { soft: true }, group(json!({})));
        assert_eq!(soft["Is-Soft-Deleted"], json!(true));
        assert_eq!(soft["Event-Name"], "doc_deleted");
        let (_, hard) = notice(ChangeAction::Deleted { soft: false }, group(json!({})));
        assert_eq!(hard["Is-Soft-Deleted"], json!(false));
        assert_eq!(hard["Event-Name"], "doc_deleted");
    }

    #[test]
    fn account_id_falls_back_to_the_database() {
        let (_, body) = notice(
            ChangeAction::Edited,
            group(json!({"pvt_account_id": "short"})),
        );
        assert_eq!(body["Account-ID"], A);
        let (_, body) = notice(ChangeAction::Edited, group(json!({"pvt_created": null})));
        assert!(body.get("Date-Modified").is_none());
    }

    #[test]
    fn a_new_account_database_is_announced_as_kazoo_does() {
        let n = Notice::build(&Change::DbCreated(db()), "kz-groups@h");
        assert_eq!(
            n.routing_key,
            format!(
                "db_created.{DB}.database.account%252F4b%252F31%252Fdd1d32ce6d249897c06332375d65"
            )
        );
        let body: Value = serde_json::from_slice(&n.body).unwrap();
        let keys = keys_of(&body);
        assert_eq!(
            keys,
            [
                "Type",
                "Database",
                "ID",
                "Node",
                "Msg-ID",
                "Event-Name",
                "Event-Category",
                "App-Version",
                "App-Name"
            ]
        );
        assert_eq!(body["ID"], DB);
        assert_eq!(body["Event-Name"], "db_created");
    }
}
