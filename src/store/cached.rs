//! Caches over the store (issue 9), behind the port itself: the service reads documents and
//! listing pages as it always does, and an answer comes from memory when the store's data has
//! not changed since it was read. Turning a cache off is a configuration change (0 entries).
//!
//! - Group documents by database and id (absent ones too): `KZ_GROUPS_DOC_CACHE_ENTRIES`
//!   entries, `KZ_GROUPS_DOC_CACHE_MB`.
//! - The other documents every request reads (accounts, users' identity secrets,
//!   `token_restrictions`, signing keys, system configuration; absent ones too: "there is no
//!   `token_restrictions`" is an answer): `KZ_GROUPS_AUTH_CACHE_ENTRIES`,
//!   `KZ_GROUPS_AUTH_CACHE_MB`. Apart, so turning group documents off leaves a GET one call to
//!   the store: the group itself.
//! - Listing pages (view queries of at most [`MAX_CACHED_ROWS`] rows):
//!   `KZ_GROUPS_LISTING_CACHE_ENTRIES`, `KZ_GROUPS_LISTING_CACHE_MB`.
//!
//! When either is full, the least recently used entries leave. What keeps them true:
//! - writes through this process drop what they touch before they return (write-through);
//! - a change feed drops what others change: the server's feed of every database (CouchDB's
//!   `_db_updates`, database by database) where it exists, else one feed per database that
//!   holds entries (`_changes`, document by document; at most `KZ_GROUPS_CACHE_FEEDS`, the
//!   least recently used database's feed stops when more are needed; 0 follows none), and
//!   Kazoo's own change notices when `KZ_GROUPS_AMQP_URL` is set (`bus_listener`, calling
//!   [`CachedStore::heard`]: they only make changes arrive sooner);
//! - an entry is kept only when no change was announced while it was being read, so a change
//!   racing a read never leaves the old value behind;
//! - nothing is kept while a feed that should guard it is starting or being restarted after a
//!   loss (a change made before the feed's start point would never drop it), so no entry is
//!   older than the store from the first request on; a lost feed drops every entry it guarded;
//! - a database no feed can guard (feeds turned off, or none for that database) keeps its
//!   entries for `KZ_GROUPS_CACHE_TTL_MS` at most;
//! - what a feed reported is dropped again 2 s later ([`REDROP_AFTER`]): on a cluster, a view
//!   copy can receive a change after the feed announced it;
//! - a listing that must see this process's own recent write reads past the cache
//!   (`ViewQuery::fresh`), dropping the database's pages.
//!
//! So a change anyone makes is seen here within the feed's delay (about 0.1 s on CouchDB 3; on a
//! cluster, listings within 2 s at most), or the TTL where no feed can be had.
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use lru::LruCache;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::{
    BulkResult, Changed, Changes, DocStore, Feed, Leaf, RowStream, Store, StoreError, StoreResult,
    View, ViewQuery, ViewRow,
};
use crate::cache::{Bounded, CacheStats};
use crate::domain::ids::{DbName, DocId};

/// Listing queries of more rows than this are not kept (a full `paginate=false` listing).
pub const MAX_CACHED_ROWS: usize = 1000;
/// How long a feed waits for a change before asking again.
const FEED_WAIT: Duration = Duration::from_secs(25);
/// What a change feed reported is dropped again this long after: on a CouchDB cluster a view
/// copy may receive a change after the feed announced it, so a listing page read in between
/// could hold the old rows (internal replication takes well under a second).
const REDROP_AFTER: Duration = Duration::from_secs(2);
/// How long a feed waits after a batch of changes before asking for the next: under a burst of
/// writes it reads at most about 40 batches a second, and a change is seen this much later at
/// most.
const FEED_COALESCE: Duration = Duration::from_millis(25);
/// The first pause after a lost feed, doubled up to [`FEED_RETRY_MAX`].
const FEED_RETRY: Duration = Duration::from_millis(250);
const FEED_RETRY_MAX: Duration = Duration::from_secs(10);

