//! The group history's change-feed follower (issue 18): records the group changes that have no
//! entry, whoever made them. It reads the account databases' change feeds (the databases the
//! store's server-wide feed names, CouchDB's `_db_updates` or the embedded store's own; where
//! the server has none, as pouchdb-server, the account databases this process served in the
//! last [`WATCH_FOR`]) from a checkpoint kept per database in the history store, so a stop, a
//! SIGKILL or a store outage resumes where it was and misses nothing.
//!
//! The rule, for a changed group document whose current revision has no entry after
//! [`GRACE`] (the writer's own entry normally lands first):
//! - an entry still queued in this process (the history store is out): left to the queue, and
//!   the checkpoint is not moved past it;
//! - found in the first read of a database that has a checkpoint (the changes made while no
//!   kz-groups instance of this store was recording: a stop, a crash between a write and its
//!   entry): recorded with the actor `unknown`, since a write of kz-groups and one of another
//!   writer cannot be told apart from the document;
//! - otherwise: the actor `outside` (Kazoo, a script writing to CouchDB, another tool).
//!
//! The change feeds give a document's latest revision: several outside changes between two
//! reads are one entry, whose difference spans them. The difference is taken against the
//! group's newest entry. A tombstone is recorded (`hard_deleted`) only for a group with entries.
//! Entry ids are the revisions' (`domain::history`), so instances recording one change write
//! one entry.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use crate::domain::clock;
use crate::domain::group;
use crate::domain::history::{self, Action, Actor, Change};
use crate::domain::ids::{AccountId, DbName, DocId};
use crate::history::Recorder;
use crate::store::{Changed, Feed, Store, StoreError, StoreResult};

/// How long a change is left to its writer's own entry.
pub const GRACE: Duration = Duration::from_secs(2);
/// How often the feeds are read.
const POLL: Duration = Duration::from_secs(1);
/// Without a server-wide feed: how long a database is followed after its last request here.
pub const WATCH_FOR: Duration = Duration::from_secs(600);
/// Without a server-wide feed: databases followed at most (the least recently used leave).
const WATCHED: usize = 256;
/// The server-wide feed's checkpoint name.
const SERVER: &str = "server";
/// Databases whose feed position is held in memory, at most (the least recently read go first).
/// A database read again after its position went is read on from its checkpoint in the history
/// store, as after a start: what changed meanwhile without an entry is recorded as `unknown`.
const POSITIONS: std::num::NonZeroUsize = std::num::NonZeroUsize::new(10_000).unwrap();

pub struct HistoryFeed {
    store: Store,
    recorder: Arc<Recorder>,
    watched: Mutex<LruCache<String, Instant>>,
}

/// What the follower found of one changed document.
enum Found {
    /// Not a group, or its change has an entry.
    Settled,
    /// Its entry is queued in this process.
    Pending,
    /// Its change has no entry: this one.
    New(Box<history::Entry>),
}

/// Where one database's feed was read up to, in this process.
struct Position {
    since: Value,
    /// The first read since this process began following the database, which had a
    /// checkpoint: its changes fell in a gap of the recording.
    gap: bool,
}

fn checkpoint_name(db: &DbName) -> String {
    format!("db-{}", db.as_str().replace('/', "+"))
}

impl HistoryFeed {
    pub fn new(store: Store, recorder: Arc<Recorder>) -> Self {
        Self {
            store,
            recorder,
            watched: Mutex::new(LruCache::new(WATCHED.try_into().expect("non-zero"))),
        }
    }

    /// A database this process served: followed where no server-wide feed names it.
    pub fn watch(&self, db: &DbName) {
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(db.as_str().to_owned(), Instant::now());
    }

