//! The group writes this process acknowledged in the last few seconds, per account database, so
//! that a listing includes them (issue 10, read your writes). A CouchDB cluster answers a view
//! query from one copy of each shard range, which may not have received a write the cluster
//! acknowledged a moment before; a listing that disagrees with a recent write here is read again
//! (`routes::groups::listing`).
//!
//! Each write carries the document's text, so a filtered listing (`filter_name=G1`) can tell
//! whether the group belongs in it, and a sequence number, so a listing judges only the writes
//! acknowledged before it read and not rewritten while it read (a write made meanwhile may or
//! may not be in what it read; waiting for it would be waiting for nothing).
//!
//! Bounds: a write is kept [`KEEP`]; at most [`PER_DB`] writes per database (the oldest leave)
//! and [`DBS`] databases (the least recently written leave); the documents' text at most
//! [`DOC_BYTES`] in all (past it, a write is kept without its text, and a filtered listing does
//! not wait for it). Nothing else keeps it true: it is what this process itself answered 2xx for.
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::domain::group;
use crate::domain::ids::{DbName, DocId};

/// How long a write is remembered: far longer than a cluster's internal replication takes.
pub const KEEP: Duration = Duration::from_secs(5);
/// Writes remembered per database.
pub const PER_DB: usize = 64;
/// Databases remembered.
pub const DBS: usize = 4096;
/// The documents' text kept, in all.
pub const DOC_BYTES: usize = 16 << 20;

/// One acknowledged write of a group, or one under way.
#[derive(Debug, Clone)]
pub struct Written {
    pub id: String,
    /// Sent to the store and not yet answered: the document may be as it was or as it will be,
    /// so no listing is held to either.
    pub pending: bool,
    /// A live group after the write (not deleted, soft or hard).
    pub live: bool,
    /// Its user endpoints after the write: the `users/{U}/groups` listings it belongs in.
    pub users: Vec<String>,
    /// The document as written (live groups only, within [`DOC_BYTES`]).
    pub doc: Option<Arc<RawValue>>,
    /// Its place in the order of every write recorded here.
    pub seq: u64,
    at: Instant,
}

impl Written {
    /// Whether a listing of `user`'s groups (`None`: of every group) must show it, before
    /// filters.
    pub fn listed_for(&self, user: Option<&str>) -> bool {
        !self.pending && self.live && user.is_none_or(|u| self.users.iter().any(|w| w == u))
    }

    fn bytes(&self) -> usize {
        self.doc.as_ref().map_or(0, |d| d.get().len())
    }
}

pub struct RecentWrites {
    state: Mutex<State>,
}

struct State {
    dbs: LruCache<String, VecDeque<Written>>,
    seq: u64,
    /// The text of the documents held.
    bytes: usize,
}

impl State {
    fn forget(&mut self, written: &Written) {
        self.bytes -= written.bytes();
    }
}

impl Default for RecentWrites {
    fn default() -> Self {
        Self::new()
    }
}

impl RecentWrites {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                dbs: LruCache::new(DBS.try_into().expect("non-zero")),
                seq: 0,
                bytes: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write about to be sent to the store: until [`Self::record`] says how it ended, a
    /// listing is held to nothing about the document (a failed write leaves it so).
    pub fn begin(&self, db: &DbName, id: &DocId) {
        self.put(db, id, None, true);
    }

    /// A write acknowledged: `doc` as written, or `None` for a hard delete.
    pub fn record(&self, db: &DbName, id: &DocId, doc: Option<&Map<String, Value>>) {
        self.put(db, id, doc, false);
    }

    fn put(&self, db: &DbName, id: &DocId, doc: Option<&Map<String, Value>>, pending: bool) {
        let live = doc.is_some_and(group::is_live_group);
        // With its id, which the document a view row carries has too (filters may read it).
        let text = doc.filter(|_| live).and_then(|d| {
            let mut d = d.clone();
            d.entry("_id").or_insert_with(|| Value::from(id.as_str()));
            serde_json::value::to_raw_value(&d).ok()
        });
        let mut state = self.state();
        state.seq += 1;
        let room = DOC_BYTES - state.bytes;
        let written = Written {
            id: id.as_str().to_owned(),
            pending,
            live,
            users: doc.map(user_endpoints).unwrap_or_default(),
            doc: text.filter(|t| t.get().len() <= room).map(Arc::from),
            seq: state.seq,
            at: Instant::now(),
        };
        state.bytes += written.bytes();
        let key = db.as_str().to_owned();
        if state.dbs.len() == DBS && !state.dbs.contains(&key) {
            if let Some((_, evicted)) = state.dbs.pop_lru() {
                evicted.iter().for_each(|w| state.forget(w));
            }
        }
        let writes = state.dbs.get_or_insert_mut(key, VecDeque::new);
        // Oldest first: the expired ones lead. One clock read, not one per write held.
        let now = written.at;
        let mut gone = expire(writes, now);
        if let Some(i) = writes.iter().position(|w| w.id == written.id) {
            gone += writes.remove(i).map_or(0, |w| w.bytes());
        }
        if writes.len() >= PER_DB {
            gone += writes.pop_front().map_or(0, |w| w.bytes());
        }
        writes.push_back(written);
        state.bytes -= gone;
    }