/// Bounds and switches, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub doc_entries: usize,
    pub doc_bytes: usize,
    pub auth_entries: usize,
    pub auth_bytes: usize,
    pub listing_entries: usize,
    pub listing_bytes: usize,
    /// Databases followed one by one at most, where the store has no server-wide feed; 0
    /// follows no feed at all (entries live for `ttl`).
    pub feeds: usize,
    /// How long an entry of a database no feed guards is kept.
    pub ttl: Duration,
}

#[derive(Clone)]
struct Entry<V> {
    value: V,
    /// `None` while a feed guards the entry's database.
    expires: Option<Instant>,
}

impl<V> Entry<V> {
    fn fresh(&self) -> bool {
        self.expires.is_none_or(|at| Instant::now() < at)
    }
}

type DocKey = (String, String);
type ListingKey = (String, View, String);

/// The store with its caches: every call of the port goes through here.
pub struct CachedStore {
    inner: Store,
    docs: Bounded<DocKey, Entry<Option<Arc<Value>>>>,
    auth_docs: Bounded<DocKey, Entry<Option<Arc<Value>>>>,
    listings: Bounded<ListingKey, Entry<Arc<Vec<ViewRow>>>>,
    coherence: Arc<Coherence>,
}

impl CachedStore {
    /// Wraps `inner`; the feeds start on the current Tokio runtime, once something is cached.
    pub fn new(inner: Store, limits: CacheLimits) -> Arc<Self> {
        Arc::new_cyclic(|weak: &std::sync::Weak<CachedStore>| {
            let invalidate: Invalidate = {
                let weak = weak.clone();
                Arc::new(move |change: Option<&Changed>| {
                    if let Some(store) = weak.upgrade() {
                        store.forget(change);
                    }
                })
            };
            Self {
                docs: Bounded::new(limits.doc_entries, limits.doc_bytes),
                auth_docs: Bounded::new(limits.auth_entries, limits.auth_bytes),
                listings: Bounded::new(limits.listing_entries, limits.listing_bytes),
                coherence: Arc::new(Coherence::new(inner.clone(), limits, invalidate)),
                inner,
            }
        })
    }

    pub fn doc_stats(&self) -> CacheStats {
        self.docs.stats()
    }

    pub fn auth_stats(&self) -> CacheStats {
        self.auth_docs.stats()
    }

    /// Which cache holds a document: group documents (and the absent documents a group's id
    /// names) in one, what authentication reads in the other.
    fn cache_of(
        &self,
        db: &DbName,
        id: &DocId,
        doc: Option<&Value>,
    ) -> &Bounded<DocKey, Entry<Option<Arc<Value>>>> {
        let group = match doc {
            Some(doc) => doc.get("pvt_type").and_then(Value::as_str) == Some("group"),
            None => {
                DbName::parse_account_db(db.as_str())
                    .is_some_and(|account| account.as_str() != id.as_str())
                    && id.as_str() != "token_restrictions"
            }
        };
        if group {
            &self.docs
        } else {
            &self.auth_docs
        }
    }

    pub fn listing_stats(&self) -> CacheStats {
        self.listings.stats()
    }

    /// Drops what a change touches: a document and its database's listing pages, a whole
    /// database, or (`None`: a feed was lost) everything.
    fn forget(&self, change: Option<&Changed>) {
        match change {
            Some(Changed::Doc { db, id }) => {
                let key = (db.clone(), id.clone());
                self.docs.remove(&key);
                self.auth_docs.remove(&key);
                self.listings.remove_where(|(d, _, _)| d == db);
            }
            Some(Changed::Db(db)) => {
                self.docs.remove_where(|(d, _)| d == db);
                self.auth_docs.remove_where(|(d, _)| d == db);
                self.listings.remove_where(|(d, _, _)| d == db);
            }
            None => {
                self.docs.clear();
                self.auth_docs.clear();
                self.listings.clear();
            }
        }
    }

