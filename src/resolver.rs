//! Conflicted group documents, found and resolved (issue 10). On a CouchDB cluster two writes
//! coordinated by different nodes can both be acknowledged and later meet as sibling leaf
//! revisions; CouchDB then shows one (the winner by revision hash) and keeps the other hidden.
//! This worker finds such documents and merges every live leaf into the winner with
//! `domain::conflict` (a three-way merge against the leaves' common ancestor when CouchDB still
//! has its body): the merged revision on top of the winner, then a tombstone on every other
//! live leaf (two `_bulk_docs` requests, in that order, so a reader never sees a loser win and a
//! resolution cut short between them loses nothing). The merged revision is announced like a
//! POST's.
//!
//! Where conflicts are found:
//! - a read of a group (`get_doc` carries `_conflicts`): the request waits up to [`READ_BUDGET`]
//!   for the resolution, so its client sees the merged document;
//! - the change feeds, with every leaf of each changed document (`style=all_docs`): the
//!   server's `_db_updates` names the account databases that changed, whose `_changes` are then
//!   read on from where they were last read; where the store has no server-wide feed, the
//!   account databases this process served in the last [`WATCH_FOR`] (at most [`WATCHED`]) are
//!   read every [`POLL`] (also while the server-wide feed cannot be had). A database seen for
//!   the first time is read from its start. The worker runs over CouchDB only: the embedded
//!   store has one writer, hence no conflicts.
//!
//! Bounds and convergence: a resolution whose `_bulk_docs` meets a conflict (another writer, or
//! another instance resolving the same document) reads the leaves again and retries, at most
//! [`ATTEMPTS`] times. Every step is deterministic (the same leaves give the same merged body,
//! and CouchDB derives a revision id from its parent and body), so two instances resolving at
//! once write the same revisions: one of them wins, the other finds nothing left to do (or only
//! the losers' tombstones, when it reads between the winner's two requests: a winner that holds
//! every leaf's changes is not written again), and on a cluster the identical revisions simply
//! coincide. Nothing is stamped with the time.
//!
//! A tombstone leaf counts as a delete of the group only when it deleted a revision a live leaf
//! also descends from (the delete was concurrent with the surviving edits); the tombstones a
//! resolution leaves behind deleted a leaf nothing descends from, so they never count again.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use crate::domain::conflict::{self, Resolution};
use crate::domain::group;
use crate::domain::ids::{DbName, DocId};
use crate::metrics::Metrics;
use crate::notices::{Change, ChangeAction, ChangeNotifier, DocChange};
use crate::store::{Changed, Feed, Leaf, Store, StoreError, StoreResult};

/// Resolutions of one document, each after re-reading its leaves.
pub const ATTEMPTS: u32 = 5;
/// How long a read of a conflicted group waits for its resolution before answering with
/// CouchDB's winner (the resolution goes on).
pub const READ_BUDGET: Duration = Duration::from_secs(2);
/// Without a server-wide feed: how often the watched databases' feeds are read.
pub const POLL: Duration = Duration::from_secs(1);
/// Without a server-wide feed: how long a database is watched after its last request here.
pub const WATCH_FOR: Duration = Duration::from_secs(600);
/// Without a server-wide feed: databases watched at most (the least recently used leave).
pub const WATCHED: usize = 256;
/// Databases whose feed position is remembered (one forgotten is read from its start again).
const POSITIONS: usize = 10_000;
/// How long the server-wide feed waits for a change before asking again.
const FEED_WAIT: Duration = Duration::from_secs(25);
const RETRY: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// A feed answers at most this many changes a call (`DocStore::feed_next`).
const FEED_BATCH: usize = 1000;

/// What a resolution did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// No conflict (any more), or not a group document.
    Nothing,
    /// The leaves were merged into this revision.
    Merged(String),
    /// A leaf deleted the group: every live leaf is now deleted, the winner by this tombstone.
    Deleted(String),
}

type DocKey = (String, String);

