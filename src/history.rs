//! The history recorder (issue 18): every change of a group made through kz-groups is handed
//! here once the store acknowledged it, and written to the history store (`store::history`) by
//! one background worker, in batches (gathered for up to 100 ms), off the request path.
//!
//! Bound: at most [`QUEUE`] changes wait, holding at most [`QUEUE_BYTES`] of documents (each
//! change holds the group before and after it); a write that finds the queue full waits for room
//! before it answers (the history falls behind no further than that, and never drops one).
//! While the history store cannot be reached, the worker retries the batch it holds (backing off
//! up to 10 s); the queue then fills and writes wait, which `kz_groups_history_entries_waiting`
//! shows. What is queued when the process stops or dies is found again by the change-feed
//! follower (`history_feed`), which records it with the actor `unknown`.
//!
//! Pruning: every [`PRUNE_EVERY`] the worker removes entries older than
//! `KZ_GROUPS_HISTORY_DAYS` and, of each group written since, all but the newest
//! `KZ_GROUPS_HISTORY_MAX_PER_GROUP`.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Backend, Config, HistoryBounds as Bounds};
use crate::domain::clock;
use crate::domain::history::{self, Change, Entry, EntryId};
use crate::domain::ids::{AccountId, DocId};
use crate::json;
use crate::metrics::Metrics;
use crate::pipeline::memory::{Pool, Reservation};
use crate::store::couch::history::CouchHistory;
use crate::store::couch::CouchClient;
use crate::store::embedded::history::EmbeddedHistory;
use crate::store::history::History;

/// How long a change is left to its writer's own entry before another records it (the feed
/// follower, or a write over it).
pub const GRACE: Duration = Duration::from_secs(2);
/// Changes waiting to be written, at most.
pub const QUEUE: usize = 10_000;
/// The memory the documents of the changes waiting may take, at most (as `json` counts a
/// parsed tree). A change larger than this waits until the queue is empty, then waits alone.
pub const QUEUE_BYTES: usize = 64 << 20;
/// The memory the documents of revisions written over may take while they wait for their check
/// (one larger than this is still held when it is the only one).
const OVERWRITTEN_BYTES: usize = 16 << 20;
/// Entries written in one call, at most.
const BATCH: usize = 500;
/// How long a batch gathers entries after its first: under load, few large writes rather than
/// many small ones (the history store is often the groups' own CouchDB).
const LINGER: Duration = Duration::from_millis(100);
const RETRY: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(10);
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Groups written since the last pruning that are remembered for it, at most.
const TOUCHED_MAX: usize = 100_000;

/// The group history's store: a database of kz-groups' own on CouchDB, a file of its own beside
/// the embedded store.
pub fn open_store(config: &Config) -> Result<History, String> {
    Ok(match &config.backend {
        Backend::CouchDb { url } => Arc::new(CouchHistory::new(CouchClient::new(
            url,
            config.couch_timeout,
            config.view_timeout,
            config.couch_ca.as_ref(),
        )?)),
        // Its directory is the store's, made private when the store was opened (`startup`).
        Backend::Embedded { dir } => Arc::new(EmbeddedHistory::open(dir)?),
    })
}

pub struct Recorder {
    tx: mpsc::Sender<Queued>,
    rx: Mutex<Option<mpsc::Receiver<Queued>>>,
    /// The queue's memory ([`QUEUE_BYTES`]).
    room: Pool,
    pub store: History,
    metrics: Arc<Metrics>,
    bounds: Bounds,
    /// Groups written since the last pruning (at most [`TOUCHED_MAX`]).
    touched: Mutex<HashSet<(AccountId, DocId)>>,
    /// Each entry written before `record` returns, with no worker (the command line).
    direct: bool,
    /// The stored ids of the entries queued, not yet written: the feed follower leaves them to
    /// the queue. As bounded as the queue.
    pending: Mutex<HashSet<String>>,
    /// The stored ids of the entries this process wrote last (at most [`KNOWN`]): the feed
    /// follower skips their changes without reading the history store.
    written: Mutex<lru::LruCache<String, ()>>,
    /// Revisions written over, for the feed follower (at most [`OVERWRITTEN_MAX`], holding at
    /// most [`OVERWRITTEN_BYTES`]).
    overwritten: Mutex<OverwrittenQueue>,
}

