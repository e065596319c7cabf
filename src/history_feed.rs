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
//! The change feeds give a document's latest revision: the revisions between the group's newest
//! entry and it are walked back in CouchDB's revision history ([`HistoryFeed::gap`]) while their
//! bodies are kept; otherwise one entry's difference spans them. The difference is taken against
//! the group's newest entry. A tombstone is recorded (`hard_deleted`) only for a group with
//! entries. Entry ids are the revisions' (`domain::history`), so instances recording one change
//! write one entry.
//!
//! A pass reads every changed database's feed, waits the grace once, then settles each
//! database: the entries this process wrote or queued are known without the store, those any
//! instance wrote lately from the history's own change feed (read once per pass); the rest are
//! looked for in one read of the history store, and only the documents still without one are
//! read ([`DOCS_READ`] at a time). A database left unsettled (a failure, an entry still
//! queued) is read again next pass; the server-wide feed's checkpoint moves only when none is
//! left, so a stop or a SIGKILL never skips a database it named. Every pass is counted
//! (`kz_groups_history_feed_passes_total`, by result).
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::domain::group;
use crate::domain::history::{self, Actor, Change};
use crate::domain::ids::{AccountId, DbName, DocId};
use crate::history::{Overwritten, Recorder, GRACE};
use crate::json;
use crate::store::{Changed, Feed, Store, StoreError, StoreResult};

/// How often the feeds are read.
const POLL: Duration = Duration::from_secs(1);
/// Changed documents read per call: few, since a group may be as large as an upload may be
/// (`KZ_GROUPS_MAX_UPLOAD_BYTES`, 8 MB by default).
const DOCS_READ: usize = 10;
/// Entries written in one call, at most.
const WRITE_BATCH: usize = 500;
/// The entries found in one database's read are written once they take this much memory (or
/// [`WRITE_BATCH`] of them), not all at its end: a read of many large groups never holds them all.
const FOUND_BYTES: usize = 8 << 20;
/// Without a server-wide feed: how long a database is followed after its last request here.
pub const WATCH_FOR: Duration = Duration::from_secs(600);
/// Without a server-wide feed: databases followed at most (the least recently used leave).
const WATCHED: usize = 256;
/// The server-wide feed's checkpoint name.
const SERVER: &str = "server";
/// Entries written lately by any instance that are remembered, at most.
const RECENT: std::num::NonZeroUsize = std::num::NonZeroUsize::new(100_000).unwrap();
/// Reads of the history's own change feed per pass, at most.
const WRITTEN_READS: usize = 20;
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
    /// Its change has no entry: these (the revisions before it that had none either, oldest
    /// first, then its own).
    New(Vec<history::Entry>),
}

/// The server-wide feed (CouchDB's `_db_updates`), as this process reads it.
#[derive(Default)]
struct ServerFeed {
    /// Where it was read up to (`None`: not known yet, or no such feed).
    read: Option<Value>,
    /// Its checkpoint as last kept.
    saved: Option<Value>,
    /// The account databases named since the last pass.
    named: Vec<DbName>,
}

/// The history's own change feed, as this process reads it.
struct WrittenFeed {
    /// Where it was read up to (`None`: not yet; the first read starts from its end).
    seq: Option<Value>,
    /// The stored ids of the entries written lately, by any instance (at most [`RECENT`]).
    ids: LruCache<String, ()>,
}

/// One database's feed as read, its changes to be settled after the grace.
struct Read {
    db: DbName,
    account: AccountId,
    /// Its checkpoint's name.
    name: String,
    /// Read from a checkpoint in a gap of the recording ([`Position::gap`]).
    gap: bool,
    /// The changed documents.
    ids: Vec<DocId>,
    changes: crate::store::Changes,
}

/// Where one database's feed was read up to, in this process.
struct Position {
    since: Value,
    /// The first read since this process began following the database, which had a
    /// checkpoint: its changes fell in a gap of the recording.
    gap: bool,
}

