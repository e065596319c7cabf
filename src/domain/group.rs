//! The group document rules Crossbar applies around a save (groups-contract §4.2–§4.4, §6.2,
//! §6.3): public/private split, the client-chosen id, and the `pvt_` bookkeeping fields.
use serde_json::{Map, Value};

use super::ids::AccountId;

pub const GROUP_TYPE: &str = "group";

/// Keys starting with `_` or `pvt_` are private: never taken from a client, never returned.
pub fn is_private_key(key: &str) -> bool {
    key.starts_with('_') || key.starts_with("pvt_")
}

/// The request data with private keys removed (top level, as `kz_doc:public_fields`).
pub fn strip_private(mut data: Map<String, Value>) -> Map<String, Value> {
    data.retain(|k, _| !is_private_key(k));
    data
}

/// What a client sees of a stored doc: the public fields, then `id`.
pub fn public_view(doc: &Map<String, Value>) -> Map<String, Value> {
    let mut public: Map<String, Value> = doc
        .iter()
        .filter(|(k, _)| !is_private_key(k) && *k != "id")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(id) = doc.get("_id") {
        public.insert("id".into(), id.clone());
    }
    public
}

/// A stored doc as its public part and its private fields (`_id`, `_rev`, `pvt_*`), which are
/// laid over a new public part on POST and PATCH (§6.3), each in its stored order.
pub fn split(doc: Map<String, Value>) -> (Map<String, Value>, Map<String, Value>) {
    doc.into_iter().partition(|(k, _)| !is_private_key(k))
}

/// The id a PUT asks for (§4.3): `_id`, else `id`, else `ID`, else `value.id`, else `doc._id`;
/// empty, "0", "NULL", "undefined" and null mean "no id". Returns the raw value; the caller
/// parses it.
pub fn requested_id(data: &Map<String, Value>) -> Option<Value> {
    let candidates = [
        data.get("_id"),
        data.get("id"),
        data.get("ID"),
        data.get("value").and_then(|v| v.get("id")),
        data.get("doc").and_then(|v| v.get("_id")),
    ];
    let candidate = candidates.into_iter().flatten().next()?;
    match candidate {
        Value::Null => None,
        Value::String(s) if matches!(s.as_str(), "" | "0" | "NULL" | "undefined") => None,
        other => Some(other.clone()),
    }
}

/// `pvt_alphanum_name`: lower-cased, then everything outside `[a-z0-9]` removed.
pub fn alphanum_name(name: &str) -> String {
    name.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .collect()
}

/// Who wrote: the authenticated identity as Crossbar records it on each save.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Author {
    pub account_id: Option<String>,
    pub owner_id: Option<String>,
    pub original_account_id: Option<String>,
    pub original_owner_id: Option<String>,
}

/// The per-save bookkeeping of §4.2.
pub struct SaveStamp<'a> {
    pub account: &'a AccountId,
    pub request_id: &'a str,
    pub author: Option<&'a Author>,
    pub now_gregorian: i64,
}

/// Sets the `pvt_` fields of §4.2 on a doc about to be saved. `pvt_type` is set only on create
/// (no `_rev`); `id` is never stored.
pub fn stamp(doc: &mut Map<String, Value>, s: &SaveStamp<'_>) {
    let is_new = !doc.contains_key("_rev");
    doc.remove("id");
    if is_new {
        doc.insert("pvt_type".into(), Value::from(GROUP_TYPE));
    }
    let set_if_missing = |doc: &mut Map<String, Value>, key: &str, value: Value| {
        if !doc.contains_key(key) {
            doc.insert(key.into(), value);
        }
    };
    set_if_missing(doc, "pvt_vsn", Value::from("1"));
    set_if_missing(doc, "pvt_account_id", Value::from(s.account.as_str()));
    set_if_missing(doc, "pvt_account_db", Value::from(s.account.db().encoded()));
    if is_new {
        doc.insert("pvt_created".into(), Value::from(s.now_gregorian));
    }
    doc.insert("pvt_modified".into(), Value::from(s.now_gregorian));
    doc.insert("pvt_request_id".into(), Value::from(s.request_id));
    doc.insert(
        "pvt_is_authenticated".into(),
        Value::from(s.author.is_some()),
    );
    for key in [
        "pvt_auth_account_id",
        "pvt_auth_user_id",
        "pvt_original_auth_account_id",
        "pvt_original_auth_owner_id",
    ] {
        doc.remove(key);
    }
    if let Some(author) = s.author {
        let fields = [
            ("pvt_auth_account_id", &author.account_id),
            ("pvt_auth_user_id", &author.owner_id),
            ("pvt_original_auth_account_id", &author.original_account_id),
            ("pvt_original_auth_owner_id", &author.original_owner_id),
        ];
        for (key, value) in fields {
            if let Some(v) = value {
                doc.insert(key.into(), Value::from(v.as_str()));
            }
        }
    }
    match doc.get("name").and_then(Value::as_str) {
        Some(name) => {
            let normalised = alphanum_name(name);
            doc.insert("pvt_alphanum_name".into(), Value::from(normalised));
        }
        None => {
            doc.remove("pvt_alphanum_name");
        }
    }
}