    /// The writes of `db` still remembered, the latest of each document; empty (and no
    /// allocation) in the common case of none.
    pub fn of(&self, db: &DbName) -> Vec<Written> {
        let mut state = self.state();
        let Some(writes) = state.dbs.peek_mut(db.as_str()) else {
            return Vec::new();
        };
        let gone = expire(writes, Instant::now());
        let held = writes.iter().cloned().collect::<Vec<_>>();
        if held.is_empty() {
            state.dbs.pop(db.as_str());
        }
        state.bytes -= gone;
        held
    }

    /// The text of the documents held now (for tests of the bound).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.state().bytes
    }
}

/// Drops the writes older than [`KEEP`] at `now` from the front of `writes` (they are in the
/// order they were made), returning the text they held.
fn expire(writes: &mut VecDeque<Written>, now: Instant) -> usize {
    let mut gone = 0;
    while writes
        .front()
        .is_some_and(|w| now.saturating_duration_since(w.at) >= KEEP)
    {
        gone += writes.pop_front().map_or(0, |w| w.bytes());
    }
    gone
}

/// The keys of `endpoints` whose `type` is `user` (the `crossbar_listing_by_user` view's keys).
fn user_endpoints(doc: &Map<String, Value>) -> Vec<String> {
    doc.get("endpoints")
        .and_then(Value::as_object)
        .map(|endpoints| {
            endpoints
                .iter()
                .filter(|(_, e)| e.get("type").and_then(Value::as_str) == Some("user"))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn db() -> DbName {
        crate::domain::ids::AccountId::parse("4b31dd1d32ce6d249897c06332375d65")
            .unwrap()
            .db()
    }

    #[test]
    fn the_latest_write_of_a_document_is_kept() {
        let recent = RecentWrites::new();
        let id = DocId::parse("g1").unwrap();
        assert!(recent.of(&db()).is_empty());
        let doc = json!({"pvt_type": "group", "endpoints": {"u1": {"type": "user"}, "d1": {"type": "device"}}});
        recent.record(&db(), &id, doc.as_object());
        let writes = recent.of(&db());
        assert_eq!(writes.len(), 1);
        assert!(writes[0].listed_for(None) && writes[0].listed_for(Some("u1")));
        assert!(!writes[0].listed_for(Some("d1")));
        recent.record(&db(), &id, None);
        let writes = recent.of(&db());
        assert_eq!(writes.len(), 1);
        assert!(!writes[0].live);
    }

    #[test]
    fn the_documents_text_is_kept_within_its_bound_and_released_with_its_write() {
        let recent = RecentWrites::new();
        let big = "x".repeat(DOC_BYTES / 3);
        let doc = json!({"pvt_type": "group", "name": big});
        for i in 0..4 {
            let id = DocId::parse(&format!("g{i}")).unwrap();
            recent.record(&db(), &id, doc.as_object());
        }
        let writes = recent.of(&db());
        let with_text = writes.iter().filter(|w| w.doc.is_some()).count();
        assert_eq!(with_text, 2, "a third would pass the bound");
        assert!(recent.bytes() <= DOC_BYTES);
        assert!(writes[0]
            .doc
            .as_ref()
            .unwrap()
            .get()
            .contains("\"_id\":\"g0\""));
        // Rewritten (here: hard-deleted), a write gives its text back.
        for i in 0..4 {
            recent.record(&db(), &DocId::parse(&format!("g{i}")).unwrap(), None);
        }
        assert_eq!(recent.bytes(), 0);
    }

    #[test]
    fn writes_older_than_the_keep_leave_and_give_their_text_back() {
        let recent = RecentWrites::new();
        let doc = json!({"pvt_type": "group", "name": "x".repeat(100)});
        for i in 0..3 {
            recent.record(
                &db(),
                &DocId::parse(&format!("g{i}")).unwrap(),
                doc.as_object(),
            );
        }
        let held = recent.bytes();
        assert!(held > 300);
        // The first two were made longer ago than a write is kept.
        {
            let mut state = recent.state();
            let writes = state.dbs.peek_mut(db().as_str()).unwrap();
            for w in writes.iter_mut().take(2) {
                w.at = Instant::now() - KEEP - Duration::from_millis(1);
            }
        }
        let writes = recent.of(&db());
        assert_eq!(
            writes.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
            ["g2"]
        );
        assert_eq!(recent.bytes(), held / 3);
    }

    #[test]
    fn a_database_keeps_a_bounded_number_of_writes() {
        let recent = RecentWrites::new();
        for i in 0..PER_DB + 10 {
            let id = DocId::parse(&format!("g{i}")).unwrap();
            recent.record(&db(), &id, json!({"pvt_deleted": true}).as_object());
        }
        let writes = recent.of(&db());
        assert_eq!(writes.len(), PER_DB);
        assert_eq!(writes[0].id, "g10");
    }
}