    /// Drops what a change heard elsewhere (Kazoo's notices on the bus) touched.
    pub fn heard(&self, change: &Changed) {
        self.coherence.announce();
        self.forget(Some(change));
    }

    /// Stops the change feeds for good, quietly: the process is stopping.
    pub fn stop_feeds(&self) {
        self.coherence.stop();
    }

    /// Drops what a write through this process touched, before its answer.
    fn written(&self, db: &DbName, id: &str) {
        self.heard(&Changed::Doc {
            db: db.as_str().to_owned(),
            id: id.to_owned(),
        });
    }
}

/// What a change feed calls to drop entries.
type Invalidate = Arc<dyn Fn(Option<&Changed>) + Send + Sync>;

/// The weight of a document entry: its JSON's length, times what a tree takes over its text.
fn doc_weight(doc: Option<&Value>) -> usize {
    64 + doc.map_or(0, |d| 8 * d.to_string().len())
}

fn rows_weight(rows: &[ViewRow]) -> usize {
    64 + rows
        .iter()
        .map(|r| {
            96 + r.id.len()
                + 8 * r.key.to_string().len()
                + r.value.get().len()
                + r.doc.as_ref().map_or(0, |d| d.get().len())
        })
        .sum::<usize>()
}

fn query_key(q: &ViewQuery) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{}|{:?}|{}|{}",
        q.key.as_ref().map(Value::to_string),
        q.startkey.as_ref().map(Value::to_string),
        q.endkey.as_ref().map(Value::to_string),
        q.startkey_docid,
        q.descending,
        q.limit,
        q.skip,
        q.include_docs
    )
}

