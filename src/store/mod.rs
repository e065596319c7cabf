//! Storage: the document-store port (`DocStore`, its errors, view queries and rows, the `View`s
//! the service reads), spoken in CouchDB's terms and with CouchDB's documented semantics, and its
//! adapters below it: `couch` (CouchDB over HTTP, and the quirks of servers that speak it
//! loosely) and `embedded` (SQLite, with its own view engine and collation).
//!
//! Beside the port, and written against it: `views` keeps the design documents current and says
//! how each database's views are read; `scan` answers a view whose design document is someone
//! else's and lacks it; `membership` reads what the membership answers need.
pub mod cached;
pub mod couch;
pub mod embedded;
pub mod history;
pub mod membership;
pub mod scan;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::domain::account::Account;
use crate::domain::ids::{AccountId, DbName, DocId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connection refused, reset or timed out, or a TLS handshake refused: the store cannot be
    /// reached (503). The message says which, without credentials.
    #[error("store unreachable: {0}")]
    Unreachable(String),
    #[error("not found")]
    NotFound,
    #[error("conflict")]
    Conflict,
    /// Any other answer: the status and CouchDB's `error`/`reason`.
    #[error("store answered {status}: {error}: {reason}")]
    Other {
        status: u16,
        error: String,
        reason: String,
    },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A view the service reads: a view of one of the design documents in `couch_views/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// `groups/crossbar_listing`: groups by id, valued with their summary.
    GroupsListing,
    /// `groups/crossbar_listing_by_user`: the same summary once per user endpoint, by user id.
    GroupsListingByUser,
    /// `users/creds_by_md5`
    UsersCredsByMd5,
    /// `users/creds_by_sha`
    UsersCredsBySha,
    /// `users/list_by_username`
    UsersListByUsername,
    /// `accounts/listing_by_api`
    AccountsListingByApi,
    /// `accounts/listing_by_realm`
    AccountsListingByRealm,
    /// `accounts/listing_by_name`
    AccountsListingByName,
    /// Kazoo's `attributes/owned`: `[owner id, pvt_type]` for every live document with an owner
    /// (each hotdesk user when there are any, else `owner_id`), valued with the document's id
    /// (membership.md §2). How a ring group expands a user to devices.
    AttributesOwned,
    /// Kazoo's `callflows/crossbar_listing`: live callflows by id, valued with their summary
    /// (membership.md §2). Read with their documents to find what points at a group.
    CallflowsListing,
}

impl View {
    pub const ALL: [View; 10] = [
        View::GroupsListing,
        View::GroupsListingByUser,
        View::UsersCredsByMd5,
        View::UsersCredsBySha,
        View::UsersListByUsername,
        View::AccountsListingByApi,
        View::AccountsListingByRealm,
        View::AccountsListingByName,
        View::AttributesOwned,
        View::CallflowsListing,
    ];

    /// Kazoo's own views, of design documents kz-groups never installs (they are not in
    /// `couch_views/`): read where Kazoo's design document has them, computed from the
    /// documents (`scan`) where it does not, and indexed natively by the embedded store.
    pub fn is_kazoos(self) -> bool {
        matches!(self, View::AttributesOwned | View::CallflowsListing)
    }

    /// The design document's name, without `_design/`.
    pub fn design(self) -> &'static str {
        self.names().0
    }

    /// The view's name inside its design document.
    pub fn name(self) -> &'static str {
        self.names().1
    }

    fn names(self) -> (&'static str, &'static str) {
        match self {
            View::GroupsListing => ("groups", "crossbar_listing"),
            View::GroupsListingByUser => ("groups", "crossbar_listing_by_user"),
            View::UsersCredsByMd5 => ("users", "creds_by_md5"),
            View::UsersCredsBySha => ("users", "creds_by_sha"),
            View::UsersListByUsername => ("users", "list_by_username"),
            View::AccountsListingByApi => ("accounts", "listing_by_api"),
            View::AccountsListingByRealm => ("accounts", "listing_by_realm"),
            View::AccountsListingByName => ("accounts", "listing_by_name"),
            View::AttributesOwned => ("attributes", "owned"),
            View::CallflowsListing => ("callflows", "crossbar_listing"),
        }
    }

    /// The view `name` of `_design/{design}`, if it is one the service reads.
    pub fn find(design: &str, name: &str) -> Option<View> {
        View::ALL
            .into_iter()
            .find(|v| v.design() == design && v.name() == name)
    }
}

impl std::fmt::Display for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.design(), self.name())
    }
}

/// A view query, as CouchDB's query parameters.
#[derive(Debug, Clone, Default)]
pub struct ViewQuery {
    pub key: Option<Value>,
    pub startkey: Option<Value>,
    pub endkey: Option<Value>,
    pub startkey_docid: Option<String>,
    pub descending: bool,
    pub limit: Option<usize>,
    pub skip: usize,
    pub include_docs: bool,
    /// The rows must come from the store itself, past any cache (and a cached answer of the
    /// database is dropped): a listing that found a cached page older than its own write.
    pub fresh: bool,
}

/// A row of a view, its value and document as the store's JSON text: a listing passes them on
/// or filters them without building their trees (`json::raw`).
#[derive(Debug, Clone, Deserialize)]
pub struct ViewRow {
    pub id: String,
    pub key: Value,
    #[serde(default = "null")]
    pub value: Box<RawValue>,
    #[serde(default)]
    pub doc: Option<Box<RawValue>>,
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("null is JSON")
}

impl ViewRow {
    /// A string member of the row's value.
    pub fn value_str(&self, member: &str) -> Option<String> {
        crate::json::raw::child(&self.value, member)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    }
}

/// What a change feed says changed: a document, or only a database (CouchDB's `_db_updates`
/// names databases, not documents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    Db(String),
    Doc { db: String, id: String },
}

/// A change feed's answer: what changed, and where to read on from (CouchDB's opaque `seq`,
/// kept as the JSON it came as: a string on CouchDB, a number on some servers).
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    pub last_seq: Value,
    pub changed: Vec<Changed>,
    /// On a database's feed: the ids of the changed documents that have more than one leaf
    /// revision (CouchDB's `style=all_docs`): a conflict, or the tombstones a resolved one keeps.
    pub branched: Vec<String>,
    /// On a database's feed: each changed document's current (winning) revision, by id, where
    /// the feed says it; tombstones included.
    pub revs: std::collections::HashMap<String, String>,
}

/// One leaf revision of a document, as CouchDB's `GET /{db}/{id}?open_revs=all&revs=true` gives
/// it: a live revision or a tombstone, with its history.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    pub rev: String,
    pub deleted: bool,
    /// The revision ids from this one back to the oldest CouchDB still knows (`_revisions`),
    /// newest first; the bodies of all but the leaves may be gone (compaction).
    pub history: Vec<String>,
    /// The leaf as stored: `_id`, `_rev` (and `_deleted`) and its fields.
    pub doc: Value,
}

/// The outcome of one document of a [`DocStore::bulk_docs`] request: its new revision, or why
/// it was not written (a `Conflict` when the revision it names is no leaf any more).
pub type BulkResult = StoreResult<String>;

/// Which change feed: one database's (`_changes`), or every database's (`_db_updates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed<'a> {
    Db(&'a DbName),
    Server,
}

/// The rows of a view query, read as they are consumed: however large the rows, only a bounded
/// part of the answer is held at a time.
pub type RowStream = BoxStream<'static, StoreResult<ViewRow>>;

/// The document store: what the service needs of CouchDB, with CouchDB's semantics (a write
/// names the revision it replaces; a stale or missing one is a `Conflict`).
#[async_trait]
pub trait DocStore: Send + Sync {
    /// For logs: where the data lives, without credentials.
    fn describe(&self) -> String;
    /// The store answers.
    async fn ping(&self) -> StoreResult<()>;
    /// Every database name, as CouchDB names them (`account/4b/31/…`).
    async fn all_dbs(&self) -> StoreResult<Vec<String>>;
    /// Creates a database; an existing one is fine.
    async fn create_db(&self, db: &DbName) -> StoreResult<()>;
    /// A document (CouchDB's winning revision), or `None` when it (or its database) does not
    /// exist. Where the document is in conflict it carries `_conflicts`, the other live leaf
    /// revisions (CouchDB's `conflicts=true`); a write never needs to remove it.
    async fn get_doc(&self, db: &DbName, id: &DocId) -> StoreResult<Option<Value>>;
    /// Several documents at once, in the order of `ids` (CouchDB's `_all_docs` with `keys` and
    /// `include_docs`): `None` for one that does not exist or was deleted. Never cached: a bulk
    /// read of users and devices must not push out what the caches hold. Callers ask for a few
    /// hundred at a time.
    async fn get_docs(&self, db: &DbName, ids: &[DocId]) -> StoreResult<Vec<Option<Value>>>;
    /// [`DocStore::get_doc`] for a reader that only looks: a cache hands out the document it
    /// holds without copying it.
    async fn get_shared(&self, db: &DbName, id: &DocId) -> StoreResult<Option<Arc<Value>>> {
        Ok(self.get_doc(db, id).await?.map(Arc::new))
    }
    /// Revision `rev` of a document, or `None` when its body is gone (compacted, never stored
    /// here) or the document does not exist: CouchDB's `GET /{db}/{id}?rev=`.
    async fn get_rev(&self, db: &DbName, id: &DocId, rev: &str) -> StoreResult<Option<Value>>;
    /// Every leaf revision of a document, live ones and tombstones, with their histories
    /// (CouchDB's `open_revs=all&revs=true`); empty when the document does not exist.
    async fn leaves(&self, db: &DbName, id: &DocId) -> StoreResult<Vec<Leaf>>;
    /// Writes several documents in one request (CouchDB's `_bulk_docs`, not atomic): each names
    /// the revision it replaces in `_rev`, and the same id may appear more than once, each
    /// entry then editing its own leaf (how a conflict is resolved). One result per document,
    /// in order.
    async fn bulk_docs(&self, db: &DbName, docs: &[Value]) -> StoreResult<Vec<BulkResult>>;
    /// Writes `doc` (carrying `_rev` when it replaces one) and returns the new revision.
    async fn put_doc(&self, db: &DbName, id: &DocId, doc: &Value) -> StoreResult<String>;
    /// Deletes revision `rev` (a tombstone) and returns the tombstone's revision.
    async fn delete_doc(&self, db: &DbName, id: &DocId, rev: &str) -> StoreResult<String>;
    /// An attachment's bytes, or `None` if the doc or attachment is missing.
    async fn get_attachment(
        &self,
        db: &DbName,
        id: &DocId,
        name: &str,
    ) -> StoreResult<Option<Bytes>>;
    /// Adds an attachment to revision `rev` of a doc; returns the new revision.
    async fn put_attachment(
        &self,
        db: &DbName,
        id: &DocId,
        name: &str,
        rev: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> StoreResult<String>;
    /// `_design/{name}`.
    async fn get_design(&self, db: &DbName, name: &str) -> StoreResult<Option<Value>>;
    async fn put_design(&self, db: &DbName, name: &str, doc: &Value) -> StoreResult<String>;
    /// Deletes revision `rev` of `_design/{name}`.
    async fn delete_design(&self, db: &DbName, name: &str, rev: &str) -> StoreResult<String>;
    /// Builds (or brings up to date) the index of view `view` of `_design/{design}`, waiting
    /// as long as that takes; a store that indexes at write time has nothing to do.
    async fn build_index(&self, db: &DbName, design: &str, view: &str) -> StoreResult<()>;
    /// Rows of a view, in CouchDB's collation order (equal keys by doc id, bytewise), as a
    /// stream. The query means what CouchDB 3 documents: `startkey_docid` starts the rows of
    /// the key `startkey` at that doc id, then `skip` and `limit` apply. A missing database or
    /// view is an error of the call, before any row.
    async fn view_rows(&self, db: &DbName, view: View, query: &ViewQuery)
        -> StoreResult<RowStream>;

    /// Every live document of `db` (design documents included) in id order, as the rows of
    /// CouchDB's `_all_docs?include_docs=true`, read as they are consumed.
    async fn all_docs(&self, db: &DbName) -> StoreResult<RowStream>;

    /// The current end of a change feed, or `None` when the store has no such feed (CouchDB
    /// has `_db_updates` only where the `_global_changes` database exists).
    async fn feed_end(&self, feed: Feed<'_>) -> StoreResult<Option<Value>>;

    /// What changed in a feed after `since`, waiting up to `wait` for the first change (zero:
    /// answering at once), at most 1000 changes a call.
    async fn feed_next(
        &self,
        feed: Feed<'_>,
        since: &Value,
        wait: Duration,
    ) -> StoreResult<Changes>;

    /// Writes the store answered `202 Accepted` since start: CouchDB stored them on fewer copies
    /// than its write quorum. Zero for stores without quorums.
    fn accepted_writes(&self) -> u64 {
        0
    }

    /// The documents of such writes, as they are answered: a copy that refused the write may
    /// hold a sibling revision of it (a concurrent write through another node), which a read of
    /// every leaf sees at once. `None` for stores without quorums.
    fn accepted_docs(&self) -> Option<tokio::sync::broadcast::Receiver<(DbName, DocId)>> {
        None
    }

    /// All the rows of a (small) view query at once.
    async fn query_view(
        &self,
        db: &DbName,
        view: View,
        query: &ViewQuery,
    ) -> StoreResult<Vec<ViewRow>> {
        self.view_rows(db, view, query).await?.try_collect().await
    }
}

/// The shared handle every part of the service holds.
pub type Store = std::sync::Arc<dyn DocStore>;

/// An account by its id: its document from its own database, or `None` when it has none. The one
/// way accounts are read (the pipeline's account check, token verification, logins, the CLI).
pub async fn account(store: &Store, id: &AccountId) -> StoreResult<Option<Account>> {
    Ok(
        match store.get_shared(&id.db(), &DocId::from(id.clone())).await? {
            Some(doc) if doc.is_object() => Some(Account {
                id: id.clone(),
                doc,
            }),
            _ => None,
        },
    )
}
