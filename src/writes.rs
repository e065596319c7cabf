//! The one way a group document is written: stamped with Crossbar's `pvt_*` fields (§4.2),
//! saved over the revision it was read at (a stale one is CouchDB's conflict), recorded for the
//! listings that must show this process's own writes, and announced on the bus. The groups
//! handlers write through it, and so does `kz-groups doctor --fix`: a fix is a PATCH.
use serde_json::{Map, Value};

use crate::domain::clock;
use crate::domain::group::{self, Author, SaveStamp};
use crate::domain::ids::{AccountId, DocId};
use crate::domain::merge::patch_merge;
use crate::error::ApiError;
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

    /// Saves `doc` (over the revision its `_rev` names) and announces it; a stale revision is
    /// `StoreError::Conflict` and nothing is announced. Gives the saved document back.
    pub async fn save(
        &self,
        id: &DocId,
        doc: Map<String, Value>,
        action: ChangeAction,
    ) -> Result<(String, Map<String, Value>), StoreError> {
        let db = self.account.db();
        let doc = Value::Object(doc);
        self.recent.begin(&db, id);
        let rev = self.store.put_doc(&db, id, &doc).await?;
        let doc = into_object(doc);
        self.recent.record(&db, id, Some(&doc));
        self.announce(id, &doc, &rev, action);
        Ok((rev, doc))
    }

    /// A stored group's public part replaced by `public`, its private fields (revision
    /// included) kept: the end of POST and PATCH.
    pub async fn replace(
        &self,
        id: &DocId,
        public: Map<String, Value>,
        private: Map<String, Value>,
    ) -> Result<(String, Map<String, Value>), StoreError> {
        let mut doc = assemble(id, public, private);
        self.stamp(&mut doc);
        self.save(id, doc, ChangeAction::Edited).await
    }

    /// One notice per successful write (amqp-notices §1.4), queued for the bus; never waits
    /// for it. Every write of a group ends here, hard deletes included.
    pub fn announce(&self, id: &DocId, doc: &Map<String, Value>, rev: &str, action: ChangeAction) {
        // The group's history (issue 18) records each change here, once that history exists.
        let change = DocChange::written(self.account.db(), id, doc, rev, action);
        self.notifier.announce(Change::Doc(Box::new(change)));
    }
}