/// A change waiting to be written, with the room its documents take in the queue.
struct Queued {
    change: Change,
    room: Reservation,
}

/// The memory a change's documents take.
fn held(change: &Change) -> usize {
    [&change.before, &change.after]
        .into_iter()
        .flatten()
        .map(json::object_cost)
        .sum()
}

/// Entries remembered as written by this process.
const KNOWN: usize = 100_000;
/// Revisions written over that wait for their check, at most (each holds its document).
const OVERWRITTEN_MAX: usize = 1_000;

/// A revision a write of this process replaced that this process did not record: a change
/// made behind its back (or by a peer) that the change feeds may never show, since they give
/// only a document's latest revision. The feed follower checks it [`GRACE`] after the write, as
/// it checks a change: if its entry is still missing then, it is recorded as `outside`, from the
/// document the write read.
pub struct Overwritten {
    due: Instant,
    pub account: AccountId,
    pub group: DocId,
    pub rev: String,
    pub doc: serde_json::Map<String, serde_json::Value>,
    /// The memory `doc` takes.
    cost: usize,
}

#[derive(Default)]
struct OverwrittenQueue {
    items: std::collections::VecDeque<Overwritten>,
    /// The memory their documents take.
    bytes: usize,
}

impl OverwrittenQueue {
    /// Whether `cost` more fits (anything fits an empty queue).
    fn fits(&self, cost: usize) -> bool {
        self.items.is_empty()
            || (self.items.len() < OVERWRITTEN_MAX && self.bytes + cost <= OVERWRITTEN_BYTES)
    }
}

fn pending_key(account: &AccountId, group: &DocId, entry: &EntryId) -> String {
    history::stored_id(account, group, entry)
}

