//! The one way a group document is written: stamped with Crossbar's `pvt_*` fields (§4.2),
//! saved over the revision it was read at (a stale one is CouchDB's conflict), recorded for the
//! listings that must show this process's own writes, announced on the bus, and recorded in the
//! group's history (issue 18). The groups handlers write through it, and so does
//! `kz-groups doctor --fix`: a fix is a PATCH.
use serde_json::{Map, Value};

use crate::domain::clock;
use crate::domain::group::{self, Author, SaveStamp};
use crate::domain::history::{self, Actor};
use crate::domain::ids::{AccountId, DocId};
use crate::domain::merge::patch_merge;
use crate::error::ApiError;
use crate::history::Recorder;
use crate::json::into_object;
use crate::notices::{Change, ChangeAction, ChangeNotifier, DocChange};
use crate::recent_writes::RecentWrites;
use crate::store::{Store, StoreError};
use crate::validation::Schemas;

/// Who writes, where, on whose behalf: what a save stamps and announces.
pub struct GroupWrites<'a> {
    pub store: &'a Store,
    pub notifier: &'a dyn ChangeNotifier,
    pub recent: &'a RecentWrites,
    pub account: &'a AccountId,
    /// `pvt_request_id`.
    pub request_id: &'a str,
    /// The token's identity; `None` writes `pvt_is_authenticated: false` (the command line).
    pub author: Option<&'a Author>,
    /// Where each change is recorded, and as whose.
    pub history: &'a Recorder,
    pub actor: &'a Actor,
}

/// What a write is, for the bus and the history: its kind, and the stored document it replaces
/// (`None` for a create, or a restore of a group that is gone).
pub struct Write<'b> {
    pub action: history::Action,
    pub before: Option<&'b Map<String, Value>>,
}

impl Write<'_> {
    fn notice(&self) -> ChangeAction {
        match self.action {
            history::Action::Created => ChangeAction::Created,
            history::Action::Restored if self.before.is_none() => ChangeAction::Created,
            history::Action::Deleted => ChangeAction::Deleted { soft: true },
            history::Action::HardDeleted => ChangeAction::Deleted { soft: false },
            _ => ChangeAction::Edited,
        }
    }
}

/// Validates the public part of a group against the `groups` schema, defaults filled in (§6.2).
pub fn validate(schemas: &Schemas, data: Value) -> Result<Map<String, Value>, ApiError> {
    schemas
        .groups
        .validate(data)
        .map(into_object)
        .map_err(ApiError::Validation)
}

/// PATCH's new public part: `body` deep-merged into the stored public part, then validated
/// (§6.4, §6.5).
pub fn patched(
    schemas: &Schemas,
    public: Map<String, Value>,
    body: Value,
) -> Result<Map<String, Value>, ApiError> {
    validate(schemas, patch_merge(Value::Object(public), body))
}

/// `_id` first, then the public part, then the remaining private fields.
pub fn assemble(
    id: &DocId,
    public: Map<String, Value>,
    mut private: Map<String, Value>,
) -> Map<String, Value> {
    let mut doc = Map::with_capacity(public.len() + private.len() + 1);
    doc.insert("_id".into(), Value::from(id.as_str()));
    if let Some(rev) = private.shift_remove("_rev") {
        doc.insert("_rev".into(), rev);
    }
    doc.extend(public);
    doc.extend(private.into_iter().filter(|(k, _)| k != "_id"));
    doc
}

impl GroupWrites<'_> {
    /// Sets the `pvt_` fields of a save (§4.2).
    pub fn stamp(&self, doc: &mut Map<String, Value>) {
        group::stamp(
            doc,
            &SaveStamp {
                account: self.account,
                request_id: self.request_id,
                author: self.author,
                now_gregorian: clock::gregorian_now(),
            },
        );
    }

    /// Saves `doc` (over the revision its `_rev` names), announces and records it; a stale
    /// revision is `StoreError::Conflict` and nothing is announced. Gives the saved document
    /// back.
    pub async fn save(
        &self,
        id: &DocId,
        doc: Map<String, Value>,
        write: Write<'_>,
    ) -> Result<(String, Map<String, Value>), StoreError> {
        let db = self.account.db();
        let doc = Value::Object(doc);
        self.recent.begin(&db, id);
        let rev = self.store.put_doc(&db, id, &doc).await?;
        let doc = into_object(doc);
        self.recent.record(&db, id, Some(&doc));
        self.announce(id, &doc, &rev, write.notice());
        // The saved document as a read gives it: with its new revision.
        let mut after = doc.clone();
        after.insert("_rev".into(), Value::from(rev.as_str()));
        self.record(id, &write, &rev, Some(after)).await;
        Ok((rev, doc))
    }

    /// Removes the stored revision `before` (a hard delete), announces and records it.
    pub async fn remove(
        &self,
        id: &DocId,
        before: &Map<String, Value>,
        rev: &str,
    ) -> Result<String, StoreError> {
        let db = self.account.db();
        self.recent.begin(&db, id);
        let new_rev = self.store.delete_doc(&db, id, rev).await?;
        self.recent.record(&db, id, None);
        // The notice describes the doc as it was before the delete, with the tombstone's rev.
        self.announce(id, before, &new_rev, ChangeAction::Deleted { soft: false });
        let write = Write {
            action: history::Action::HardDeleted,
            before: Some(before),
        };
        self.record(id, &write, &new_rev, None).await;
        Ok(new_rev)
    }

    /// Queues the history entry of an acknowledged write.
    async fn record(
        &self,
        id: &DocId,
        write: &Write<'_>,
        rev: &str,
        after: Option<Map<String, Value>>,
    ) {
        let timestamp = after
            .as_ref()
            .and_then(|d| d.get("pvt_modified"))
            .and_then(Value::as_i64)
            .unwrap_or_else(clock::gregorian_now);
        let change = history::Change {
            account: self.account.clone(),
            group: id.clone(),
            action: write.action,
            actor: self.actor.clone(),
            timestamp,
            request_id: Some(self.request_id.to_owned()),
            rev_before: write
                .before
                .and_then(|b| b.get("_rev"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            rev_after: rev.to_owned(),
            merged_leaves: Vec::new(),
            before: write.before.cloned(),
            after,
        };
        self.history.record(change).await;
    }

    /// A stored group's public part replaced by `public`, its private fields (revision
    /// included) kept: the end of POST, PATCH and a restore.
    pub async fn replace(
        &self,
        id: &DocId,
        public: Map<String, Value>,
        private: Map<String, Value>,
        write: Write<'_>,
    ) -> Result<(String, Map<String, Value>), StoreError> {
        let mut doc = assemble(id, public, private);
        self.stamp(&mut doc);
        self.save(id, doc, write).await
    }

    /// One notice per successful write (amqp-notices §1.4), queued for the bus; never waits
    /// for it. Every write of a group ends here, hard deletes included.
    pub fn announce(&self, id: &DocId, doc: &Map<String, Value>, rev: &str, action: ChangeAction) {
        let change = DocChange::written(self.account.db(), id, doc, rev, action);
        self.notifier.announce(Change::Doc(Box::new(change)));
    }
}