/// The memory an entry's documents take: its version and the values its difference names.
fn entry_cost(entry: &history::Entry) -> usize {
    let changed = entry
        .changes
        .iter()
        .flat_map(|c| [&c.old, &c.new])
        .flatten();
    entry.version.as_ref().map_or(0, json::object_cost)
        + changed.map(json::value_cost).sum::<usize>()
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
        let mut server = ServerFeed::default();
        let mut written = WrittenFeed {
            seq: None,
            ids: LruCache::new(RECENT),
        };
        // Databases left unsettled by the last pass (a failure, an entry still queued).
        let mut retry: Vec<DbName> = Vec::new();
        loop {
            let mut ok = self.read_server(&mut server).await;
            let mut dbs = std::mem::take(&mut server.named);
            dbs.extend(self.watched_dbs());
            dbs.append(&mut retry);
            dbs.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            dbs.dedup();
            let mut reads = Vec::new();
            for db in dbs {
                match self.read_db(&db, &mut positions).await {
                    Ok(read) => reads.extend(read),
                    Err(e) => {
                        log::warn!("history: cannot read the change feed of {db} ({e}); later");
                        retry.push(db);
                        ok = false;
                    }
                }
            }
            // The writers' own entries normally land within the grace: one wait for the pass.
            if reads.iter().any(|r| !r.ids.is_empty()) {
                tokio::time::sleep(GRACE).await;
                self.read_written(&mut written).await;
            }
            for read in reads {
                let db = read.db.clone();
                match self.settle_db(read, &mut positions, &written.ids).await {
                    Ok(true) => {}
                    Ok(false) => retry.push(db),
                    Err(e) => {
                        log::warn!("history: cannot record the changes of {db} ({e}); later");
                        retry.push(db);
                        ok = false;
                    }
                }
            }
            if let Err(e) = self.settle_overwritten().await {
                log::warn!("history: cannot check the revisions written over ({e})");
                ok = false;
            }
            // The server-wide feed's checkpoint moves only past databases all settled: a stop
            // now finds the others named again.
            if retry.is_empty() {
                self.save_server(&mut server).await;
            }
            self.recorder.feed_pass(ok);
            tokio::time::sleep(POLL).await;
        }
    }

    /// Reads the server-wide feed on from where it was read (its checkpoint after a start;
    /// its end at a first start), noting the account databases it names; `false` when it
    /// could not be read. Without one (pouchdb-server) nothing is named.
    async fn read_server(&self, server: &mut ServerFeed) -> bool {
        let history = &self.recorder.store;
        if server.read.is_none() {
            // A checkpoint that cannot be read yet is not skipped: the next pass asks again.
            let start = match history.checkpoint(SERVER).await {
                Ok(Some(since)) => {
                    server.saved = Some(since.clone());
                    Ok(Some(since))
                }
                Ok(None) => self.store.feed_end(Feed::Server).await,
                Err(e) => Err(e),
            };
            match start {
                Ok(start) => server.read = start,
                Err(e) => {
                    log::warn!("history: cannot find where to read the server-wide feed ({e})");
                    return false;
                }
            }
        }
        let Some(since) = server.read.clone() else {
            return true;
        };
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
                    if let Some(account) = DbName::parse_account_db(&name) {
                        server.named.push(account.db());
                    }
                }
                server.read = Some(changes.last_seq);
                true
            }
            Err(e) => {
                log::warn!("history: cannot read the server-wide feed ({e})");
                false
            }
        }
    }

    /// Reads on the history's own change feed: the entries every instance wrote since the last
    /// pass, so a peer's change is settled without looking its entry up. A failure only means
    /// lookups.
    async fn read_written(&self, written: &mut WrittenFeed) {
        // A long backlog is read over several passes.
        for _ in 0..WRITTEN_READS {
            match self
                .recorder
                .store
                .written_since(written.seq.as_ref())
                .await
            {
                Ok(Some(read)) => {
                    let more = !read.ids.is_empty();
                    for id in read.ids {
                        written.ids.put(id, ());
                    }
                    written.seq = Some(read.last_seq);
                    if !more {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    log::debug!("history: cannot read the history's change feed ({e})");
                    return;
                }
            }
        }
    }

    /// Keeps where the server-wide feed was read up to, when it moved.
    async fn save_server(&self, server: &mut ServerFeed) {
        let Some(read) = server.read.clone() else {
            return;
        };
        if server.saved.as_ref() == Some(&read) {
            return;
        }
        match self.recorder.store.set_checkpoint(SERVER, &read).await {
            Ok(()) => server.saved = Some(read),
            Err(e) => log::warn!("history: cannot keep the server-wide feed's checkpoint ({e})"),
        }
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

    /// Reads one database's feed on from its position.
    async fn read_db(
        &self,
        db: &DbName,
        positions: &mut LruCache<String, Position>,
    ) -> StoreResult<Option<Read>> {
        let Some(account) = DbName::parse_account_db(db.as_str()) else {
            return Ok(None);
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
                return Ok(None);
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
        Ok(Some(Read {
            db: db.clone(),
            account,
            name,
            gap: position.gap,
            ids,
            changes,
        }))
    }

    /// Records the changes of one database's read that have no entry, and moves its checkpoint
    /// past them when none is left waiting (`false` when one is: an entry still queued here).
    async fn settle_db(
        &self,
        read: Read,
        positions: &mut LruCache<String, Position>,
        written: &LruCache<String, ()>,
    ) -> StoreResult<bool> {
        let Read {
            db,
            account,
            name,
            gap,
            ids,
            changes,
        } = read;
        let db = &db;
        let actor = if gap { Actor::Unknown } else { Actor::Outside };
        let mut complete = true;
        // What this process knows, what the history's feed showed written, then what the
        // history store holds, in one read.
        let mut unknown: Vec<(DocId, Option<String>)> = Vec::new();
        for id in ids {
            let rev = changes.revs.get(id.as_str()).cloned();
            let known = rev.as_deref().and_then(|rev| {
                self.known_here(&account, &id, rev).or_else(|| {
                    let key = history::stored_id(&account, &id, &history::EntryId::of_rev(rev));
                    written.contains(&key).then_some(true)
                })
            });
            match known {
                Some(done) => complete &= done,
                None => unknown.push((id, rev)),
            }
        }
        let keys: Vec<String> = unknown
            .iter()
            .filter_map(|(id, rev)| {
                let rev = rev.as_deref()?;
                Some(history::stored_id(
                    &account,
                    id,
                    &history::EntryId::of_rev(rev),
                ))
            })
            .collect();
        let mut stored = self.recorder.store.stored(&keys).await?.into_iter();
        unknown.retain(|(_, rev)| rev.is_none() || !stored.next().unwrap_or(false));
        let mut found = Vec::new();
        let mut found_bytes = 0;
        // The documents a few at a time (`DOCS_READ`).
        for chunk in unknown.chunks(DOCS_READ) {
            let ids: Vec<DocId> = chunk.iter().map(|(id, _)| id.clone()).collect();
            let docs = self.store.get_docs(db, &ids).await?;
            for ((id, rev), doc) in chunk.iter().zip(docs) {
                match self
                    .record(&account, db, id, &actor, rev.as_deref(), doc)
                    .await?
                {
                    Found::Settled => {}
                    Found::Pending => complete = false,
                    Found::New(entries) => {
                        found_bytes += entries.iter().map(entry_cost).sum::<usize>();
                        found.extend(entries);
                    }
                }
            }
            if found.len() >= WRITE_BATCH || found_bytes >= FOUND_BYTES {
                self.write_found(std::mem::take(&mut found)).await?;
                found_bytes = 0;
            }
        }
        self.write_found(found).await?;
        if !complete {
            return Ok(false);
        }
        let moved = positions.get_mut(&name).map(|position| {
            position.gap = false;
            std::mem::replace(&mut position.since, changes.last_seq.clone())
        });
        if moved.as_ref() != Some(&changes.last_seq) {
            self.recorder
                .store
                .set_checkpoint(&name, &changes.last_seq)
                .await?;
        }
        Ok(true)
    }

    /// Writes the entries found, [`WRITE_BATCH`] at a time.
    async fn write_found(&self, found: Vec<history::Entry>) -> StoreResult<()> {
        for chunk in found.chunks(WRITE_BATCH) {
            let written = self.recorder.write_now(chunk).await?;
            self.recorder.recovered(written);
        }
        Ok(())
    }

    /// What this process knows of a change by its revision alone: `true` when it wrote its
    /// entry lately, `false` when the entry is queued here, `None` when it cannot tell.
    fn known_here(&self, account: &AccountId, id: &DocId, rev: &str) -> Option<bool> {
        let entry_id = history::EntryId::of_rev(rev);
        if self.recorder.is_pending(account, id, &entry_id) {
            Some(false)
        } else if self.recorder.wrote(account, id, &entry_id) {
            Some(true)
        } else {
            None
        }
    }

    /// The entry of the document's current revision (`doc`, as read after the feed), if it is
    /// a group's and has none (`checked`: the revision the feed named, whose entry was looked
    /// for already).
    async fn record(
        &self,
        account: &AccountId,
        db: &DbName,
        id: &DocId,
        actor: &Actor,
        checked: Option<&str>,
        doc: Option<Value>,
    ) -> StoreResult<Found> {
        let (rev, after) = match doc {
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
        // Written again since the feed was read: this revision's entry is looked for now.
        if checked != Some(rev.as_str()) {
            let known = match self.known_here(account, id, &rev) {
                Some(known) => Some(known),
                None => {
                    let key = history::stored_id(account, id, &history::EntryId::of_rev(&rev));
                    let stored = self.recorder.store.stored(&[key]).await?;
                    stored.first().copied().filter(|s| *s)
                }
            };
            match known {
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
        let (mut entries, previous) = self.gap(db, account, id, actor, &rev, previous).await?;
        entries.push(Change::outside(account, id, actor, rev, previous, after).entry());
        Ok(Found::New(entries))
    }

    /// The entries of the revisions between the group's newest entry (`previous`) and `rev`
    /// that have none: changes written over before anyone recorded them (by a writer behind
    /// kz-groups' back, or by an instance killed with its entries queued). Read from CouchDB's
    /// revision history while their bodies are kept (until compaction; the embedded store keeps
    /// none). Returns them oldest first, and the entry `rev`'s difference is taken from.
    async fn gap(
        &self,
        db: &DbName,
        account: &AccountId,
        id: &DocId,
        actor: &Actor,
        rev: &str,
        previous: Option<history::Entry>,
    ) -> StoreResult<(Vec<history::Entry>, Option<history::Entry>)> {
        let generation = |r: &str| r.split('-').next().and_then(|g| g.parse::<u64>().ok());
        let Some(mut previous) = previous else {
            return Ok((Vec::new(), None));
        };
        let (Some(from), Some(to)) = (generation(&previous.rev_after), generation(rev)) else {
            return Ok((Vec::new(), Some(previous)));
        };
        if to <= from + 1 {
            return Ok((Vec::new(), Some(previous)));
        }
        let leaves = self.store.leaves(db, id).await?;
        let Some(line) = leaves
            .iter()
            .map(|l| &l.history)
            .find(|h| h.iter().any(|r| r == rev) && h.contains(&previous.rev_after))
        else {
            // Another branch (a conflict resolved since): nothing to walk.
            return Ok((Vec::new(), Some(previous)));
        };
        let between: Vec<String> = line
            .iter()
            .filter(|r| generation(r).is_some_and(|g| g > from && g < to))
            .rev()
            .cloned()
            .collect();
        let mut entries = Vec::new();
        for missed in between {
            let entry_id = history::EntryId::of_rev(&missed);
            if self.known_here(account, id, &missed).is_some() {
                continue;
            }
            if let Some(stored) = self.recorder.store.entry(account, id, &entry_id).await? {
                previous = stored;
                continue;
            }
            let Some(Value::Object(doc)) = self.store.get_rev(db, id, &missed).await? else {
                // Its body is gone (compacted): the next entry's difference spans it.
                continue;
            };
            let entry = Change::outside(account, id, actor, missed, Some(previous), Some(doc));
            previous = entry.clone().entry();
            entries.push(previous.clone());
        }
        Ok((entries, Some(previous)))
    }

    /// Records the revisions this process's writes replaced that still have no entry once the
    /// grace has passed (`Recorder::due_overwritten`), with any gap before them. What cannot be
    /// checked now is checked again next pass.
    async fn settle_overwritten(&self) -> StoreResult<()> {
        let due = self.recorder.due_overwritten();
        if due.is_empty() {
            return Ok(());
        }
        let recorded = match self.overwritten_entries(&due).await {
            Ok(found) if found.is_empty() => Ok(0),
            Ok(found) => self.recorder.write_now(&found).await,
            Err(e) => Err(e),
        };
        match recorded {
            Ok(written) => {
                self.recorder.recovered(written);
                Ok(())
            }
            Err(e) => {
                self.recorder.overwritten_again(due);
                Err(e)
            }
        }
    }

    /// The entries of the revisions written over that have none.
    async fn overwritten_entries(&self, due: &[Overwritten]) -> StoreResult<Vec<history::Entry>> {
        let keys: Vec<String> = due
            .iter()
            .map(|o| history::stored_id(&o.account, &o.group, &history::EntryId::of_rev(&o.rev)))
            .collect();
        let stored = self.recorder.store.stored(&keys).await?;
        let mut found = Vec::new();
        for (o, stored) in due.iter().zip(stored) {
            if stored || self.known_here(&o.account, &o.group, &o.rev).is_some() {
                continue;
            }
            let entry_id = history::EntryId::of_rev(&o.rev);
            let previous = self
                .recorder
                .store
                .group(&o.account, &o.group, Some(&entry_id), 1)
                .await?
                .into_iter()
                .next();
            let db = o.account.db();
            let (gap, previous) = self
                .gap(&db, &o.account, &o.group, &Actor::Outside, &o.rev, previous)
                .await?;
            found.extend(gap);
            let change = Change::outside(
                &o.account,
                &o.group,
                &Actor::Outside,
                o.rev.clone(),
                previous,
                Some(o.doc.clone()),
            );
            found.push(change.entry());
        }
        Ok(found)
    }

    /// The revision of a deleted document's tombstone, when it has one.
    async fn tombstone(&self, db: &DbName, id: &DocId) -> StoreResult<Option<String>> {
        let leaves = self.store.leaves(db, id).await?;
        Ok(leaves
            .into_iter()
            .filter(|l| l.deleted)
            .max_by_key(|l| history::EntryId::of_rev(&l.rev))
            .map(|l| l.rev))
    }
}