#[async_trait]
impl DocStore for CachedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }

    async fn all_dbs(&self) -> StoreResult<Vec<String>> {
        self.inner.all_dbs().await
    }

    async fn create_db(&self, db: &DbName) -> StoreResult<()> {
        let created = self.inner.create_db(db).await;
        self.coherence.announce();
        self.forget(Some(&Changed::Db(db.as_str().to_owned())));
        created
    }

    async fn get_doc(&self, db: &DbName, id: &DocId) -> StoreResult<Option<Value>> {
        Ok(self.get_shared(db, id).await?.map(Arc::unwrap_or_clone))
    }

    async fn get_shared(&self, db: &DbName, id: &DocId) -> StoreResult<Option<Arc<Value>>> {
        if !self.docs.is_on() && !self.auth_docs.is_on() {
            return self.inner.get_shared(db, id).await;
        }
        let key = (db.as_str().to_owned(), id.as_str().to_owned());
        let cached = self.docs.get(&key).or_else(|| self.auth_docs.get(&key));
        if let Some(entry) = cached.filter(Entry::fresh) {
            return Ok(entry.value);
        }
        let read = self.coherence.begin(db);
        let doc = self.inner.get_shared(db, id).await?;
        let cache = self.cache_of(db, id, doc.as_deref());
        if cache.is_on() {
            if let Some(expires) = self.coherence.expiry(&read) {
                let weight = doc_weight(doc.as_deref());
                let entry = Entry {
                    value: doc.clone(),
                    expires,
                };
                cache.insert_if(key, entry, weight, || self.coherence.unchanged(&read));
            }
        }
        Ok(doc)
    }

    /// Read past the caches and never kept (users and devices in bulk would push out what the
    /// requests of every account need).
    async fn get_docs(&self, db: &DbName, ids: &[DocId]) -> StoreResult<Vec<Option<Value>>> {
        self.inner.get_docs(db, ids).await
    }

    async fn put_doc(&self, db: &DbName, id: &DocId, doc: &Value) -> StoreResult<String> {
        let written = self.inner.put_doc(db, id, doc).await;
        self.written(db, id.as_str());
        written
    }

    async fn delete_doc(&self, db: &DbName, id: &DocId, rev: &str) -> StoreResult<String> {
        let written = self.inner.delete_doc(db, id, rev).await;
        self.written(db, id.as_str());
        written
    }

    /// Old revisions and leaves are read for resolving conflicts, never kept.
    async fn get_rev(&self, db: &DbName, id: &DocId, rev: &str) -> StoreResult<Option<Value>> {
        self.inner.get_rev(db, id, rev).await
    }

    async fn leaves(&self, db: &DbName, id: &DocId) -> StoreResult<Vec<Leaf>> {
        self.inner.leaves(db, id).await
    }

    /// Drops every document the request named, whatever came of each (a failed request may
    /// still have written some).
    async fn bulk_docs(&self, db: &DbName, docs: &[Value]) -> StoreResult<Vec<BulkResult>> {
        let written = self.inner.bulk_docs(db, docs).await;
        self.coherence.announce();
        for id in docs
            .iter()
            .filter_map(|doc| doc.get("_id").and_then(Value::as_str))
        {
            self.forget(Some(&Changed::Doc {
                db: db.as_str().to_owned(),
                id: id.to_owned(),
            }));
        }
        written
    }

    async fn get_attachment(
        &self,
        db: &DbName,
        id: &DocId,
        name: &str,
    ) -> StoreResult<Option<Bytes>> {
        self.inner.get_attachment(db, id, name).await
    }

    async fn put_attachment(
        &self,
        db: &DbName,
        id: &DocId,
        name: &str,
        rev: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> StoreResult<String> {
        let written = self
            .inner
            .put_attachment(db, id, name, rev, content_type, body)
            .await;
        self.written(db, id.as_str());
        written
    }

    async fn get_design(&self, db: &DbName, name: &str) -> StoreResult<Option<Value>> {
        self.inner.get_design(db, name).await
    }

    async fn put_design(&self, db: &DbName, name: &str, doc: &Value) -> StoreResult<String> {
        let written = self.inner.put_design(db, name, doc).await;
        self.written(db, &format!("_design/{name}"));
        written
    }

    async fn build_index(&self, db: &DbName, design: &str, view: &str) -> StoreResult<()> {
        self.inner.build_index(db, design, view).await
    }

    async fn delete_design(&self, db: &DbName, name: &str, rev: &str) -> StoreResult<String> {
        let deleted = self.inner.delete_design(db, name, rev).await;
        self.written(db, &format!("_design/{name}"));
        deleted
    }

    async fn view_rows(
        &self,
        db: &DbName,
        view: View,
        query: &ViewQuery,
    ) -> StoreResult<RowStream> {
        let small = query.limit.is_some_and(|n| n <= MAX_CACHED_ROWS);
        if query.fresh {
            self.coherence.announce();
            self.listings.remove_where(|(d, _, _)| d == db.as_str());
        }
        if !self.listings.is_on() || !small || query.fresh {
            return self.inner.view_rows(db, view, query).await;
        }
        let key = (db.as_str().to_owned(), view, query_key(query));
        let rows = match self.listings.get(&key).filter(Entry::fresh) {
            Some(entry) => entry.value,
            None => {
                let read = self.coherence.begin(db);
                let rows: Vec<ViewRow> = self
                    .inner
                    .view_rows(db, view, query)
                    .await?
                    .try_collect()
                    .await?;
                let rows = Arc::new(rows);
                if let Some(expires) = self.coherence.expiry(&read) {
                    let weight = rows_weight(&rows);
                    let entry = Entry {
                        value: rows.clone(),
                        expires,
                    };
                    let unchanged = || self.coherence.unchanged(&read);
                    self.listings.insert_if(key, entry, weight, unchanged);
                }
                rows
            }
        };
        let owned: Vec<StoreResult<ViewRow>> = rows.iter().cloned().map(Ok).collect();
        Ok(futures::stream::iter(owned).boxed())
    }

    async fn all_docs(&self, db: &DbName) -> StoreResult<RowStream> {
        self.inner.all_docs(db).await
    }

    fn accepted_writes(&self) -> u64 {
        self.inner.accepted_writes()
    }

    fn accepted_docs(&self) -> Option<tokio::sync::broadcast::Receiver<(DbName, DocId)>> {
        self.inner.accepted_docs()
    }

    async fn feed_end(&self, feed: Feed<'_>) -> StoreResult<Option<Value>> {
        self.inner.feed_end(feed).await
    }

    async fn feed_next(
        &self,
        feed: Feed<'_>,
        since: &Value,
        wait: Duration,
    ) -> StoreResult<Changes> {
        self.inner.feed_next(feed, since, wait).await
    }
}

