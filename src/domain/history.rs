//! The rules of a group's history (issue 18), free of storage and HTTP: what one entry says
//! (action, actor, revisions, the difference and the version after the change), how entries are
//! named so that every instance and every path names one change alike, and how two versions of a
//! group differ.
//!
//! Entry ids. An entry is named by the revision its change produced: `{generation:012}-{hash}`
//! (so `3-abc…` is `000000000003-abc…`), which sorts by generation, newest last. Stored, it is
//! `{account}:{group key}:{entry id}`, the group key being the md5 of the group id in hex (fixed
//! length, so no group's range holds another's); `{account}` is the partition on a partitioned
//! CouchDB database. One group's history is the range `{account}:{group key}:`, one account's the
//! range `{account}:`. Two writers of one change write one id: the second is refused, and the
//! change stays recorded once.
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::group;
use super::ids::{hex, AccountId, DocId};

/// What a change did to the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `PUT …/groups`.
    Created,
    /// `POST …/groups/{G}`.
    Updated,
    /// `PATCH …/groups/{G}` (and `doctor --fix`).
    Patched,
    /// `DELETE`, soft (`pvt_deleted`).
    Deleted,
    /// `DELETE` with `should_soft_delete=false`: the document is gone.
    HardDeleted,
    /// Conflicting leaf revisions merged into one (`resolver`).
    Resolved,
    /// A past version written over the current one.
    Restored,
    /// A change kz-groups did not answer: seen in the change feed.
    Changed,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Patched => "patched",
            Action::Deleted => "deleted",
            Action::HardDeleted => "hard_deleted",
            Action::Resolved => "resolved",
            Action::Restored => "restored",
            Action::Changed => "changed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [
            Action::Created,
            Action::Updated,
            Action::Patched,
            Action::Deleted,
            Action::HardDeleted,
            Action::Resolved,
            Action::Restored,
            Action::Changed,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }
}

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A request to kz-groups, with its token's identity.
    Token {
        /// The account the token acts as.
        account_id: Option<String>,
        /// The token's user (`owner_id`), when it has one (a user login, not an API key).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        user_id: Option<String>,
        /// The token's `method` claim: `cb_user_auth`, `cb_api_auth`, ….
        #[serde(skip_serializing_if = "Option::is_none", default)]
        auth_method: Option<String>,
        /// Where the token was masqueraded (`original_account_id`), when it was.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        original_account_id: Option<String>,
    },
    /// kz-groups' command line (`doctor --fix`).
    CommandLine,
    /// kz-groups itself: a conflict resolution.
    KzGroups,
    /// Written by something other than kz-groups (Kazoo, a script writing to CouchDB).
    Outside,
    /// Written by kz-groups, but its entry was lost (a stop, a crash, a store outage between the
    /// write and its entry) and recovered from the change feed.
    Unknown,
}

/// One field that differs, by its path of keys from the top of the group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub path: Vec<String>,
    /// `added`, `removed` or `changed`.
    pub op: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub old: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub new: Option<Value>,
}

/// One member (endpoint) by id and type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// Members added and removed by a change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    pub added: Vec<Member>,
    pub removed: Vec<Member>,
}

/// One entry as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// `{generation:012}-{hash}` of `rev_after`.
    pub id: EntryId,
    pub account_id: String,
    pub group_id: String,
    pub action: Action,
    pub actor: Actor,
    /// Gregorian seconds (Kazoo's clock, as `pvt_modified`).
    pub timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rev_before: Option<String>,
    pub rev_after: String,
    pub changes: Vec<FieldChange>,
    pub members: Members,
    /// A conflict resolution: the leaf revisions it merged.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub merged_leaves: Vec<String>,
    /// The group after the change, as `GET …/groups/{G}` shows it (`deleted` marks a soft
    /// delete); `None` after a hard delete.
    pub version: Option<Map<String, Value>>,
}