impl Recorder {
    pub fn new(store: History, metrics: Arc<Metrics>, bounds: Bounds) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            room: Pool::new(QUEUE_BYTES),
            store,
            metrics,
            bounds,
            touched: Mutex::new(HashSet::new()),
            direct: false,
            pending: Mutex::new(HashSet::new()),
            written: Mutex::new(lru::LruCache::new(KNOWN.try_into().expect("non-zero"))),
            overwritten: Mutex::new(OverwrittenQueue::default()),
        }
    }

    /// A recorder without a worker: each entry is written as it is recorded (the command line,
    /// whose few writes must be recorded before it exits).
    pub fn direct(store: History, metrics: Arc<Metrics>) -> Self {
        Self {
            direct: true,
            ..Self::new(store, metrics, Bounds::default())
        }
    }

    /// Queues the entry of an acknowledged change, waiting for room when the queue is full.
    pub async fn record(&self, change: Change) {
        if self.direct {
            let entries = [change.entry()];
            let _ = self.store.prepare().await;
            if let Err(e) = self.write_now(&entries).await {
                log::warn!("history: cannot write an entry ({e}); the change feed recovers it");
            }
            return;
        }
        let key = pending_key(
            &change.account,
            &change.group,
            &history::EntryId::of_rev(&change.rev_after),
        );
        self.lock_pending().insert(key);
        self.metrics.history_waiting.inc();
        // Every change takes some room, however small.
        let room = self.room.reserve(held(&change).max(1)).await;
        let bytes = room.bytes() as i64;
        self.metrics.history_queue_bytes.add(bytes);
        if self.tx.send(Queued { change, room }).await.is_err() {
            self.metrics.history_queue_bytes.sub(bytes);
            // The worker is gone (a stop): the change feed finds it at the next start.
            self.metrics.history_waiting.dec();
        }
    }

    /// Writes entries at once, waiting for the store (the feed follower, the command line).
    /// Returns how many were new.
    pub async fn write_now(&self, entries: &[Entry]) -> crate::store::StoreResult<usize> {
        let written = self.store.insert(entries).await?;
        self.touch(entries);
        {
            let mut known = self.written.lock().unwrap_or_else(|p| p.into_inner());
            for (account, group, id) in entries
                .iter()
                .filter_map(|e| e.ids().map(|(a, g)| (a, g, &e.id)))
            {
                known.put(pending_key(&account, &group, id), ());
            }
        }
        let n = written.iter().filter(|w| **w).count();
        self.metrics.history_written.inc_by(n as u64);
        Ok(n)
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this change's entry is queued here, not yet written.
    pub fn is_pending(&self, account: &AccountId, group: &DocId, entry: &EntryId) -> bool {
        self.lock_pending()
            .contains(&pending_key(account, group, entry))
    }

    /// Whether this process wrote this change's entry lately.
    pub fn wrote(&self, account: &AccountId, group: &DocId, entry: &EntryId) -> bool {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&pending_key(account, group, entry))
    }

    /// Entries the feed follower wrote: changes that had none.
    pub fn recovered(&self, n: usize) {
        self.metrics.history_recovered.inc_by(n as u64);
    }

    /// One pass of the feed follower over the changed databases.
    pub fn feed_pass(&self, ok: bool) {
        self.metrics.history_feed_pass(ok);
    }

    /// Notes the groups written, for the next pruning's per-group bound. At most
    /// [`TOUCHED_MAX`] are held (the worker prunes early when they are reached); a group past
    /// that is pruned by age only, and by count the next time it is written.
    fn touch(&self, entries: &[Entry]) {
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        for ids in entries.iter().filter_map(Entry::ids) {
            if touched.len() >= TOUCHED_MAX {
                break;
            }
            touched.insert(ids);
        }
    }

    fn touched_full(&self) -> bool {
        self.touched.lock().unwrap_or_else(|p| p.into_inner()).len() >= TOUCHED_MAX
    }

    /// Starts the worker; it runs until its handle is aborted.
    pub fn start(self: &Arc<Self>) -> JoinHandle<()> {
        let this = self.clone();
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        tokio::spawn(async move {
            if let Some(rx) = rx {
                this.run(rx).await;
            }
        })
    }

    /// Waits until no entry is queued, for `limit` at most (a stop).
    pub async fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.metrics.history_waiting.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn run(&self, mut rx: mpsc::Receiver<Queued>) {
        if let Err(e) = self.store.prepare().await {
            log::warn!("history: cannot prepare its store yet ({e}); tried again at a write");
        }
        let mut pruned = Instant::now();
        loop {
            // Idle, it still prunes on time.
            let first = match tokio::time::timeout(PRUNE_EVERY, rx.recv()).await {
                Ok(Some(change)) => change,
                Ok(None) => return,
                Err(_) => {
                    self.prune().await;
                    pruned = Instant::now();
                    continue;
                }
            };
            let mut queued = vec![first];
            let until = tokio::time::Instant::now() + LINGER;
            while queued.len() < BATCH {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(change)) => queued.push(change),
                    Ok(None) | Err(_) => break,
                }
            }
            // The room is held until the entries are written.
            let (changes, room): (Vec<Change>, Vec<Reservation>) =
                queued.into_iter().map(|q| (q.change, q.room)).unzip();
            let n = changes.len() as i64;
            self.note_overwritten(&changes);
            let entries: Vec<Entry> = changes.into_iter().map(Change::entry).collect();
            self.write_until_done(&entries).await;
            {
                let mut pending = self.lock_pending();
                for (account, group, entry) in entries
                    .iter()
                    .filter_map(|e| e.ids().map(|(a, g)| (a, g, &e.id)))
                {
                    pending.remove(&pending_key(&account, &group, entry));
                }
            }
            let freed: usize = room.iter().map(Reservation::bytes).sum();
            drop(room);
            self.metrics.history_queue_bytes.sub(freed as i64);
            self.metrics.history_waiting.sub(n);
            if pruned.elapsed() >= PRUNE_EVERY || self.touched_full() {
                self.prune().await;
                pruned = Instant::now();
            }
        }
    }

    /// Notes the revisions these changes replaced that this process has no entry of (in its
    /// queue or among those it wrote lately), for the feed follower to check after the grace.
    fn note_overwritten(&self, changes: &[Change]) {
        let due = Instant::now() + GRACE;
        let mut overwritten = self.overwritten.lock().unwrap_or_else(|p| p.into_inner());
        for change in changes {
            let (Some(rev), Some(doc)) = (&change.rev_before, &change.before) else {
                continue;
            };
            let entry = history::EntryId::of_rev(rev);
            if change.action == history::Action::Resolved
                || self.is_pending(&change.account, &change.group, &entry)
                || self.wrote(&change.account, &change.group, &entry)
            {
                continue;
            }
            let cost = json::object_cost(doc);
            if !overwritten.fits(cost) {
                log::warn!(
                    "history: {} revisions written over ({} MiB) wait for their check; revision \
                     {rev} of group {} is not looked for",
                    overwritten.items.len(),
                    overwritten.bytes >> 20,
                    change.group
                );
                continue;
            }
            overwritten.bytes += cost;
            overwritten.items.push_back(Overwritten {
                due,
                account: change.account.clone(),
                group: change.group.clone(),
                rev: rev.clone(),
                doc: doc.clone(),
                cost,
            });
        }
    }

    /// Revisions written over whose check failed, to be checked again.
    pub fn overwritten_again(&self, items: Vec<Overwritten>) {
        let mut overwritten = self.overwritten.lock().unwrap_or_else(|p| p.into_inner());
        for item in items.into_iter().rev() {
            if overwritten.fits(item.cost) {
                overwritten.bytes += item.cost;
                overwritten.items.push_front(item);
            }
        }
    }

    /// The revisions written over whose check is due.
    pub fn due_overwritten(&self) -> Vec<Overwritten> {
        let mut overwritten = self.overwritten.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let due = overwritten
            .items
            .iter()
            .take_while(|o| o.due <= now)
            .count();
        let items: Vec<Overwritten> = overwritten.items.drain(..due).collect();
        overwritten.bytes -= items.iter().map(|o| o.cost).sum::<usize>();
        items
    }

    async fn write_until_done(&self, entries: &[Entry]) {
        let mut pause = RETRY;
        loop {
            match self.write_now(entries).await {
                Ok(_) => return,
                Err(e) => {
                    // The database may be missing (a first start during an outage).
                    let _ = self.store.prepare().await;
                    log::warn!(
                        "cannot write {} history entries ({e}); retrying in {pause:?}",
                        entries.len()
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Removes what the bounds no longer keep; a failure is logged and left for the next time.
    pub async fn prune(&self) {
        let groups: Vec<(AccountId, DocId)> = self
            .touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        let before = clock::gregorian_now() - (self.bounds.days as i64) * 86_400;
        match self
            .store
            .prune(before, &groups, self.bounds.max_per_group)
            .await
        {
            Ok(n) if n > 0 => log::info!("history: {n} entries past the bounds removed"),
            Ok(_) => {}
            Err(e) => log::warn!("history: pruning failed ({e}); tried again later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::history::Actor;
    use crate::pipeline::memory::UNIT;
    use crate::store::history::{AccountRange, HistoryStore};
    use crate::store::StoreResult;
    use serde_json::{Map, Value};
    use tokio::sync::watch;

    /// A history store whose writes wait until it is opened (a slow or unreachable one).
    struct Closed(watch::Receiver<bool>);

    #[async_trait::async_trait]
    impl HistoryStore for Closed {
        async fn prepare(&self) -> StoreResult<()> {
            Ok(())
        }
        async fn insert(&self, entries: &[Entry]) -> StoreResult<Vec<bool>> {
            let _ = self.0.clone().wait_for(|open| *open).await;
            Ok(vec![true; entries.len()])
        }
        async fn stored(&self, ids: &[String]) -> StoreResult<Vec<bool>> {
            Ok(vec![false; ids.len()])
        }
        async fn group(
            &self,
            _: &AccountId,
            _: &DocId,
            _: Option<&EntryId>,
            _: usize,
        ) -> StoreResult<Vec<Entry>> {
            Ok(Vec::new())
        }
        async fn entry(&self, _: &AccountId, _: &DocId, _: &EntryId) -> StoreResult<Option<Entry>> {
            Ok(None)
        }
        async fn account(
            &self,
            _: &AccountId,
            _: &AccountRange,
        ) -> StoreResult<Vec<(String, Entry)>> {
            Ok(Vec::new())
        }
        async fn prune(&self, _: i64, _: &[(AccountId, DocId)], _: usize) -> StoreResult<u64> {
            Ok(0)
        }
        async fn checkpoint(&self, _: &str) -> StoreResult<Option<Value>> {
            Ok(None)
        }
        async fn set_checkpoint(&self, _: &str, _: &Value) -> StoreResult<()> {
            Ok(())
        }
    }

    /// An edit of a group whose name takes about a mebibyte, before and after.
    fn large_edit(i: usize) -> Change {
        let doc = |name: &str| -> Map<String, Value> {
            let mut d = Map::new();
            d.insert("_id".into(), Value::from(format!("g{i}")));
            d.insert("name".into(), Value::from(name.repeat(1 << 20)));
            d
        };
        Change {
            account: AccountId::parse("4b31dd1d32ce6d249897c06332375d65").unwrap(),
            group: DocId::parse(&format!("g{i}")).unwrap(),
            action: history::Action::Updated,
            actor: Actor::CommandLine,
            timestamp: 63_900_000_000,
            request_id: None,
            rev_before: Some(format!("1-{i:032x}")),
            rev_after: format!("2-{i:032x}"),
            merged_leaves: Vec::new(),
            before: Some(doc("a")),
            after: Some(doc("b")),
        }
    }

    /// A recorder over a history store that writes once `open` says so, and its metrics.
    fn recorder(open: bool) -> (watch::Sender<bool>, Arc<Metrics>, Arc<Recorder>) {
        let (open, closed) = watch::channel(open);
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(Closed(closed));
        let recorder = Recorder::new(store, metrics.clone(), Bounds::default());
        (open, metrics, Arc::new(recorder))
    }

    #[tokio::test]
    async fn the_queue_holds_at_most_its_bytes_of_documents_and_then_writes_wait() {
        let (open, metrics, recorder) = recorder(false);
        let worker = recorder.start();
        let each = held(&large_edit(0));
        assert!(each > 2 << 20, "{each}");
        let fit = (QUEUE_BYTES / UNIT) / each.div_ceil(UNIT);
        assert!(fit < QUEUE / 100, "the bytes bind before the count: {fit}");
        for i in 0..fit {
            tokio::time::timeout(Duration::from_secs(5), recorder.record(large_edit(i)))
                .await
                .expect("room in the queue");
        }
        // Nothing is written while the store is closed: the next change finds no room.
        let next = recorder.record(large_edit(fit));
        tokio::pin!(next);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut next)
                .await
                .is_err(),
            "a change past the queue's bytes was queued"
        );
        assert_eq!(metrics.history_waiting.get(), fit as i64 + 1);
        let taken = (fit * each.div_ceil(UNIT) * UNIT) as i64;
        assert_eq!(metrics.history_queue_bytes.get(), taken);
        assert!(taken <= QUEUE_BYTES as i64);
        open.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("room once the queue was written");
        recorder.flush(Duration::from_secs(10)).await;
        assert_eq!(metrics.history_waiting.get(), 0);
        assert_eq!(metrics.history_queue_bytes.get(), 0);
        worker.abort();
    }

    #[test]
    fn revisions_written_over_are_held_within_their_bytes() {
        let each = json::object_cost(large_edit(0).before.as_ref().unwrap());
        let fit = OVERWRITTEN_BYTES / each;
        assert!(
            fit < OVERWRITTEN_MAX / 10,
            "the bytes bind before the count: {fit}"
        );
        let edits: Vec<Change> = (0..fit + 5).map(large_edit).collect();
        let waiting = |r: &Recorder| {
            let o = r.overwritten.lock().unwrap();
            (o.items.len(), o.bytes)
        };
        let (_, _, full) = recorder(true);
        full.note_overwritten(&edits);
        assert_eq!(waiting(&full), (fit, fit * each));
        // One alone is held whatever its size.
        let mut huge = large_edit(0);
        let name = Value::from("d".repeat(OVERWRITTEN_BYTES));
        huge.before.as_mut().unwrap().insert("name".into(), name);
        let (_, _, alone) = recorder(true);
        alone.note_overwritten(&[huge]);
        assert_eq!(waiting(&alone).0, 1);
    }

    #[tokio::test]
    async fn a_change_larger_than_the_queue_is_queued_alone() {
        let (_open, metrics, recorder) = recorder(true);
        let worker = recorder.start();
        let mut huge = large_edit(0);
        let name = Value::from("c".repeat(QUEUE_BYTES));
        huge.after.as_mut().unwrap().insert("name".into(), name);
        assert!(held(&huge) > QUEUE_BYTES);
        tokio::time::timeout(Duration::from_secs(10), recorder.record(huge))
            .await
            .expect("a change larger than the queue still goes through");
        recorder.flush(Duration::from_secs(10)).await;
        assert_eq!(metrics.history_waiting.get(), 0);
        worker.abort();
    }
}