/// A read that may be kept: when it started, and how a feed guarded its database then.
pub struct Read {
    epoch: u64,
    guard: Guard,
}

/// How a database's cached entries are kept true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// A live feed: an entry is kept until the feed reports a change.
    Live = 1,
    /// A feed is meant to run but has no start point yet (starting, or retrying after a loss):
    /// what is read now is not kept, since a change made before the feed starts would never
    /// drop it. So from the first request on, no entry outlives a change it missed.
    Pending = 0,
    /// No feed can be had (none configured, or none for this database): entries are kept
    /// for the TTL.
    Unfollowed = 2,
}

/// A feed's [`Guard`], shared between its task and the reads it guards.
#[derive(Clone, Default)]
struct FeedState(Arc<AtomicU8>);

impl FeedState {
    fn set(&self, guard: Guard) {
        self.0.store(guard as u8, Ordering::Release);
    }

    fn get(&self) -> Guard {
        match self.0.load(Ordering::Acquire) {
            x if x == Guard::Live as u8 => Guard::Live,
            x if x == Guard::Unfollowed as u8 => Guard::Unfollowed,
            _ => Guard::Pending,
        }
    }
}

/// The feeds that keep the caches true, and the epoch that says whether a change was
/// announced while a read was under way.
struct Coherence {
    store: Store,
    limits: CacheLimits,
    invalidate: Invalidate,
    /// Moves on at every change announced and every feed that starts or stops.
    epoch: Arc<AtomicU64>,
    /// The server-wide feed, once asked for.
    server: Mutex<ServerFeed>,
    /// Per-database feeds, least recently used first.
    dbs: Mutex<LruCache<String, DbFeed>>,
    /// Set when the process stops: no feed starts, and what a stop does to a feed's connection
    /// is not reported as a lost feed.
    stopped: AtomicBool,
}

enum ServerFeed {
    /// Not asked yet.
    Unknown,
    /// Being started, or running (live once its start point is known).
    Running(FeedState, JoinHandle<()>),
    /// The store has none: databases are followed one by one.
    Absent,
}

struct DbFeed {
    state: FeedState,
    task: JoinHandle<()>,
}

impl Drop for DbFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Coherence {
    fn new(store: Store, limits: CacheLimits, invalidate: Invalidate) -> Self {
        Self {
            store,
            limits,
            invalidate,
            epoch: Arc::new(AtomicU64::new(0)),
            server: Mutex::new(ServerFeed::Unknown),
            dbs: Mutex::new(LruCache::unbounded()),
            stopped: AtomicBool::new(false),
        }
    }