/// What a change was, as its writer knows it: turned into an [`Entry`] by [`Change::entry`].
#[derive(Debug, Clone)]
pub struct Change {
    pub account: AccountId,
    pub group: DocId,
    pub action: Action,
    pub actor: Actor,
    pub timestamp: i64,
    pub request_id: Option<String>,
    pub rev_before: Option<String>,
    pub rev_after: String,
    pub merged_leaves: Vec<String>,
    /// The stored document before the change, when known.
    pub before: Option<Map<String, Value>>,
    /// The stored document after it; `None` for a hard delete.
    pub after: Option<Map<String, Value>>,
}

impl Entry {
    /// The entry's account and group, parsed (an entry is only ever built from parsed ids).
    pub fn ids(&self) -> Option<(AccountId, DocId)> {
        Some((
            AccountId::parse(&self.account_id).ok()?,
            DocId::parse(&self.group_id)?,
        ))
    }
}

impl Change {
    /// The change a writer other than this kz-groups made (`actor`: outside or unknown), found
    /// as the document `after` at revision `rev` (`None`: a tombstone); the difference is
    /// taken against the group's newest entry, `previous`.
    pub fn outside(
        account: &AccountId,
        id: &DocId,
        actor: &Actor,
        rev: String,
        previous: Option<Entry>,
        after: Option<Map<String, Value>>,
    ) -> Change {
        let timestamp = after
            .as_ref()
            .and_then(|d| d.get("pvt_modified"))
            .and_then(Value::as_i64)
            .unwrap_or_else(super::clock::gregorian_now);
        let before = previous.as_ref().and_then(|p| {
            let mut doc = p.version.clone()?;
            // The version is a public view: `id` back to `_id`, `deleted` to the flag it shows.
            if let Some(id) = doc.shift_remove("id") {
                doc.insert("_id".into(), id);
            }
            if doc.shift_remove("deleted").is_some() {
                doc.insert("pvt_deleted".into(), Value::Bool(true));
            }
            Some(doc)
        });
        Change {
            account: account.clone(),
            group: id.clone(),
            action: if after.is_some() {
                Action::Changed
            } else {
                Action::HardDeleted
            },
            actor: actor.clone(),
            timestamp,
            request_id: after
                .as_ref()
                .and_then(|d| d.get("pvt_request_id"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            rev_before: previous.map(|p| p.rev_after),
            rev_after: rev,
            merged_leaves: Vec::new(),
            before,
            after,
        }
    }

    pub fn entry(self) -> Entry {
        let before = self.before.as_ref().map(visible);
        let after = self.after.map(into_visible);
        let empty = Map::new();
        let (old, new) = (
            before.as_ref().unwrap_or(&empty),
            after.as_ref().unwrap_or(&empty),
        );
        Entry {
            id: EntryId::of_rev(&self.rev_after),
            account_id: self.account.as_str().to_owned(),
            group_id: self.group.as_str().to_owned(),
            action: self.action,
            actor: self.actor,
            timestamp: self.timestamp,
            request_id: self.request_id,
            rev_before: self.rev_before,
            rev_after: self.rev_after,
            changes: diff(old, new),
            members: members(old, new),
            merged_leaves: self.merged_leaves,
            version: after,
        }
    }
}

/// A stored group as the history shows it: its public view, with `deleted: true` when it is
/// soft-deleted.
pub fn visible(doc: &Map<String, Value>) -> Map<String, Value> {
    let mut view = group::public_view(doc);
    if group::is_soft_deleted(doc) {
        view.insert("deleted".into(), Value::Bool(true));
    }
    view
}

/// [`visible`], taking the document (a group may be megabytes: no copy of it is made).
pub fn into_visible(mut doc: Map<String, Value>) -> Map<String, Value> {
    let deleted = group::is_soft_deleted(&doc);
    let id = doc.get("_id").cloned();
    doc.retain(|k, _| !group::is_private_key(k) && k != "id");
    if let Some(id) = id {
        doc.insert("id".into(), id);
    }
    if deleted {
        doc.insert("deleted".into(), Value::Bool(true));
    }
    doc
}

/// An entry's id: the revision of its change with the generation padded (`3-abc` →
/// `000000000003-abc`), so one group's ids sort by generation. Made from a revision
/// ([`EntryId::of_rev`]) or parsed from what a client sends ([`EntryId::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntryId(String);

impl EntryId {
    /// The entry id of a change to revision `rev` (one without a generation is kept as it is).
    pub fn of_rev(rev: &str) -> Self {
        Self(match rev.split_once('-') {
            Some((generation, hash)) if generation.bytes().all(|b| b.is_ascii_digit()) => {
                format!("{generation:0>12}-{hash}")
            }
            _ => rev.to_owned(),
        })
    }

    /// An entry id as a client may give it: `{generation:012}-{hash}` (or the revision itself).
    pub fn parse(raw: &str) -> Option<Self> {
        let id = Self::of_rev(raw);
        let (generation, hash) = id.0.split_once('-')?;
        let ok = generation.len() == 12
            && generation.bytes().all(|b| b.is_ascii_digit())
            && !hash.is_empty()
            && hash.len() <= 64
            && hash.bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then_some(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The part of stored ids that names one group of one account.
pub fn group_key(group: &DocId) -> String {
    hex(&Md5::digest(group.as_str().as_bytes()))
}

/// The prefix of every stored id of one group's entries.
pub fn group_prefix(account: &AccountId, group: &DocId) -> String {
    format!("{}:{}:", account.as_str(), group_key(group))
}

/// The stored id of an entry.
pub fn stored_id(account: &AccountId, group: &DocId, entry: &EntryId) -> String {
    format!("{}{entry}", group_prefix(account, group))
}

/// The account-wide order: newest first by time, then by group and entry.
pub fn time_key(entry: &Entry, group: &DocId) -> String {
    format!(
        "{:012}:{}:{}",
        entry.timestamp.max(0),
        group_key(group),
        entry.id
    )
}

/// The fields that differ between two versions, by path; objects are compared key by key, any
/// other value whole. `id` and `deleted` are the view's, not the group's, and are skipped.
pub fn diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<FieldChange> {
    let mut out = Vec::new();
    diff_objects(&mut Vec::new(), old, new, &mut out, true);
    out
}

fn diff_objects(
    path: &mut Vec<String>,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    out: &mut Vec<FieldChange>,
    top: bool,
) {
    let skip = |k: &str| top && (k == "id" || k == "deleted");
    for (k, o) in old.iter().filter(|(k, _)| !skip(k)) {
        path.push(k.clone());
        match new.get(k) {
            None => out.push(change(path, "removed", Some(o), None)),
            Some(n) => match (o, n) {
                (Value::Object(o), Value::Object(n)) => diff_objects(path, o, n, out, false),
                (o, n) if o != n => out.push(change(path, "changed", Some(o), Some(n))),
                _ => {}
            },
        }
        path.pop();
    }
    for (k, n) in new
        .iter()
        .filter(|(k, _)| !skip(k) && !old.contains_key(*k))
    {
        path.push(k.clone());
        out.push(change(path, "added", None, Some(n)));
        path.pop();
    }
}

fn change(path: &[String], op: &str, old: Option<&Value>, new: Option<&Value>) -> FieldChange {
    FieldChange {
        path: path.to_vec(),
        op: op.into(),
        old: old.cloned(),
        new: new.cloned(),
    }
}

/// The endpoints added and removed, by id (with their type).
pub fn members(old: &Map<String, Value>, new: &Map<String, Value>) -> Members {
    let endpoints = |doc: &Map<String, Value>| -> Map<String, Value> {
        match doc.get("endpoints") {
            Some(Value::Object(e)) => e.clone(),
            _ => Map::new(),
        }
    };
    let (old, new) = (endpoints(old), endpoints(new));
    let member = |(id, v): (&String, &Value)| Member {
        id: id.clone(),
        kind: v.get("type").and_then(Value::as_str).map(str::to_owned),
    };
    Members {
        added: new
            .iter()
            .filter(|(id, _)| !old.contains_key(*id))
            .map(member)
            .collect(),
        removed: old
            .iter()
            .filter(|(id, _)| !new.contains_key(*id))
            .map(member)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn entry_ids_sort_by_generation() {
        assert_eq!(EntryId::of_rev("3-abc").as_str(), "000000000003-abc");
        assert!(EntryId::of_rev("10-a") > EntryId::of_rev("9-z"));
        let parsed = |raw: &str| EntryId::parse(raw).map(|id| id.to_string());
        assert_eq!(parsed("3-abc").as_deref(), Some("000000000003-abc"));
        assert_eq!(
            parsed("000000000003-abc").as_deref(),
            Some("000000000003-abc")
        );
        assert_eq!(parsed("x-abc"), None);
        assert_eq!(parsed("3-"), None);
        assert_eq!(parsed("3-a/b"), None);
    }

    #[test]
    fn group_ranges_never_overlap() {
        let a = AccountId::parse("4b31dd1d32ce6d249897c06332375d65").unwrap();
        let g = group_prefix(&a, &DocId::parse("a").unwrap());
        let h = group_prefix(&a, &DocId::parse("a.b").unwrap());
        assert!(!g.starts_with(&h) && !h.starts_with(&g));
        assert_eq!(g.len(), 32 + 1 + 32 + 1);
    }

    #[test]
    fn diff_names_each_field_by_path() {
        let old = obj(json!({"id":"g","name":"a","music_on_hold":{"media_id":"m"},"x":1}));
        let new = obj(json!({"id":"g","name":"b","music_on_hold":{},"y":[1]}));
        let d = diff(&old, &new);
        assert_eq!(
            d,
            vec![
                change(
                    &["name".into()],
                    "changed",
                    Some(&json!("a")),
                    Some(&json!("b"))
                ),
                change(
                    &["music_on_hold".into(), "media_id".into()],
                    "removed",
                    Some(&json!("m")),
                    None
                ),
                change(&["x".into()], "removed", Some(&json!(1)), None),
                change(&["y".into()], "added", None, Some(&json!([1]))),
            ]
        );
    }

    #[test]
    fn members_added_and_removed_by_id_and_type() {
        let old = obj(json!({"endpoints":{"u1":{"type":"user"},"d1":{"type":"device"}}}));
        let new = obj(json!({"endpoints":{"u1":{"type":"user"},"g2":{"type":"group"}}}));
        let m = members(&old, &new);
        assert_eq!(
            m.added,
            vec![Member {
                id: "g2".into(),
                kind: Some("group".into())
            }]
        );
        assert_eq!(
            m.removed,
            vec![Member {
                id: "d1".into(),
                kind: Some("device".into())
            }]
        );
    }

    #[test]
    fn a_soft_deleted_version_says_so() {
        let doc = obj(json!({"_id":"g","_rev":"2-a","name":"n","pvt_deleted":true}));
        assert_eq!(
            Value::Object(visible(&doc)),
            json!({"name":"n","id":"g","deleted":true})
        );
        assert_eq!(into_visible(doc.clone()), visible(&doc));
    }

    #[test]
    fn actors_serialise_with_their_kind() {
        let actor = Actor::Token {
            account_id: Some("a".into()),
            user_id: None,
            auth_method: Some("cb_api_auth".into()),
            original_account_id: None,
        };
        assert_eq!(
            serde_json::to_value(&actor).unwrap(),
            json!({"kind":"token","account_id":"a","auth_method":"cb_api_auth"})
        );
        assert_eq!(
            serde_json::to_value(Actor::Outside).unwrap(),
            json!({"kind":"outside"})
        );
    }
}
