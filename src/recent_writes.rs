//! The group writes this process acknowledged in the last few seconds, per account database, so
//! that a listing includes them (issue 10, read your writes). A CouchDB cluster answers a view
//! query from one copy of each shard range, which may not have received a write the cluster
//! acknowledged a moment before; a listing that disagrees with a recent write here is read again
//! (`routes::groups::listing`).
//!
//! Bounds: a write is kept [`KEEP`]; at most [`PER_DB`] writes per database (the oldest leave)
//! and [`DBS`] databases (the least recently written leave). Nothing else keeps it true: it is
//! what this process itself answered 2xx for.
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;
use serde_json::{Map, Value};

use crate::domain::group;
use crate::domain::ids::{DbName, DocId};

/// How long a write is remembered: far longer than a cluster's internal replication takes.
pub const KEEP: Duration = Duration::from_secs(5);
/// Writes remembered per database.
pub const PER_DB: usize = 64;
/// Databases remembered.
pub const DBS: usize = 4096;

/// One acknowledged write of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub id: String,
    /// A live group after the write (not deleted, soft or hard).
    pub live: bool,
    /// Its user endpoints after the write: the `users/{U}/groups` listings it belongs in.
    pub users: Vec<String>,
    at: Instant,
}

impl Written {
    /// Whether a listing of `user`'s groups (`None`: of every group) must show it.
    pub fn listed_for(&self, user: Option<&str>) -> bool {
        self.live && user.is_none_or(|u| self.users.iter().any(|w| w == u))
    }
}

pub struct RecentWrites {
    dbs: Mutex<LruCache<String, VecDeque<Written>>>,
}

impl Default for RecentWrites {
    fn default() -> Self {
        Self::new()
    }
}

impl RecentWrites {
    pub fn new() -> Self {
        Self {
            dbs: Mutex::new(LruCache::new(DBS.try_into().expect("non-zero"))),
        }
    }

    /// A write acknowledged: `doc` as written, or `None` for a hard delete.
    pub fn record(&self, db: &DbName, id: &DocId, doc: Option<&Map<String, Value>>) {
        let written = Written {
            id: id.as_str().to_owned(),
            live: doc.is_some_and(group::is_live_group),
            users: doc.map(user_endpoints).unwrap_or_default(),
            at: Instant::now(),
        };
        let mut dbs = self.dbs.lock().unwrap_or_else(|p| p.into_inner());
        let writes = dbs.get_or_insert_mut(db.as_str().to_owned(), VecDeque::new);
        writes.retain(|w| w.id != written.id && w.at.elapsed() < KEEP);
        if writes.len() >= PER_DB {
            writes.pop_front();
        }
        writes.push_back(written);
    }

    /// The writes of `db` still remembered, the latest of each document; empty (and no
    /// allocation) in the common case of none.
    pub fn of(&self, db: &DbName) -> Vec<Written> {
        let mut dbs = self.dbs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(writes) = dbs.peek_mut(db.as_str()) else {
            return Vec::new();
        };
        while writes.front().is_some_and(|w| w.at.elapsed() >= KEEP) {
            writes.pop_front();
        }
        if writes.is_empty() {
            dbs.pop(db.as_str());
            return Vec::new();
        }
        writes.iter().cloned().collect()
    }
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
