//! Conflicted group documents, found and resolved (issues 10 and 16). On a CouchDB cluster two
//! writes coordinated by different nodes can both be acknowledged and later meet as sibling leaf
//! revisions; CouchDB then shows one (the winner by revision hash) and keeps the other hidden.
//! This worker finds such documents and merges every live leaf into the winner with
//! `domain::conflict` (a three-way merge against the leaves' common ancestor when CouchDB still
//! has its body).
//!
//! A resolution reads every leaf from every copy ([`Resolver::read_leaves`]), then writes
//! ([`Resolver::write_resolution`]): the merged revision on top of the winner, always (also when
//! the winner already holds every change), then a tombstone on each other live leaf whose every
//! change that merged revision holds (checked: merging the leaf into it again changes nothing),
//! naming it ([`MERGED_INTO`]). So no leaf is closed unless a revision this resolution wrote
//! holds its changes; a resolution that wrote nothing closes nothing; and a tombstone names the
//! exact leaf revision read, which CouchDB refuses to close once something extended it (the
//! resolution then reads again). The merged revision is announced like a POST's.
//!
//! Where conflicts are found:
//! - a write CouchDB stored on fewer copies than its quorum (202): a copy refused it, most
//!   often because it took a concurrent write through another node first; the document's
//!   leaves are read from every copy at once, without waiting for internal replication (which
//!   CouchDB pushes seconds later) to bring the sibling to the feeds;
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
//! Bounds and convergence: a resolution that meets a conflict (another writer, another
//! instance resolving the same document, a leaf that grew since the read) reads the leaves
//! again and retries, at most [`ATTEMPTS`] times. Every step is deterministic (the same leaves
//! give the same merged body, and CouchDB derives a revision id from its parent and body), so
//! instances resolving at once from the same leaves write the same revisions; from different
//! leaves (one read before a sibling arrived) they write different merged revisions on the
//! winner, a new conflict whose leaves each hold what they closed, merged by the next round.
//!
//! A tombstone leaf counts as a delete of the group only when it is no resolution's (it does not
//! name a merged revision) and it deleted a revision a live leaf also descends from (the delete
//! was concurrent with the surviving edits).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use crate::domain::conflict::{self, Resolution};
use crate::domain::group;
use crate::domain::history;
use crate::domain::ids::{DbName, DocId};
use crate::history::Recorder;
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
    /// Where each resolution is recorded (the group's history).
    history: Option<Arc<Recorder>>,
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
            history: None,
            notifier,
            metrics,
            running: Mutex::new(HashMap::new()),
            watched: Mutex::new(LruCache::new(WATCHED.try_into().expect("non-zero"))),
            positions: Mutex::new(LruCache::new(POSITIONS.try_into().expect("non-zero"))),
        }
    }

    /// Records each resolution in the group's history.
    pub fn recording(mut self, history: Arc<Recorder>) -> Self {
        self.history = Some(history);
        self
    }

    /// Starts the worker that follows the change feeds and the writes CouchDB stored on fewer
    /// copies than its quorum; it runs until its handle is aborted.
    pub fn start(self: &Arc<Self>) -> JoinHandle<()> {
        let this = self.clone();
        let accepted = self.store.accepted_docs();
        tokio::spawn(async move {
            let feeds = this.clone().follow();
            match accepted {
                Some(accepted) => {
                    futures::future::join(feeds, this.follow_accepted(accepted)).await;
                }
                None => feeds.await,
            }
        })
    }

    /// A write answered 202 was refused by a copy: most often because that copy took a
    /// concurrent write through another node first, which left sibling revisions. Every leaf
    /// is read at once (from every copy), so such a conflict is resolved within moments rather
    /// than when internal replication brings it to the feeds (CouchDB pushes it seconds later).
    async fn follow_accepted(
        self: Arc<Self>,
        mut accepted: tokio::sync::broadcast::Receiver<(DbName, DocId)>,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match accepted.recv().await {
                Ok((db, id)) => {
                    let this = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = this.resolve(&db, &id).await {
                            log::warn!(
                                "conflict resolver: checking {db}/{id} after a write CouchDB \
                                 stored without quorum failed ({e}); the change feed will \
                                 report a conflict if there is one"
                            );
                        }
                    });
                }
                // Missed ones are reported by the change feeds, later.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Notes that a request served `db` (it is then followed where there is no server feed).
    pub fn watch(&self, db: &DbName) {
        lock(&self.watched).put(db.as_str().to_owned(), Instant::now());
    }

    /// Resolves the document, waiting at most [`READ_BUDGET`]; past it the resolution goes on
    /// in the background.
    pub async fn settle(self: &Arc<Self>, db: &DbName, id: &DocId) {
        let (this, doc_db, doc_id) = (self.clone(), db.clone(), id.clone());
        let task = tokio::spawn(async move { this.resolve(&doc_db, &doc_id).await });
        match tokio::time::timeout(READ_BUDGET, task).await {
            Ok(Ok(Ok(_))) | Err(_) => {}
            Ok(Ok(Err(e))) => log::warn!(
                "resolving a conflict on {db}/{id} failed ({e}): the read answers the \
                 winning revision; the change feed will try again"
            ),
            Ok(Err(e)) => log::error!(
                "resolving a conflict on {db}/{id} stopped ({e}): the read answers the \
                 winning revision; the change feed will try again"
            ),
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
            let reading = self.read_leaves(db, id).await?;
            match self.write_resolution(db, id, &reading).await {
                Err(StoreError::Conflict) if attempt < ATTEMPTS => {
                    log::info!(
                        "resolving {db}/{id}: met another write (attempt {attempt}), reading again"
                    );
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                outcome => return outcome,
            }
        }
        Err(StoreError::Conflict)
    }

    /// A resolution's first step: every leaf of the document (from every copy), and the fields
    /// of their common ancestor where CouchDB still has them.
    pub async fn read_leaves(&self, db: &DbName, id: &DocId) -> StoreResult<Reading> {
        let leaves = self.store.leaves(db, id).await?;
        let ancestor_rev = Plan::of(id, &leaves).and_then(|plan| plan.ancestor);
        let ancestor = match ancestor_rev {
            Some(rev) => self
                .store
                .get_rev(db, id, &rev)
                .await?
                .and_then(|doc| match doc {
                    Value::Object(doc) if doc.get("_deleted") != Some(&Value::Bool(true)) => {
                        Some(fields_of(&doc))
                    }
                    _ => None,
                }),
            None => None,
        };
        Ok(Reading { leaves, ancestor })
    }

    /// A resolution's second step, on what [`Self::read_leaves`] read: the merged revision on
    /// the winner, then a tombstone on each other live leaf whose changes that revision holds
    /// (a delete: a tombstone on every live leaf, the winner's last). Nothing is closed before
    /// the merge is written, and a leaf written since the read is no leaf this step names, so
    /// CouchDB refuses to close it (a conflict: the caller reads again). `Err(Conflict)`: another
    /// write came first.
    pub async fn write_resolution(
        &self,
        db: &DbName,
        id: &DocId,
        reading: &Reading,
    ) -> StoreResult<Resolved> {
        let Some(plan) = Plan::of(id, &reading.leaves) else {
            return Ok(Resolved::Nothing);
        };
        let resolved = match conflict::resolve(reading.ancestor.as_ref(), &plan.merge_leaves()) {
            Resolution::Merged(fields) => {
                let rev = self.write_one(db, plan.merged(id, &fields)).await?;
                self.announce(db, id, &fields, &rev, edit_action(&fields));
                self.record(db, id, &plan, &rev, Some(&fields)).await;
                let closable = plan.closable(&fields, reading.ancestor.as_ref());
                let tombstones: Vec<Value> = closable
                    .iter()
                    .map(|leaf| tombstone(id, &leaf.rev, Some(&rev)))
                    .collect();
                self.write_all(db, &tombstones).await?;
                Resolved::Merged(rev)
            }
            Resolution::Deleted => {
                // The losers first, the winner last: until then readers see the winner as it was.
                let losers: Vec<Value> = plan
                    .losers()
                    .map(|leaf| tombstone(id, &leaf.rev, None))
                    .collect();
                self.write_all(db, &losers).await?;
                let rev = self
                    .write_one(db, tombstone(id, &plan.winner.rev, None))
                    .await?;
                let winner = plan.winner_fields();
                self.announce(db, id, &winner, &rev, ChangeAction::Deleted { soft: false });
                self.record(db, id, &plan, &rev, None).await;
                Resolved::Deleted(rev)
            }
        };
        self.metrics.conflicts_resolved.inc();
        log::info!(
            "resolved the conflict of {db}/{id} ({} leaves): {resolved:?}",
            plan.live.len() + plan.deletes.len()
        );
        Ok(resolved)
    }

    /// One document written on its own (its answer then is surely its own: CouchDB's answer to
    /// a request naming one document twice comes in no promised order); its new revision.
    async fn write_one(&self, db: &DbName, doc: Value) -> StoreResult<String> {
        match self.store.bulk_docs(db, &[doc]).await?.into_iter().next() {
            Some(result) => result,
            None => Err(StoreError::Other {
                status: 200,
                error: "bad_answer".into(),
                reason: "no result for a _bulk_docs write".into(),
            }),
        }
    }

    async fn write_all(&self, db: &DbName, docs: &[Value]) -> StoreResult<()> {
        if docs.is_empty() {
            return Ok(());
        }
        let results = self.store.bulk_docs(db, docs).await?;
        match results.iter().find_map(|r| r.as_ref().err()) {
            Some(e) => Err(clone_error(e)),
            None => Ok(()),
        }
    }

    /// The resolution's entry in the group's history: one entry, named by the revision it wrote
    /// (so instances resolving from the same leaves record it once), naming the leaves merged.
    async fn record(
        &self,
        db: &DbName,
        id: &DocId,
        plan: &Plan<'_>,
        rev: &str,
        fields: Option<&Map<String, Value>>,
    ) {
        let (Some(history), Some(account)) = (&self.history, DbName::parse_account_db(db.as_str()))
        else {
            return;
        };
        let with_id = |fields: &Map<String, Value>, rev: &str| {
            let mut doc = fields.clone();
            doc.insert("_id".into(), Value::from(id.as_str()));
            doc.insert("_rev".into(), Value::from(rev));
            doc
        };
        let mut leaves: Vec<String> = plan.live.iter().map(|l| l.rev.clone()).collect();
        leaves.extend(plan.deletes.iter().map(|l| l.rev.clone()));
        let change = history::Change {
            account,
            group: id.clone(),
            action: match fields {
                Some(_) => history::Action::Resolved,
                None => history::Action::HardDeleted,
            },
            actor: history::Actor::KzGroups,
            timestamp: fields
                .and_then(|f| f.get("pvt_modified"))
                .and_then(Value::as_i64)
                .unwrap_or_else(crate::domain::clock::gregorian_now),
            request_id: None,
            rev_before: Some(plan.winner.rev.clone()),
            rev_after: rev.to_owned(),
            merged_leaves: leaves,
            before: Some(with_id(&plan.winner_fields(), &plan.winner.rev)),
            after: fields.map(|f| with_id(f, rev)),
        };
        history.record(change).await;
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

/// What one resolution read (see [`Resolver::read_leaves`]).
pub struct Reading {
    pub leaves: Vec<Leaf>,
    /// The fields of the leaves' common ancestor, where CouchDB still has its body.
    pub ancestor: Option<Map<String, Value>>,
}

/// The member a tombstone a resolution writes carries: the merged revision that holds what
/// the closed leaf held. Such a tombstone is never a delete of the group; one without it (a
/// client's delete, or a delete resolution) is.
pub const MERGED_INTO: &str = "kz_groups_merged_into";

/// A tombstone of leaf `rev`; a merge's names the revision that holds its changes.
fn tombstone(id: &DocId, rev: &str, merged_into: Option<&str>) -> Value {
    let mut doc = serde_json::json!({"_id": id.as_str(), "_rev": rev, "_deleted": true});
    if let Some(merged) = merged_into {
        doc[MERGED_INTO] = Value::from(merged);
    }
    doc
}

/// A merged revision's notice: a soft delete if the merge left the group soft-deleted.
fn edit_action(fields: &Map<String, Value>) -> ChangeAction {
    if group::is_soft_deleted(fields) {
        ChangeAction::Deleted { soft: true }
    } else {
        ChangeAction::Edited
    }
}

fn leaf_of(l: &Leaf) -> conflict::Leaf {
    conflict::Leaf {
        rev: l.rev.clone(),
        deleted: l.deleted,
        fields: match &l.doc {
            Value::Object(doc) if !l.deleted => fields_of(doc),
            _ => Map::new(),
        },
    }
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
            .filter(|l| l.deleted && l.doc.get(MERGED_INTO).is_none())
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

    /// The leaves the merge takes: the live ones and the concurrent deletes.
    fn merge_leaves(&self) -> Vec<conflict::Leaf> {
        self.live
            .iter()
            .chain(self.deletes.iter())
            .map(|l| leaf_of(l))
            .collect()
    }

    /// The live leaves other than the winner.
    fn losers(&self) -> impl Iterator<Item = &&'a Leaf> + '_ {
        self.live.iter().filter(|l| l.rev != self.winner.rev)
    }

    fn winner_fields(&self) -> Map<String, Value> {
        match &self.winner.doc {
            Value::Object(doc) => fields_of(doc),
            _ => Map::new(),
        }
    }

    /// The merged revision, on the winner (written even where the winner holds every change
    /// already, as when an earlier resolution was cut short before its tombstones: only what
    /// a resolution wrote itself lets it close a leaf).
    fn merged(&self, id: &DocId, fields: &Map<String, Value>) -> Value {
        let mut merged = Map::new();
        merged.insert("_id".into(), Value::from(id.as_str()));
        merged.insert("_rev".into(), Value::from(self.winner.rev.as_str()));
        if let Some(stubs) = self.winner.doc.get("_attachments") {
            merged.insert("_attachments".into(), stubs.clone());
        }
        merged.extend(fields.clone());
        Value::Object(merged)
    }

    /// The losers the merged `fields` hold every change of: merging each with them again
    /// changes nothing. A leaf that would add something is left open (and said), for the next
    /// resolution to merge; with a correct merge there is none.
    fn closable(
        &self,
        fields: &Map<String, Value>,
        ancestor: Option<&Map<String, Value>>,
    ) -> Vec<&'a Leaf> {
        let merged = conflict::Leaf {
            rev: format!("{}-merged", generation(&self.winner.rev) + 1),
            deleted: false,
            fields: fields.clone(),
        };
        self.losers()
            .filter(|leaf| {
                let again = conflict::resolve(ancestor, &[merged.clone(), leaf_of(leaf)]);
                let holds = again == Resolution::Merged(fields.clone());
                if !holds {
                    log::error!(
                        "resolving a conflict: the merged group does not hold every change of \
                         leaf {}; that leaf is left open, to be merged again",
                        leaf.rev
                    );
                }
                holds
            })
            .copied()
            .collect()
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
        assert_eq!(plan.deletes.len(), 1);
        assert_eq!(
            conflict::resolve(None, &plan.merge_leaves()),
            Resolution::Deleted
        );
        assert_eq!(
            plan.losers().count(),
            0,
            "the winner alone is left to delete"
        );
    }

    fn two_leaves() -> [Leaf; 2] {
        [
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
        ]
    }

    fn merged_fields(plan: &Plan, base: Option<&Map<String, Value>>) -> Map<String, Value> {
        match conflict::resolve(base, &plan.merge_leaves()) {
            Resolution::Merged(fields) => fields,
            Resolution::Deleted => panic!("not a delete"),
        }
    }

    #[test]
    fn the_merge_goes_on_the_winner_and_closes_the_leaves_it_holds() {
        let leaves = two_leaves();
        let plan = Plan::of(&id(), &leaves).expect("a conflict");
        assert_eq!(plan.winner.rev, "2-bbb");
        let base = json!({"pvt_type": "group", "endpoints": {}});
        let fields = merged_fields(&plan, base.as_object());
        let merged = plan.merged(&id(), &fields);
        assert_eq!(merged["_rev"], "2-bbb");
        assert_eq!(merged["endpoints"], json!({"u2": {}, "u1": {}}));
        let closable: Vec<&str> = plan
            .closable(&fields, base.as_object())
            .iter()
            .map(|l| l.rev.as_str())
            .collect();
        assert_eq!(closable, ["2-aaa"]);
        // Its tombstone names the merged revision, so it never counts as a delete.
        assert_eq!(
            tombstone(&id(), "2-aaa", Some("3-m")),
            json!({"_id": "g1", "_rev": "2-aaa", "_deleted": true, MERGED_INTO: "3-m"})
        );
        // The same leaves in another order make the very same merged revision.
        let reversed = [leaves[1].clone(), leaves[0].clone()];
        let again = Plan::of(&id(), &reversed).unwrap();
        assert_eq!(
            again.merged(&id(), &merged_fields(&again, base.as_object())),
            merged
        );
    }

    #[test]
    fn a_leaf_the_merged_fields_do_not_hold_is_left_open() {
        let leaves = two_leaves();
        let plan = Plan::of(&id(), &leaves).expect("a conflict");
        let base = json!({"pvt_type": "group", "endpoints": {}});
        // As if a merge had dropped u1: the leaf that added it is not closed.
        let winner_only = plan.winner_fields();
        assert!(plan.closable(&winner_only, base.as_object()).is_empty());
    }

    #[test]
    fn a_merge_cut_short_before_its_tombstones_is_written_again_before_any_leaf_is_closed() {
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
        let fields = merged_fields(&plan, base.as_object());
        assert_eq!(fields, plan.winner_fields(), "3-m holds every change");
        // Written anyway, on 3-m: only what a resolution wrote itself lets it close 2-aaa.
        assert_eq!(plan.merged(&id(), &fields)["_rev"], "3-m");
        assert_eq!(plan.closable(&fields, base.as_object()).len(), 1);
    }

    #[test]
    fn a_tombstone_a_merge_left_is_never_a_delete_even_when_its_leaf_grew_elsewhere() {
        // 2-x was closed by a merge (3-t names 3-m), but another copy had taken a PATCH on 2-x
        // first (3-p): 2-x is both a closed leaf's parent and a live leaf's ancestor.
        let leaves = [
            leaf(
                "3-m",
                &["3-m", "2-z", "1-a"],
                false,
                json!({"_id": "g1", "_rev": "3-m", "pvt_type": "group", "endpoints": {"x": {}, "z": {}}}),
            ),
            leaf(
                "3-p",
                &["3-p", "2-x", "1-a"],
                false,
                json!({"_id": "g1", "_rev": "3-p", "pvt_type": "group", "endpoints": {"x": {}, "p": {}}}),
            ),
            leaf(
                "3-t",
                &["3-t", "2-x", "1-a"],
                true,
                json!({"_id": "g1", "_rev": "3-t", "_deleted": true, MERGED_INTO: "3-m"}),
            ),
        ];
        let plan = Plan::of(&id(), &leaves).expect("a conflict");
        assert!(plan.deletes.is_empty(), "no delete of the group");
        let base = json!({"pvt_type": "group", "endpoints": {}});
        assert_eq!(
            merged_fields(&plan, base.as_object())["endpoints"],
            json!({"x": {}, "p": {}, "z": {}})
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
