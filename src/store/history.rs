//! The history port (issue 18): where the entries of `domain::history` are kept, never in an
//! account database. On CouchDB a database of kz-groups' own ([`HISTORY_DB`], partitioned by
//! account where the server allows it), on the embedded store a table of its own (in a file of its
//! own beside the store's, `history.sqlite3`). Both adapters answer each read as one range read:
//! one group's entries (by entry id), one account's entries by time.
use async_trait::async_trait;
use serde_json::Value;

use super::StoreResult;
use crate::domain::history::{Entry, EntryId};
use crate::domain::ids::{AccountId, DocId};

/// The CouchDB database of the history.
pub const HISTORY_DB: &str = "kz_groups_history";

/// One account's entries, newest first, within a range of the account-wide order
/// (`domain::history::time_key`).
#[derive(Debug, Clone)]
pub struct AccountRange {
    /// The newest key to return (inclusive).
    pub upper: String,
    /// The oldest key to return (inclusive).
    pub lower: String,
    pub limit: usize,
}

#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Creates the database or table and its index where missing.
    async fn prepare(&self) -> StoreResult<()>;
    /// Writes entries; one whose id is stored already is left as it is (`false`: another
    /// writer recorded that change first). One answer per entry, in order.
    async fn insert(&self, entries: &[Entry]) -> StoreResult<Vec<bool>>;
    /// Which of these entries are stored (by stored id, `domain::history::stored_id`), one
    /// answer per id in order, in one read. An entry removed by pruning counts as stored: its
    /// change was recorded.
    async fn stored(&self, ids: &[String]) -> StoreResult<Vec<bool>>;
    /// The stored ids of the entries any instance wrote since `since` (the history's own
    /// change feed; `None`: from now, nothing read), and where the read ended. `Ok(None)` where
    /// there is no such feed to read: the embedded store, whose one process knows what it wrote.
    async fn written_since(&self, since: Option<&Value>) -> StoreResult<Option<Written>> {
        let _ = since;
        Ok(None)
    }
    /// One group's entries, newest first, from entry `start` (inclusive) when given.
    async fn group(
        &self,
        account: &AccountId,
        group: &DocId,
        start: Option<&EntryId>,
        limit: usize,
    ) -> StoreResult<Vec<Entry>>;
    async fn entry(
        &self,
        account: &AccountId,
        group: &DocId,
        id: &EntryId,
    ) -> StoreResult<Option<Entry>>;
    /// One account's entries in a range of time, newest first, with their keys.
    async fn account(
        &self,
        account: &AccountId,
        range: &AccountRange,
    ) -> StoreResult<Vec<(String, Entry)>>;
    /// Removes entries older than `before` (Gregorian seconds), and, of each group in `groups`,
    /// all but the newest `keep`. Returns how many were removed.
    async fn prune(
        &self,
        before: i64,
        groups: &[(AccountId, DocId)],
        keep: usize,
    ) -> StoreResult<u64>;
    /// A follower's checkpoint (where it read a change feed up to).
    async fn checkpoint(&self, name: &str) -> StoreResult<Option<Value>>;
    async fn set_checkpoint(&self, name: &str, value: &Value) -> StoreResult<()>;
}

/// What [`HistoryStore::written_since`] read: stored ids, and the feed position after them.
pub struct Written {
    pub ids: Vec<String>,
    pub last_seq: Value,
}

/// The shared handle.
pub type History = std::sync::Arc<dyn HistoryStore>;