    /// Stops every feed, for good: the process is stopping.
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let ServerFeed::Running(_, task) =
            &*self.server.lock().unwrap_or_else(|p| p.into_inner())
        {
            task.abort();
        }
        self.dbs.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn announce(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Before a read from the store: notes the epoch, and whether a feed guards `db` (starting
    /// one if none does).
    fn begin(self: &Arc<Self>, db: &DbName) -> Read {
        let epoch = self.epoch.load(Ordering::Acquire);
        Read {
            epoch,
            guard: self.guard(db),
        }
    }

    /// Whether no change was announced since `read` began: asked as its value goes into a
    /// cache, under that cache's lock ([`Bounded::insert_if`]), since every change is announced
    /// before the entries it touches are removed.
    fn unchanged(&self, read: &Read) -> bool {
        self.epoch.load(Ordering::Acquire) == read.epoch
    }

    /// After the read: how long its value may be kept, if no change raced it (`Some(None)`:
    /// while a feed guards it; `Some(Some(t))`: until `t`; `None`: not at all, no feed was live
    /// yet).
    fn expiry(&self, read: &Read) -> Option<Option<Instant>> {
        match read.guard {
            Guard::Live => Some(None),
            Guard::Pending => None,
            Guard::Unfollowed => Some(Some(Instant::now() + self.limits.ttl)),
        }
    }

    /// How `db`'s entries are guarded; starts the feed that would guard them.
    fn guard(self: &Arc<Self>, db: &DbName) -> Guard {
        if self.limits.feeds == 0 {
            return Guard::Unfollowed;
        }
        if self.stopped() {
            return Guard::Pending;
        }
        {
            let mut server = self.server.lock().unwrap_or_else(|p| p.into_inner());
            match &*server {
                ServerFeed::Running(state, _) => return state.get(),
                ServerFeed::Unknown => {
                    let state = FeedState::default();
                    let this = self.clone();
                    let shared = state.clone();
                    let task = tokio::spawn(async move { this.follow_server(shared).await });
                    *server = ServerFeed::Running(state, task);
                    return Guard::Pending;
                }
                ServerFeed::Absent => {}
            }
        }
        let mut dbs = self.dbs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(feed) = dbs.get(db.as_str()) {
            return feed.state.get();
        }
        while dbs.len() >= self.limits.feeds {
            // The least recently used database's feed stops; what it guarded goes.
            if let Some((dropped, _)) = dbs.pop_lru() {
                self.announce();
                (self.invalidate)(Some(&Changed::Db(dropped)));
            }
        }
        let state = FeedState::default();
        let this = self.clone();
        let (name, shared) = (db.clone(), state.clone());
        let task = tokio::spawn(async move { this.follow_db(name, shared).await });
        dbs.put(db.as_str().to_owned(), DbFeed { state, task });
        Guard::Pending
    }

    /// The server-wide feed: where the store has none, databases are followed one by one.
    async fn follow_server(self: Arc<Self>, state: FeedState) {
        let mut pause = FEED_RETRY;
        loop {
            let start = match self.store.feed_end(Feed::Server).await {
                Ok(Some(seq)) => seq,
                Ok(None) => {
                    log::info!("the store has no server-wide change feed: databases are followed one by one");
                    *self.server.lock().unwrap_or_else(|p| p.into_inner()) = ServerFeed::Absent;
                    return;
                }
                Err(_) if self.stopped() => return,
                Err(e) => {
                    log::warn!(
                        "cannot start the store's change feed ({e}): nothing cached until it \
                         starts; retrying in {pause:?}"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(FEED_RETRY_MAX);
                    continue;
                }
            };
            // Reads that began before this point were not guarded: they are not kept.
            self.announce();
            state.set(Guard::Live);
            log::info!("following the store's server-wide change feed");
            let lost = self.run(Feed::Server, start).await;
            state.set(Guard::Pending);
            self.announce();
            (self.invalidate)(None);
            if self.stopped() {
                return;
            }
            log::warn!(
                "the store's server-wide change feed was lost ({lost}): every cached entry \
                 dropped, nothing cached until it is read again in {pause:?}"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(FEED_RETRY_MAX);
        }
    }

    /// One database's feed, until it is stopped (its task aborted) or the database is gone.
    async fn follow_db(self: Arc<Self>, name: DbName, state: FeedState) {
        let db = name.as_str().to_owned();
        let mut pause = FEED_RETRY;
        loop {
            let start = match self.store.feed_end(Feed::Db(&name)).await {
                Ok(Some(seq)) => seq,
                // No feed for this database (or no database): its entries keep their TTL.
                Ok(None) | Err(StoreError::NotFound) => {
                    state.set(Guard::Unfollowed);
                    return;
                }
                Err(_) if self.stopped() => return,
                Err(e) => {
                    log::warn!(
                        "cannot start the change feed of {db} ({e}): nothing of it cached until \
                         it starts; retrying in {pause:?}"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(FEED_RETRY_MAX);
                    continue;
                }
            };
            self.announce();
            state.set(Guard::Live);
            let lost = self.run(Feed::Db(&name), start).await;
            state.set(Guard::Pending);
            self.announce();
            (self.invalidate)(Some(&Changed::Db(db.clone())));
            if matches!(lost, StoreError::NotFound) || self.stopped() {
                return;
            }
            log::warn!(
                "the change feed of {db} was lost ({lost}): its cached entries dropped, nothing \
                 of it cached until it is read again in {pause:?}"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(FEED_RETRY_MAX);
        }
    }

    /// Drops what `changed` touches once more after [`REDROP_AFTER`] (one timer per feed batch).
    fn drop_again_later(&self, changed: Vec<Changed>) {
        let invalidate = self.invalidate.clone();
        let epoch = self.epoch.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REDROP_AFTER).await;
            epoch.fetch_add(1, Ordering::AcqRel);
            for change in &changed {
                invalidate(Some(change));
            }
        });
    }

    /// Reads a feed from `since` on, dropping what each change touches, until it fails.
    async fn run(&self, feed: Feed<'_>, mut since: Value) -> StoreError {
        loop {
            match self.store.feed_next(feed, &since, FEED_WAIT).await {
                Ok(changes) => {
                    if !changes.changed.is_empty() {
                        self.announce();
                        for change in &changes.changed {
                            (self.invalidate)(Some(change));
                        }
                        self.drop_again_later(changes.changed.clone());
                    }
                    if !changes.last_seq.is_null() {
                        since = changes.last_seq;
                    }
                    if !changes.changed.is_empty() {
                        // A burst of writes is read in a few batches, not a request each.
                        tokio::time::sleep(FEED_COALESCE).await;
                    }
                }
                Err(e) => return e,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::AccountId;
    use crate::store::embedded::EmbeddedStore;
    use serde_json::json;

    #[tokio::test]
    async fn a_fresh_query_reads_past_a_cached_page_and_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let limits = CacheLimits {
            doc_entries: 100,
            doc_bytes: 1 << 20,
            auth_entries: 100,
            auth_bytes: 1 << 20,
            listing_entries: 100,
            listing_bytes: 1 << 20,
            feeds: 0,
            ttl: Duration::from_secs(60),
        };
        let cached = CachedStore::new(inner.clone(), limits);
        let db = AccountId::parse("4b31dd1d32ce6d249897c06332375d65")
            .unwrap()
            .db();
        inner.create_db(&db).await.unwrap();
        let design = json!({"views": {"crossbar_listing": {"map": "f"}}});
        inner.put_design(&db, "groups", &design).await.unwrap();
        let put = |id: &str| {
            let (inner, db, id) = (inner.clone(), db.clone(), DocId::parse(id).unwrap());
            async move {
                let doc = json!({"pvt_type": "group", "name": id.as_str()});
                inner.put_doc(&db, &id, &doc).await.unwrap();
            }
        };
        put("a").await;
        let query = ViewQuery {
            limit: Some(10),
            ..Default::default()
        };
        let ids = |rows: Vec<ViewRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let list = |query: ViewQuery| {
            let (cached, db) = (cached.clone(), db.clone());
            async move {
                let rows = cached.query_view(&db, View::GroupsListing, &query).await;
                ids(rows.unwrap())
            }
        };
        assert_eq!(list(query.clone()).await, ["a"]);
        // Written behind the cache's back (no feed here): the page kept is older.
        put("b").await;
        assert_eq!(list(query.clone()).await, ["a"]);
        let fresh = ViewQuery {
            fresh: true,
            ..query.clone()
        };
        assert_eq!(list(fresh).await, ["a", "b"]);
        // The old page went with it.
        assert_eq!(list(query).await, ["a", "b"]);
    }
}
