//! The history recorder (issue 18): every change of a group made through kz-groups is handed
//! here once the store acknowledged it, and written to the history store (`store::history`) by
//! one background worker, in batches (gathered for up to 100 ms), off the request path.
//!
//! Bound: at most [`QUEUE`] changes wait; a write that finds the queue full waits for room
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
use crate::metrics::Metrics;
use crate::store::couch::history::CouchHistory;
use crate::store::couch::CouchClient;
use crate::store::embedded::history::EmbeddedHistory;
use crate::store::history::History;

/// How long a change is left to its writer's own entry before another records it (the feed
/// follower, or a write over it).
pub const GRACE: Duration = Duration::from_secs(2);
/// Changes waiting to be written, at most.
pub const QUEUE: usize = 10_000;
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
    tx: mpsc::Sender<Change>,
    rx: Mutex<Option<mpsc::Receiver<Change>>>,
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
    /// Revisions written over, for the feed follower (at most [`OVERWRITTEN_MAX`]).
    overwritten: Mutex<std::collections::VecDeque<Overwritten>>,
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
            store,
            metrics,
            bounds,
            touched: Mutex::new(HashSet::new()),
            direct: false,
            pending: Mutex::new(HashSet::new()),
            written: Mutex::new(lru::LruCache::new(KNOWN.try_into().expect("non-zero"))),
            overwritten: Mutex::new(std::collections::VecDeque::new()),
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
        if self.tx.send(change).await.is_err() {
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

    async fn run(&self, mut rx: mpsc::Receiver<Change>) {
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
            let mut changes = vec![first];
            let until = tokio::time::Instant::now() + LINGER;
            while changes.len() < BATCH {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(change)) => changes.push(change),
                    Ok(None) | Err(_) => break,
                }
            }
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
            if overwritten.len() >= OVERWRITTEN_MAX {
                log::warn!(
                    "history: more than {OVERWRITTEN_MAX} revisions written over wait for their \
                     check; revision {rev} of group {} is not looked for",
                    change.group
                );
                continue;
            }
            overwritten.push_back(Overwritten {
                due,
                account: change.account.clone(),
                group: change.group.clone(),
                rev: rev.clone(),
                doc: doc.clone(),
            });
        }
    }

    /// Revisions written over whose check failed, to be checked again.
    pub fn overwritten_again(&self, items: Vec<Overwritten>) {
        let mut overwritten = self.overwritten.lock().unwrap_or_else(|p| p.into_inner());
        for item in items.into_iter().rev() {
            if overwritten.len() < OVERWRITTEN_MAX {
                overwritten.push_front(item);
            }
        }
    }

    /// The revisions written over whose check is due.
    pub fn due_overwritten(&self) -> Vec<Overwritten> {
        let mut overwritten = self.overwritten.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let due = overwritten.iter().take_while(|o| o.due <= now).count();
        overwritten.drain(..due).collect()
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