pub struct Resolver {
    store: Store,
    notifier: Arc<dyn ChangeNotifier>,
    metrics: Arc<Metrics>,
    /// One resolution of a document at a time in this process; the others wait for it.
    running: Mutex<HashMap<DocKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Account databases served recently, with the time of their last request.
    watched: Mutex<LruCache<String, Instant>>,
    /// Where each database's feed was read up to.
    positions: Mutex<LruCache<String, Value>>,
}

impl Resolver {
    pub fn new(store: Store, notifier: Arc<dyn ChangeNotifier>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            notifier,
            metrics,
            running: Mutex::new(HashMap::new()),
            watched: Mutex::new(LruCache::new(WATCHED.try_into().expect("non-zero"))),
            positions: Mutex::new(LruCache::new(POSITIONS.try_into().expect("non-zero"))),
        }
    }

    /// Starts the worker that follows the change feeds; it runs until its handle is aborted.
    pub fn start(self: &Arc<Self>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.follow().await })
    }

    /// Notes that a request served `db` (it is then followed where there is no server feed).
    pub fn watch(&self, db: &DbName) {
        lock(&self.watched).put(db.as_str().to_owned(), Instant::now());
    }

    /// Resolves the document, waiting at most [`READ_BUDGET`]; past it the resolution goes on
    /// in the background. Whether it finished.
    pub async fn settle(self: &Arc<Self>, db: &DbName, id: &DocId) -> bool {
        let (this, doc_db, doc_id) = (self.clone(), db.clone(), id.clone());
        let task = tokio::spawn(async move { this.resolve(&doc_db, &doc_id).await });
        match tokio::time::timeout(READ_BUDGET, task).await {
            Ok(Ok(Ok(_))) => true,
            Ok(Ok(Err(e))) => {
                log::warn!(
                    "resolving a conflict on {db}/{id} failed ({e}): the read answers the \
                     winning revision; the change feed will try again"
                );
                false
            }
            Ok(Err(e)) => {
                log::error!(
                    "resolving a conflict on {db}/{id} stopped ({e}): the read answers the \
                     winning revision; the change feed will try again"
                );
                false
            }
            Err(_) => false,
        }
    }

    /// Resolves the document's conflict, if it has one and is a group.
    pub async fn resolve(&self, db: &DbName, id: &DocId) -> StoreResult<Resolved> {
        let gate = {
            let mut running = lock(&self.running);
            running
                .entry((db.as_str().to_owned(), id.as_str().to_owned()))
                .or_default()
                .clone()
        };
        let resolved = {
            let _turn = gate.lock().await;
            self.resolve_now(db, id).await
        };
        let mut running = lock(&self.running);
        let key = (db.as_str().to_owned(), id.as_str().to_owned());
        // The last one out removes the gate (the map holds one reference, `gate` another).
        if running.get(&key).is_some_and(|g| Arc::strong_count(g) <= 2) {
            running.remove(&key);
        }
        resolved
    }

    async fn resolve_now(&self, db: &DbName, id: &DocId) -> StoreResult<Resolved> {
        let mut pause = Duration::from_millis(20);
        for attempt in 1..=ATTEMPTS {
            let leaves = self.store.leaves(db, id).await?;
            let Some(plan) = Plan::of(id, &leaves) else {
                return Ok(Resolved::Nothing);
            };
            let ancestor = match &plan.ancestor {
                Some(rev) => self
                    .store
                    .get_rev(db, id, rev)
                    .await?
                    .and_then(|doc| match doc {
                        Value::Object(doc) => Some(fields_of(&doc)),
                        _ => None,
                    }),
                None => None,
            };
            let writes = plan.writes(id, ancestor.as_ref());
            let rev = match self.apply(db, id, &writes).await {
                Ok(rev) => rev.unwrap_or_else(|| plan.winner.rev.clone()),
                Err(StoreError::Conflict) if attempt < ATTEMPTS => {
                    log::info!(
                        "resolving {db}/{id}: met another write (attempt {attempt}), reading again"
                    );
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.metrics.conflicts_resolved.inc();
            let resolved = match writes.outcome {
                Outcome::Merged(_) => Resolved::Merged(rev),
                Outcome::Deleted(_) => Resolved::Deleted(rev),
            };
            log::info!(
                "resolved the conflict of {db}/{id} ({} leaves): {resolved:?}",
                plan.live.len() + plan.deletes.len()
            );
            return Ok(resolved);
        }
        Err(StoreError::Conflict)
    }

    /// Makes the requests in order; the revision they announce is announced as soon as it is
    /// written (a later request's conflict makes the resolution read the leaves again, and the
    /// announced revision is then the winner, not written again). That revision, if any.
    async fn apply(&self, db: &DbName, id: &DocId, writes: &Writes) -> StoreResult<Option<String>> {
        let mut announced = None;
        for (i, docs) in writes.requests.iter().enumerate() {
            if docs.is_empty() {
                continue;
            }
            let results = self.store.bulk_docs(db, docs).await?;
            if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
                return Err(clone_error(e));
            }
            if writes.announced == Some(i) {
                let rev = results.into_iter().next().and_then(Result::ok);
                let rev = rev.unwrap_or_default();
                match &writes.outcome {
                    Outcome::Merged(fields) => {
                        let action = if group::is_soft_deleted(fields) {
                            ChangeAction::Deleted { soft: true }
                        } else {
                            ChangeAction::Edited
                        };
                        self.announce(db, id, fields, &rev, action);
                    }
                    Outcome::Deleted(winner) => {
                        self.announce(db, id, winner, &rev, ChangeAction::Deleted { soft: false });
                    }
                }
                announced = Some(rev);
            }
        }
        Ok(announced)
    }

    /// The change notice of the resolution, as a POST (or a delete) announces its write.
    fn announce(
        &self,
        db: &DbName,
        id: &DocId,
        fields: &Map<String, Value>,
        rev: &str,
        action: ChangeAction,
    ) {
        let change = DocChange::written(db.clone(), id, fields, rev, action);
        self.notifier.announce(Change::Doc(Box::new(change)));
    }

    /// The worker: the server-wide feed where the store has one, else the watched databases
    /// (also while the server-wide feed cannot be had).
    async fn follow(self: Arc<Self>) {
        let mut pause = RETRY;
        loop {
            match self.store.feed_end(Feed::Server).await {
                Ok(Some(start)) => {
                    pause = RETRY;
                    let lost = self.follow_server(start).await;
                    log::warn!(
                        "conflict resolver: the server-wide change feed was lost ({lost}); \
                         reading it again in {pause:?}"
                    );
                }
                Ok(None) => return self.poll().await,
                Err(e) => log::warn!(
                    "conflict resolver: cannot read the server-wide change feed ({e}); \
                     retrying in {pause:?}"
                ),
            }
            tokio::time::sleep(pause).await;
            self.poll_once().await;
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    async fn follow_server(&self, mut since: Value) -> StoreError {
        loop {
            let changes = match self.store.feed_next(Feed::Server, &since, FEED_WAIT).await {
                Ok(changes) => changes,
                Err(e) => return e,
            };
            for change in &changes.changed {
                let Changed::Db(name) = change else { continue };
                if let Some(account) = DbName::parse_account_db(name) {
                    self.sweep(&account.db()).await;
                }
            }
            if !changes.last_seq.is_null() {
                since = changes.last_seq;
            }
        }
    }

    async fn poll(&self) {
        log::info!("conflict resolver: no server-wide change feed; reading the feeds of the account databases served here every {POLL:?}");
        loop {
            tokio::time::sleep(POLL).await;
            self.poll_once().await;
        }
    }

    /// Reads the feed of every database served here recently.
    async fn poll_once(&self) {
        let dbs: Vec<String> = {
            let mut watched = lock(&self.watched);
            while watched
                .peek_lru()
                .is_some_and(|(_, seen)| seen.elapsed() > WATCH_FOR)
            {
                watched.pop_lru();
            }
            watched.iter().map(|(db, _)| db.clone()).collect()
        };
        for db in dbs {
            if let Some(account) = DbName::parse_account_db(&db) {
                self.sweep(&account.db()).await;
            }
        }
    }

    /// Reads a database's feed on from where it was last read and resolves every group with
    /// more than one leaf among what changed.
    async fn sweep(&self, db: &DbName) {
        let mut since = lock(&self.positions)
            .get(db.as_str())
            .cloned()
            .unwrap_or(Value::from(0));
        loop {
            let changes = match self
                .store
                .feed_next(Feed::Db(db), &since, Duration::ZERO)
                .await
            {
                Ok(changes) => changes,
                Err(StoreError::NotFound) => {
                    lock(&self.positions).pop(db.as_str());
                    return;
                }
                Err(e) => {
                    log::warn!(
                        "conflict resolver: cannot read the change feed of {db} ({e}); \
                         trying again at the next poll"
                    );
                    return;
                }
            };
            for id in changes.branched.iter().filter_map(|id| DocId::parse(id)) {
                if let Err(e) = self.resolve(db, &id).await {
                    log::warn!(
                        "conflict resolver: resolving {db}/{id} failed ({e}); trying again \
                         when the feed reports it next"
                    );
                }
            }
            let more = changes.changed.len() >= FEED_BATCH;
            if !changes.last_seq.is_null() {
                since = changes.last_seq;
                lock(&self.positions).put(db.as_str().to_owned(), since.clone());
            }
            if !more {
                return;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn clone_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unreachable(s) => StoreError::Unreachable(s.clone()),
        StoreError::NotFound => StoreError::NotFound,
        StoreError::Conflict => StoreError::Conflict,
        StoreError::Other {
            status,
            error,
            reason,
        } => StoreError::Other {
            status: *status,
            error: error.clone(),
            reason: reason.clone(),
        },
    }
}

/// A document's fields without CouchDB's own members (`_id`, `_rev`, `_conflicts`, …).
fn fields_of(doc: &Map<String, Value>) -> Map<String, Value> {
    doc.iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn generation(rev: &str) -> u64 {
    rev.split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// What a resolution writes, decided from the leaves alone.
struct Plan<'a> {
    /// CouchDB's winner: the live leaf of the highest generation, then the greatest revision.
    winner: &'a Leaf,
    live: Vec<&'a Leaf>,
    /// Tombstones concurrent with the live leaves: deletes of the group.
    deletes: Vec<&'a Leaf>,
    /// The newest revision every leaf descends from.
    ancestor: Option<String>,
}

enum Outcome {
    Merged(Map<String, Value>),
    /// The winner's fields, for the notice.
    Deleted(Map<String, Value>),
}

/// A resolution's `_bulk_docs` requests, made in order; each leaves CouchDB's winner either as
/// it was or as the resolution's result, so a reader between them never sees a loser. The
/// revision announced is written in a request of its own: CouchDB's answer to a request that
/// names one document twice comes in no promised order (pouchdb-server's swaps at times).
struct Writes {
    /// Empty requests are skipped.
    requests: Vec<Vec<Value>>,
    /// The request whose one document is the revision to announce.
    announced: Option<usize>,
    outcome: Outcome,
}

impl<'a> Plan<'a> {
    /// `None` when there is nothing to resolve: one live leaf and no concurrent delete, no
    /// live leaf at all, or not a group (design documents never are).
    fn of(id: &DocId, leaves: &'a [Leaf]) -> Option<Self> {
        let mut live: Vec<&Leaf> = leaves.iter().filter(|l| !l.deleted).collect();
        // In one order whatever order the store gave: the same leaves make the same request.
        live.sort_by(|a, b| a.rev.cmp(&b.rev));
        let winner = *live.iter().max_by(|a, b| {
            generation(&a.rev)
                .cmp(&generation(&b.rev))
                .then_with(|| a.rev.cmp(&b.rev))
        })?;
        let is_group = live
            .iter()
            .any(|l| l.doc.get("pvt_type").and_then(Value::as_str) == Some(group::GROUP_TYPE));
        if !is_group || id.as_str().starts_with("_design/") {
            return None;
        }
        let deletes: Vec<&Leaf> = leaves
            .iter()
            .filter(|l| l.deleted)
            .filter(|l| {
                l.history
                    .get(1)
                    .is_some_and(|parent| live.iter().any(|v| v.history.contains(parent)))
            })
            .collect();
        if live.len() < 2 && deletes.is_empty() {
            return None;
        }
        let involved: Vec<&Leaf> = live.iter().chain(deletes.iter()).copied().collect();
        let ancestor = involved[0]
            .history
            .iter()
            .find(|rev| involved[1..].iter().all(|l| l.history.contains(rev)))
            .cloned();
        Some(Self {
            winner,
            live,
            deletes,
            ancestor,
        })
    }

    /// The requests that resolve the conflict, and what they amount to.
    fn writes(&self, id: &DocId, ancestor: Option<&Map<String, Value>>) -> Writes {
        let leaf_of = |l: &Leaf| conflict::Leaf {
            rev: l.rev.clone(),
            deleted: l.deleted,
            fields: match &l.doc {
                Value::Object(doc) if !l.deleted => fields_of(doc),
                _ => Map::new(),
            },
        };
        let leaves: Vec<conflict::Leaf> = self
            .live
            .iter()
            .chain(self.deletes.iter())
            .map(|l| leaf_of(l))
            .collect();
        let tombstone =
            |l: &Leaf| serde_json::json!({"_id": id.as_str(), "_rev": l.rev, "_deleted": true});
        let losers: Vec<Value> = self
            .live
            .iter()
            .filter(|l| l.rev != self.winner.rev)
            .map(|l| tombstone(l))
            .collect();
        let winner_fields = match &self.winner.doc {
            Value::Object(doc) => fields_of(doc),
            _ => Map::new(),
        };
        match conflict::resolve(ancestor, &leaves) {
            Resolution::Merged(fields) => {
                // The merged revision first: from then on it is CouchDB's winner. Where the
                // winner holds every change already (an earlier resolution wrote it and was cut
                // short), only the losers are left to delete.
                let merged = (fields != winner_fields).then(|| {
                    let mut merged = Map::new();
                    merged.insert("_id".into(), Value::from(id.as_str()));
                    merged.insert("_rev".into(), Value::from(self.winner.rev.as_str()));
                    if let Some(stubs) = self.winner.doc.get("_attachments") {
                        merged.insert("_attachments".into(), stubs.clone());
                    }
                    merged.extend(fields.clone());
                    vec![Value::Object(merged)]
                });
                let announced = merged.as_ref().map(|_| 0);
                Writes {
                    requests: merged.into_iter().chain(Some(losers)).collect(),
                    announced,
                    outcome: Outcome::Merged(fields),
                }
            }
            // The losers first, the winner last: until then readers see the winner as it was.
            Resolution::Deleted => Writes {
                requests: vec![losers, vec![tombstone(self.winner)]],
                announced: Some(1),
                outcome: Outcome::Deleted(winner_fields),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn leaf(rev: &str, history: &[&str], deleted: bool, doc: Value) -> Leaf {
        Leaf {
            rev: rev.into(),
            deleted,
            history: history.iter().map(|r| r.to_string()).collect(),
            doc,
        }
    }

    fn id() -> DocId {
        DocId::parse("g1").unwrap()
    }

    #[test]
    fn one_live_leaf_and_old_resolution_tombstones_need_nothing() {
        let leaves = [
            leaf(
                "3-m",
                &["3-m", "2-b", "1-a"],
                false,
                json!({"_id": "g1", "_rev": "3-m", "pvt_type": "group"}),
            ),
            // A loser deleted by an earlier resolution: its parent is no live leaf's ancestor.
            leaf(
                "3-t",
                &["3-t", "2-c", "1-a"],
                true,
                json!({"_deleted": true}),
            ),
        ];
        assert!(Plan::of(&id(), &leaves).is_none());
    }

    #[test]
    fn a_concurrent_delete_counts_and_deletes_every_live_leaf() {
        let leaves = [
            leaf(
                "2-b",
                &["2-b", "1-a"],
                false,
                json!({"_id": "g1", "_rev": "2-b", "pvt_type": "group", "name": "x"}),
            ),
            leaf("2-d", &["2-d", "1-a"], true, json!({"_deleted": true})),
        ];
        let plan = Plan::of(&id(), &leaves).expect("a conflict");
        assert_eq!(plan.ancestor.as_deref(), Some("1-a"));
        let writes = plan.writes(&id(), None);
        assert!(matches!(writes.outcome, Outcome::Deleted(_)));
        assert_eq!(
            writes.requests,
            vec![
                vec![],
                vec![json!({"_id": "g1", "_rev": "2-b", "_deleted": true})]
            ]
        );
        assert_eq!(writes.announced, Some(1));
    }

    #[test]
    fn the_merge_goes_on_the_winner_and_the_others_are_deleted() {
        let leaves = [
            leaf(
                "2-aaa",
                &["2-aaa", "1-a"],
                false,
                json!({"_id": "g1", "_rev": "2-aaa", "pvt_type": "group", "endpoints": {"u1": {}}}),
            ),
            leaf(
                "2-bbb",
                &["2-bbb", "1-a"],
                false,
                json!({"_id": "g1", "_rev": "2-bbb", "pvt_type": "group", "endpoints": {"u2": {}}}),
            ),
        ];
        let plan = Plan::of(&id(), &leaves).expect("a conflict");
        assert_eq!(plan.winner.rev, "2-bbb");
        let base = json!({"pvt_type": "group", "endpoints": {}});
        let writes = plan.writes(&id(), base.as_object());
        // The merge alone first (its revision is announced), then the loser's tombstone.
        assert_eq!(writes.announced, Some(0));
        let [merged, losers] = &writes.requests[..] else {
            panic!("two requests: {:?}", writes.requests)
        };
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0]["_rev"], "2-bbb");
        assert_eq!(merged[0]["endpoints"], json!({"u2": {}, "u1": {}}));
        assert_eq!(
            losers,
            &[json!({"_id": "g1", "_rev": "2-aaa", "_deleted": true})]
        );
        // The same leaves in another order make the very same requests.
        let reversed = [leaves[1].clone(), leaves[0].clone()];
        let again = Plan::of(&id(), &reversed)
            .unwrap()
            .writes(&id(), base.as_object());
        assert_eq!(writes.requests, again.requests);
    }

    #[test]
    fn a_merge_cut_short_before_its_tombstones_is_not_written_again() {
        let base = json!({"pvt_type": "group", "endpoints": {}});
        // 3-m merged 2-aaa and 2-bbb; the tombstone of 2-aaa was never written.
        let leaves = [
            leaf(
                "3-m",
                &["3-m", "2-bbb", "1-a"],
                false,
                json!({"_id": "g1", "_rev": "3-m", "pvt_type": "group", "endpoints": {"u2": {}, "u1": {}}}),
            ),
            leaf(
                "2-aaa",
                &["2-aaa", "1-a"],
                false,
                json!({"_id": "g1", "_rev": "2-aaa", "pvt_type": "group", "endpoints": {"u1": {}}}),
            ),
        ];
        let plan = Plan::of(&id(), &leaves).expect("a conflict");
        let writes = plan.writes(&id(), base.as_object());
        assert_eq!(writes.announced, None);
        assert_eq!(
            writes.requests,
            vec![vec![
                json!({"_id": "g1", "_rev": "2-aaa", "_deleted": true})
            ]]
        );
    }

    #[test]
    fn other_documents_are_left_alone() {
        let user = |rev: &str| {
            leaf(
                rev,
                &[rev, "1-a"],
                false,
                json!({"_rev": rev, "pvt_type": "user"}),
            )
        };
        assert!(Plan::of(&id(), &[user("2-a"), user("2-b")]).is_none());
    }
}