    /// Starts the worker; it runs until its handle is aborted.
    pub fn start(self: &Arc<Self>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.run().await })
    }

    async fn run(&self) {
        let mut positions: LruCache<String, Position> = LruCache::new(POSITIONS);
        let mut server: Option<Value> = None;
        loop {
            let dbs = self.changed_dbs(&mut server).await;
            for db in dbs {
                if let Err(e) = self.follow_db(&db, &mut positions).await {
                    log::warn!("history: cannot read the change feed of {db} ({e}); later");
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The account databases to read: those the server-wide feed names since it was last read
    /// (from its checkpoint), else the watched ones.
    async fn changed_dbs(&self, server: &mut Option<Value>) -> Vec<DbName> {
        let history = &self.recorder.store;
        if server.is_none() {
            *server = match history.checkpoint(SERVER).await {
                Ok(Some(since)) => Some(since),
                _ => self.store.feed_end(Feed::Server).await.ok().flatten(),
            };
        }
        let Some(since) = server.clone() else {
            return self.watched_dbs();
        };
        let mut names: Vec<String> = Vec::new();
        match self
            .store
            .feed_next(Feed::Server, &since, Duration::ZERO)
            .await
        {
            Ok(changes) => {
                for changed in changes.changed {
                    let name = match changed {
                        Changed::Db(name) => name,
                        Changed::Doc { db, .. } => db,
                    };
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                let _ = history.set_checkpoint(SERVER, &changes.last_seq).await;
                *server = Some(changes.last_seq);
            }
            Err(e) => log::warn!("history: cannot read the server-wide feed ({e})"),
        }
        let mut dbs: Vec<DbName> = names
            .iter()
            .filter_map(|n| DbName::parse_account_db(n))
            .map(|a| a.db())
            .collect();
        dbs.extend(self.watched_dbs());
        dbs.dedup();
        dbs
    }

    fn watched_dbs(&self) -> Vec<DbName> {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let stale: Vec<String> = watched
            .iter()
            .filter(|(_, at)| now.duration_since(**at) > WATCH_FOR)
            .map(|(db, _)| db.clone())
            .collect();
        for db in stale {
            watched.pop(&db);
        }
        watched
            .iter()
            .filter_map(|(db, _)| DbName::parse_account_db(db))
            .map(|a| a.db())
            .collect()
    }

    /// Reads one database's feed on from its position and records what has no entry.
    async fn follow_db(
        &self,
        db: &DbName,
        positions: &mut LruCache<String, Position>,
    ) -> StoreResult<()> {
        let Some(account) = DbName::parse_account_db(db.as_str()) else {
            return Ok(());
        };
        let name = checkpoint_name(db);
        if !positions.contains(&name) {
            let saved = self.recorder.store.checkpoint(&name).await?;
            let position = Position {
                gap: saved.is_some(),
                since: saved.unwrap_or(Value::from(0)),
            };
            positions.put(name.clone(), position);
        }
        let position = positions.get_mut(&name).expect("inserted above");
        let changes = match self
            .store
            .feed_next(Feed::Db(db), &position.since, Duration::ZERO)
            .await
        {
            Ok(changes) => changes,
            // The embedded store keeps its last 10,000 changes: a checkpoint older than those
            // cannot be read on from. What was missed stays missed; said once, loudly.
            Err(StoreError::Other { reason, .. }) if reason.contains("moved on") => {
                log::error!(
                    "history: the change feed of {db} moved on past the checkpoint: changes \
                     made meanwhile without an entry are not recorded"
                );
                if let Some(end) = self.store.feed_end(Feed::Db(db)).await? {
                    position.since = end;
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let ids: Vec<DocId> = changes
            .changed
            .iter()
            .filter_map(|c| match c {
                Changed::Doc { id, .. } => DocId::parse(id),
                Changed::Db(_) => None,
            })
            .collect();
        if !ids.is_empty() {
            tokio::time::sleep(GRACE).await;
        }
        let actor = if position.gap {
            Actor::Unknown
        } else {
            Actor::Outside
        };
        let mut complete = true;
        let mut found = Vec::new();
        for id in &ids {
            let rev = changes.revs.get(id.as_str()).map(String::as_str);
            let known = match rev {
                Some(rev) => self.known(&account, id, rev).await?,
                None => None,
            };
            match known {
                Some(written) => complete &= written,
                None => match self.record(&account, db, id, &actor, rev).await? {
                    Found::Settled => {}
                    Found::Pending => complete = false,
                    Found::New(entry) => found.push(*entry),
                },
            }
        }
        // The changes of one read in one write.
        for chunk in found.chunks(500) {
            let written = self.recorder.write_now(chunk).await?;
            self.recorder.recovered(written);
        }
        if complete {
            position.gap = false;
            position.since = changes.last_seq.clone();
            self.recorder
                .store
                .set_checkpoint(&name, &changes.last_seq)
                .await?;
        }
        Ok(())
    }

    /// Records the document's current revision if it is a group's and has no entry; `false`
    /// when its entry is still queued in this process.
    /// What is known of a change by its revision alone, without reading the document: `true`
    /// when its entry is written, `false` when it is queued here, `None` when it has none.
    async fn known(&self, account: &AccountId, id: &DocId, rev: &str) -> StoreResult<Option<bool>> {
        let entry_id = history::entry_id(rev);
        if self.recorder.is_pending(account, id, &entry_id) {
            return Ok(Some(false));
        }
        if self.recorder.wrote(account, id, &entry_id)
            || self.recorder.store.contains(account, id, &entry_id).await?
        {
            return Ok(Some(true));
        }
        Ok(None)
    }

    /// The entry of the document's current revision, if it is a group's and has none
    /// (`checked`: the revision the feed named, whose entry [`Self::known`] looked for).
    async fn record(
        &self,
        account: &AccountId,
        db: &DbName,
        id: &DocId,
        actor: &Actor,
        checked: Option<&str>,
    ) -> StoreResult<Found> {
        // One document at a time: a group may be megabytes.
        let (rev, after) = match self.store.get_doc(db, id).await? {
            Some(Value::Object(doc)) => {
                if doc.get("pvt_type").and_then(Value::as_str) != Some(group::GROUP_TYPE) {
                    return Ok(Found::Settled);
                }
                let rev = doc.get("_rev").and_then(Value::as_str).unwrap_or("");
                (rev.to_owned(), Some(doc))
            }
            _ => match self.tombstone(db, id).await? {
                Some(rev) => (rev, None),
                None => return Ok(Found::Settled),
            },
        };
        if checked != Some(rev.as_str()) {
            match self.known(account, id, &rev).await? {
                Some(true) => return Ok(Found::Settled),
                Some(false) => return Ok(Found::Pending),
                None => {}
            }
        }
        // A first revision has nothing before it.
        let previous = if rev.starts_with("1-") {
            None
        } else {
            let history = &self.recorder.store;
            history
                .group(account, id, None, 1)
                .await?
                .into_iter()
                .next()
        };
        if after.is_none() && previous.is_none() {
            // A deleted document this history never knew as a group.
            return Ok(Found::Settled);
        }
        let change = outside_change(account, id, actor, rev, previous, after);
        Ok(Found::New(Box::new(change.entry())))
    }

    /// The revision of a deleted document's tombstone, when it has one.
    async fn tombstone(&self, db: &DbName, id: &DocId) -> StoreResult<Option<String>> {
        let leaves = self.store.leaves(db, id).await?;
        Ok(leaves
            .into_iter()
            .filter(|l| l.deleted)
            .max_by_key(|l| history::entry_id(&l.rev))
            .map(|l| l.rev))
    }
}

fn outside_change(
    account: &AccountId,
    id: &DocId,
    actor: &Actor,
    rev: String,
    previous: Option<history::Entry>,
    after: Option<Map<String, Value>>,
) -> Change {
    let timestamp = after
        .as_ref()
        .and_then(|d| d.get("pvt_modified"))
        .and_then(Value::as_i64)
        .unwrap_or_else(clock::gregorian_now);
    let before = previous.as_ref().and_then(|p| {
        let mut doc = p.version.clone()?;
        // The version is a public view: `id` back to `_id`, `deleted` to the flag it shows.
        if let Some(id) = doc.shift_remove("id") {
            doc.insert("_id".into(), id);
        }
        if doc.shift_remove("deleted").is_some() {
            doc.insert("pvt_deleted".into(), Value::Bool(true));
        }
        Some(doc)
    });
    Change {
        account: account.clone(),
        group: id.clone(),
        action: if after.is_some() {
            Action::Changed
        } else {
            Action::HardDeleted
        },
        actor: actor.clone(),
        timestamp,
        request_id: after
            .as_ref()
            .and_then(|d| d.get("pvt_request_id"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        rev_before: previous.map(|p| p.rev_after),
        rev_after: rev,
        merged_leaves: Vec::new(),
        before,
        after,
    }
}