/// A loaded doc counts as a live group: `pvt_type` is `group` or absent, and it is not
/// soft-deleted (§4.4, §6.5).
pub fn is_live_group(doc: &Map<String, Value>) -> bool {
    is_group_type(doc) && !is_soft_deleted(doc)
}

/// `pvt_type` is `group` or absent: a group, soft-deleted or not.
pub fn is_group_type(doc: &Map<String, Value>) -> bool {
    match doc.get("pvt_type") {
        None => true,
        Some(t) => t.as_str() == Some(GROUP_TYPE),
    }
}

pub fn is_soft_deleted(doc: &Map<String, Value>) -> bool {
    doc.get("pvt_deleted").is_some_and(truthy)
}

/// Kazoo's `kz_term:is_true` for flags stored in documents.
pub fn truthy(v: &Value) -> bool {
    matches!(v, Value::Bool(true)) || v.as_str() == Some("true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn account() -> AccountId {
        AccountId::parse("4b31dd1d32ce6d249897c06332375d65").unwrap()
    }

    #[test]
    fn alphanum_name_matches_kazoo() {
        assert_eq!(alphanum_name("Sales Team #1 (Ünicode)"), "salesteam1nicode");
        assert_eq!(alphanum_name("G1"), "g1");
    }

    #[test]
    fn private_keys_are_stripped_and_id_comes_last() {
        let doc = obj(json!({"_id":"g","_rev":"1-a","name":"x","pvt_type":"group","endpoints":{}}));
        let view = public_view(&doc);
        assert_eq!(
            Value::Object(view.clone()),
            json!({"name":"x","endpoints":{},"id":"g"})
        );
        assert_eq!(view.keys().next_back().unwrap(), "id");
    }

    #[test]
    fn requested_id_follows_kazoos_order_and_empty_values() {
        assert_eq!(
            requested_id(&obj(json!({"id":"a","_id":"b"}))),
            Some(json!("b"))
        );
        assert_eq!(requested_id(&obj(json!({"ID":"c"}))), Some(json!("c")));
        assert_eq!(
            requested_id(&obj(json!({"value":{"id":"d"}}))),
            Some(json!("d"))
        );
        assert_eq!(
            requested_id(&obj(json!({"doc":{"_id":"e"}}))),
            Some(json!("e"))
        );
        for empty in [
            json!(""),
            json!("0"),
            json!("NULL"),
            json!("undefined"),
            json!(null),
        ] {
            assert_eq!(requested_id(&obj(json!({ "id": empty }))), None);
        }
        assert_eq!(requested_id(&obj(json!({"name":"x"}))), None);
    }

    #[test]
    fn stamp_on_create_sets_every_pvt_field() {
        let mut doc = obj(json!({"_id":"g","name":"Sales Team #1","id":"g"}));
        let author = Author {
            account_id: Some("a".into()),
            owner_id: Some("u".into()),
            ..Default::default()
        };
        stamp(
            &mut doc,
            &SaveStamp {
                account: &account(),
                request_id: "r1",
                author: Some(&author),
                now_gregorian: 63_880_000_000,
            },
        );
        assert_eq!(
            Value::Object(doc),
            json!({
                "_id":"g","name":"Sales Team #1",
                "pvt_type":"group","pvt_vsn":"1",
                "pvt_account_id":"4b31dd1d32ce6d249897c06332375d65",
                "pvt_account_db":"account%2F4b%2F31%2Fdd1d32ce6d249897c06332375d65",
                "pvt_created":63_880_000_000i64,"pvt_modified":63_880_000_000i64,
                "pvt_request_id":"r1","pvt_is_authenticated":true,
                "pvt_auth_account_id":"a","pvt_auth_user_id":"u",
                "pvt_alphanum_name":"salesteam1"
            })
        );
    }

    #[test]
    fn stamp_on_update_keeps_created_and_type() {
        let mut doc = obj(
            json!({"_id":"g","_rev":"1-a","name":"x","pvt_type":"user","pvt_created":1,"pvt_vsn":"1"}),
        );
        stamp(
            &mut doc,
            &SaveStamp {
                account: &account(),
                request_id: "r2",
                author: None,
                now_gregorian: 5,
            },
        );
        assert_eq!(doc["pvt_type"], "user");
        assert_eq!(doc["pvt_created"], 1);
        assert_eq!(doc["pvt_modified"], 5);
        assert_eq!(doc["pvt_is_authenticated"], false);
        assert!(!doc.contains_key("pvt_auth_account_id"));
    }

    #[test]
    fn live_group_checks_type_and_soft_delete() {
        assert!(is_live_group(&obj(json!({"name":"x"}))));
        assert!(is_live_group(&obj(json!({"pvt_type":"group"}))));
        assert!(!is_live_group(&obj(json!({"pvt_type":"user"}))));
        assert!(!is_live_group(&obj(
            json!({"pvt_type":"group","pvt_deleted":true})
        )));
    }
}
