//! The embedded document store: SQLite under `KZ_GROUPS_DATA`, with CouchDB's semantics
//! (databases, revisions and 409s, tombstones, attachments) and the views of `couch_views/`
//! indexed natively at write time (`native_views`) under sort keys (`sort_key`) whose byte order
//! is CouchDB's collation (`collation`), so views read back in CouchDB's order.
//!
//! One writer connection writes while a pool of readers reads (`pool`); the documents and their
//! rows are in `docs`, reads in bounded batches in `batches`, the change feed every write
//! appends to in `changes`, the tables and their migration in `schema`. SQLite's locking lets the CLI work on the same data while the server runs; every
//! acknowledged write is committed with `synchronous=FULL`, so it survives `kill -9`.
mod batches;
mod changes;
pub mod collation;
mod docs;
pub mod history;
pub mod native_views;
mod pool;
mod schema;
pub mod sort_key;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use md5::{Digest, Md5};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{json, Value};

use self::batches::{BatchReader, Read};
use self::docs::{check_rev, current, generation, load, put, write, Prepared};
use self::pool::Connections;
use super::{
    BulkResult, Changes, DocStore, Feed, Leaf, RowStream, StoreError, StoreResult, View, ViewQuery,
};
use crate::domain::ids::{DbName, DocId};

const FILE_NAME: &str = "kz-groups.sqlite3";

/// Read connections: enough that long listings leave others a reader and that short reads
/// overlap on the blocking threads (8 read faster than 4 or 2 even on two cores); each one
/// costs a few file handles and a page cache.
const READERS: usize = 8;

/// How often a change feed looks for changes: well inside the caches' 1 s coherence bound.
const FEED_POLL: Duration = Duration::from_millis(100);
/// The most changes one answer of a feed carries.
const FEED_BATCH: usize = 1000;

#[derive(Clone)]
pub struct EmbeddedStore {
    conns: Arc<Connections>,
    path: PathBuf,
}

fn fault(e: impl std::fmt::Display) -> StoreError {
    StoreError::Other {
        status: 500,
        error: "embedded_store".into(),
        reason: e.to_string(),
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn sql_error(e: rusqlite::Error) -> StoreError {
    if is_busy(&e) {
        // Another process holds the write lock past the busy timeout: a passing outage.
        StoreError::Unreachable(e.to_string())
    } else {
        fault(e)
    }
}

/// The writer: WAL, every commit synced, the tables ready.
fn prepare_writer(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    schema::prepare(conn)
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

impl EmbeddedStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create KZ_GROUPS_DATA={}: {e}", dir.display()))?;
        let path = dir.join(FILE_NAME);
        let cannot_open = |e: rusqlite::Error| format!("cannot open {}: {e}", path.display());
        let mut writer = Connection::open(&path).map_err(cannot_open)?;
        // Switching a new file to WAL needs it to itself, and SQLite answers "busy" at once rather
        // than wait: processes opening the same new store together (several CLI runs) take turns.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut pause = Duration::from_millis(2);
        loop {
            match prepare_writer(&mut writer) {
                Ok(()) => break,
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(format!("cannot prepare {}: {e}", path.display())),
            }
        }
        let readers = (0..READERS)
            .map(|_| open_reader(&path))
            .collect::<Result<Vec<_>, _>>()
            .map_err(cannot_open)?;
        Ok(Self {
            conns: Arc::new(Connections::new(writer, readers)),
            path,
        })
    }

    /// Deletes revision `rev` of a document by its full id; returns the tombstone's revision.
    async fn delete(&self, db: &DbName, id: &str, rev: &str) -> StoreResult<String> {
        let (db, id) = (db.as_str().to_owned(), id.to_owned());
        let tombstone = Prepared::of(&id, &json!({"_rev": rev, "_deleted": true}))?;
        self.conns
            .write(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql_error)?;
                let cur = current(&tx, &db, &id)?;
                if cur.as_ref().is_none_or(|c| c.deleted) {
                    return Err(StoreError::NotFound);
                }
                let generation = check_rev(cur.as_ref(), tombstone.rev.as_deref())?;
                let rev = write(&tx, &db, &id, &tombstone, generation)?;
                tx.commit().map_err(sql_error)?;
                Ok(rev)
            })
            .await
    }

    fn batches(&self, db: &DbName, read: Read) -> BatchReader {
        BatchReader::new(self.conns.clone(), db.as_str(), read)
    }
}

#[async_trait]
impl DocStore for EmbeddedStore {
    fn describe(&self) -> String {
        format!("embedded store at {}", self.path.display())
    }

    async fn ping(&self) -> StoreResult<()> {
        self.conns
            .read(|conn| {
                conn.query_row("SELECT 1", [], |_| Ok(()))
                    .map_err(sql_error)
            })
            .await
    }

    async fn all_dbs(&self) -> StoreResult<Vec<String>> {
        self.conns
            .read(|conn| {
                let mut stmt = conn
                    .prepare("SELECT name FROM dbs ORDER BY name")
                    .map_err(sql_error)?;
                let names = stmt
                    .query_map([], |row| row.get(0))
                    .map_err(sql_error)?
                    .collect::<Result<Vec<String>, _>>()
                    .map_err(sql_error)?;
                Ok(names)
            })
            .await
    }

    async fn create_db(&self, db: &DbName) -> StoreResult<()> {
        let db = db.as_str().to_owned();
        self.conns
            .write(move |conn| {
                let tx = conn.transaction().map_err(sql_error)?;
                let created = tx
                    .execute("INSERT OR IGNORE INTO dbs (name) VALUES (?1)", [&db])
                    .map_err(sql_error)?;
                if created > 0 {
                    changes::record(&tx, &db, None)?;
                }
                tx.commit().map_err(sql_error)
            })
            .await
    }

    async fn get_doc(&self, db: &DbName, id: &DocId) -> StoreResult<Option<Value>> {
        let (db, id) = (db.as_str().to_owned(), id.as_str().to_owned());
        self.conns.read(move |conn| load(conn, &db, &id)).await
    }

    /// In one turn on a read connection.
    async fn get_docs(&self, db: &DbName, ids: &[DocId]) -> StoreResult<Vec<Option<Value>>> {
        let db = db.as_str().to_owned();
        let ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
        self.conns
            .read(move |conn| ids.iter().map(|id| load(conn, &db, id)).collect())
            .await
    }

    /// Only the current revision's body is kept, as after a compaction.
    async fn get_rev(&self, db: &DbName, id: &DocId, rev: &str) -> StoreResult<Option<Value>> {
        let doc = self.get_doc(db, id).await?;
        Ok(doc.filter(|doc| doc.get("_rev").and_then(Value::as_str) == Some(rev)))
    }

    /// One writer, so never a conflict: the live document is the only leaf (a deleted one's
    /// tombstone is not read back, as if it were purged).
    async fn leaves(&self, db: &DbName, id: &DocId) -> StoreResult<Vec<Leaf>> {
        let doc = self.get_doc(db, id).await?;
        Ok(doc
            .into_iter()
            .filter_map(|doc| {
                let rev = doc.get("_rev").and_then(Value::as_str)?.to_owned();
                Some(Leaf {
                    history: vec![rev.clone()],
                    rev,
                    deleted: false,
                    doc,
                })
            })
            .collect())
    }

    /// One document after the other, each with its own revision check, as CouchDB does.
    async fn bulk_docs(&self, db: &DbName, docs: &[Value]) -> StoreResult<Vec<BulkResult>> {
        let mut results = Vec::with_capacity(docs.len());
        for doc in docs {
            let id = doc
                .get("_id")
                .and_then(Value::as_str)
                .and_then(DocId::parse)
                .ok_or_else(|| fault("a _bulk_docs document without a usable _id"))?;
            match self.put_doc(db, &id, doc).await {
                Err(e @ StoreError::Unreachable(_)) => return Err(e),
                result => results.push(result),
            }
        }
        Ok(results)
    }

    async fn put_doc(&self, db: &DbName, id: &DocId, doc: &Value) -> StoreResult<String> {
        let doc = Prepared::of(id.as_str(), doc)?;
        let (db, id) = (db.as_str().to_owned(), id.as_str().to_owned());
        self.conns
            .write(move |conn| put(conn, &db, &id, &doc))
            .await
    }

    async fn delete_doc(&self, db: &DbName, id: &DocId, rev: &str) -> StoreResult<String> {
        self.delete(db, id.as_str(), rev).await
    }

    async fn delete_design(&self, db: &DbName, name: &str, rev: &str) -> StoreResult<String> {
        self.delete(db, &format!("_design/{name}"), rev).await
    }

    async fn get_attachment(
        &self,
        db: &DbName,
        id: &DocId,
        name: &str,
    ) -> StoreResult<Option<Bytes>> {
        let (db, id, name) = (
            db.as_str().to_owned(),
            id.as_str().to_owned(),
            name.to_owned(),
        );
        self.conns
            .read(move |conn| {
                conn.query_row(
                    "SELECT a.data FROM attachments a JOIN docs d ON d.db = a.db AND d.id = a.id
                     WHERE a.db = ?1 AND a.id = ?2 AND a.name = ?3 AND d.deleted = 0",
                    [&db, &id, &name],
                    |row| row.get::<_, Vec<u8>>(0),
                )
                .optional()
                .map(|data| data.map(Bytes::from))
                .map_err(sql_error)
            })
            .await
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
        let (db, id, name) = (
            db.as_str().to_owned(),
            id.as_str().to_owned(),
            name.to_owned(),
        );
        let (rev, content_type) = (rev.to_owned(), content_type.to_owned());
        self.conns.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_error)?;
            let Some(mut doc) = load(&tx, &db, &id)? else {
                return Err(StoreError::Conflict);
            };
            if doc.get("_rev").and_then(Value::as_str) != Some(rev.as_str()) {
                return Err(StoreError::Conflict);
            }
            let digest = format!(
                "md5-{}",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, Md5::digest(&body))
            );
            tx.execute(
                "INSERT INTO attachments (db, id, name, content_type, digest, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (db, id, name) DO UPDATE SET content_type = ?4, digest = ?5, data = ?6",
                params![db, id, name, content_type, digest, body],
            )
            .map_err(sql_error)?;
            if let Some(Value::Object(stubs)) = doc.get_mut("_attachments") {
                stubs.insert(name.clone(), json!({"stub": true}));
            } else if let Value::Object(map) = &mut doc {
                map.insert("_attachments".into(), json!({ name.clone(): {"stub": true} }));
            }
            let new_rev = write(&tx, &db, &id, &Prepared::of(&id, &doc)?, generation(&rev) + 1)?;
            tx.commit().map_err(sql_error)?;
            Ok(new_rev)
        })
        .await
    }

    async fn get_design(&self, db: &DbName, name: &str) -> StoreResult<Option<Value>> {
        let (db, id) = (db.as_str().to_owned(), format!("_design/{name}"));
        self.conns.read(move |conn| load(conn, &db, &id)).await
    }

    async fn put_design(&self, db: &DbName, name: &str, doc: &Value) -> StoreResult<String> {
        let id = format!("_design/{name}");
        let doc = Prepared::of(&id, doc)?;
        let db = db.as_str().to_owned();
        self.conns
            .write(move |conn| put(conn, &db, &id, &doc))
            .await
    }

    /// Views are indexed as documents are written: there is nothing to build.
    async fn build_index(&self, _db: &DbName, _design: &str, _view: &str) -> StoreResult<()> {
        Ok(())
    }

    /// The store's own feed (`changes`), the same whichever feed is asked for: the server's
    /// is every change, a database's is that database's.
    async fn feed_end(&self, _feed: Feed<'_>) -> StoreResult<Option<Value>> {
        let end = self.conns.read(changes::end).await?;
        Ok(Some(Value::from(end)))
    }

    /// Polls the feed every [`FEED_POLL`] until a change comes or `wait` is over.
    async fn feed_next(
        &self,
        feed: Feed<'_>,
        since: &Value,
        wait: Duration,
    ) -> StoreResult<Changes> {
        let Some(mut since) = since.as_i64() else {
            return Err(fault(format!("not a sequence of this store: {since}")));
        };
        let db = match feed {
            Feed::Db(db) => Some(db.as_str().to_owned()),
            Feed::Server => None,
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let filter = db.clone();
            let (changed, next, revs) = self
                .conns
                .read(move |conn| changes::after(conn, filter.as_deref(), since, FEED_BATCH))
                .await?;
            since = next;
            if !changed.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(Changes {
                    last_seq: Value::from(since),
                    changed,
                    // One leaf per document here: nothing ever branches.
                    branched: Vec::new(),
                    revs,
                });
            }
            tokio::time::sleep(FEED_POLL).await;
        }
    }

    async fn all_docs(&self, db: &DbName) -> StoreResult<RowStream> {
        self.batches(db, Read::AllDocs).stream().await
    }

    async fn view_rows(
        &self,
        db: &DbName,
        view: View,
        query: &ViewQuery,
    ) -> StoreResult<RowStream> {
        let read = Read::View {
            view,
            query: Box::new(query.clone()),
        };
        self.batches(db, read).stream().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::AccountId;
    use crate::store::ViewRow;

    fn store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn account_db() -> DbName {
        AccountId::parse("4b31dd1d32ce6d249897c06332375d65")
            .unwrap()
            .db()
    }

    #[tokio::test]
    async fn revisions_conflict_like_couchdb() {
        let (_dir, s) = store();
        let db = account_db();
        let id = DocId::parse("g1").unwrap();
        assert!(matches!(
            s.put_doc(&db, &id, &json!({"a": 1})).await,
            Err(StoreError::NotFound)
        ));
        s.create_db(&db).await.unwrap();
        let r1 = s.put_doc(&db, &id, &json!({"a": 1})).await.unwrap();
        assert!(r1.starts_with("1-"));
        assert!(matches!(
            s.put_doc(&db, &id, &json!({"a": 2})).await,
            Err(StoreError::Conflict)
        ));
        let r2 = s
            .put_doc(&db, &id, &json!({"_rev": r1, "a": 2}))
            .await
            .unwrap();
        assert!(r2.starts_with("2-"));
        assert!(matches!(
            s.put_doc(&db, &id, &json!({"_rev": r1, "a": 3})).await,
            Err(StoreError::Conflict)
        ));
        let doc = s.get_doc(&db, &id).await.unwrap().unwrap();
        assert_eq!(doc, json!({"_id": "g1", "_rev": r2, "a": 2}));
        let r3 = s.delete_doc(&db, &id, &r2).await.unwrap();
        assert!(r3.starts_with("3-"));
        assert!(s.get_doc(&db, &id).await.unwrap().is_none());
        let r4 = s.put_doc(&db, &id, &json!({"a": 4})).await.unwrap();
        assert!(
            r4.starts_with("4-"),
            "recreating after a hard delete continues the history"
        );
    }

    #[tokio::test]
    async fn attachments_round_trip_and_survive_updates_that_keep_their_stub() {
        let (_dir, s) = store();
        let db = DbName::system("system_auth");
        s.create_db(&db).await.unwrap();
        let id = DocId::parse("k").unwrap();
        let r1 = s
            .put_doc(&db, &id, &json!({"pvt_type": "system_key"}))
            .await
            .unwrap();
        let r2 = s
            .put_attachment(
                &db,
                &id,
                "private_key.pem",
                &r1,
                "application/x-pem-file",
                b"PEM".to_vec(),
            )
            .await
            .unwrap();
        assert!(r2.starts_with("2-"));
        let doc = s.get_doc(&db, &id).await.unwrap().unwrap();
        assert_eq!(doc["_attachments"]["private_key.pem"]["stub"], true);
        assert_eq!(
            s.get_attachment(&db, &id, "private_key.pem")
                .await
                .unwrap()
                .unwrap(),
            Bytes::from_static(b"PEM")
        );
        s.put_doc(&db, &id, &doc).await.unwrap();
        assert!(s
            .get_attachment(&db, &id, "private_key.pem")
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn views_need_their_design_doc_and_follow_couch_collation() {
        let (_dir, s) = store();
        let db = account_db();
        s.create_db(&db).await.unwrap();
        for id in ["b", "A", "a", "B", "1"] {
            let doc = json!({"pvt_type": "group", "name": id});
            s.put_doc(&db, &DocId::parse(id).unwrap(), &doc)
                .await
                .unwrap();
        }
        let q = ViewQuery::default();
        assert!(matches!(
            s.query_view(&db, View::GroupsListing, &q).await,
            Err(StoreError::NotFound)
        ));
        s.put_design(
            &db,
            "groups",
            &json!({"views": {"crossbar_listing": {"map": "f"}}}),
        )
        .await
        .unwrap();
        // The design document defines this view only.
        assert!(matches!(
            s.query_view(&db, View::GroupsListingByUser, &q).await,
            Err(StoreError::NotFound)
        ));
        let ids = |rows: Vec<ViewRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let rows = s.query_view(&db, View::GroupsListing, &q).await.unwrap();
        assert_eq!(ids(rows), ["1", "a", "A", "b", "B"]);
        let q = ViewQuery {
            startkey: Some(json!("A")),
            limit: Some(2),
            ..Default::default()
        };
        assert_eq!(
            ids(s.query_view(&db, View::GroupsListing, &q).await.unwrap()),
            ["A", "b"]
        );
        let q = ViewQuery {
            startkey: Some(json!("b")),
            descending: true,
            ..Default::default()
        };
        assert_eq!(
            ids(s.query_view(&db, View::GroupsListing, &q).await.unwrap()),
            ["b", "A", "a", "1"]
        );
    }

    #[tokio::test]
    async fn equal_keys_resume_at_startkey_docid() {
        let (_dir, s) = store();
        let db = account_db();
        s.create_db(&db).await.unwrap();
        s.put_design(
            &db,
            "groups",
            &json!({"views": {"crossbar_listing_by_user": {"map": "f"}}}),
        )
        .await
        .unwrap();
        for id in ["g1", "g2", "g3"] {
            let doc =
                json!({"pvt_type": "group", "name": id, "endpoints": {"u1": {"type": "user"}}});
            s.put_doc(&db, &DocId::parse(id).unwrap(), &doc)
                .await
                .unwrap();
        }
        let q = ViewQuery {
            startkey: Some(json!("u1")),
            endkey: Some(json!("u1")),
            startkey_docid: Some("g2".into()),
            ..Default::default()
        };
        let rows = s
            .query_view(&db, View::GroupsListingByUser, &q)
            .await
            .unwrap();
        assert_eq!(
            rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["g2", "g3"]
        );
    }

    #[tokio::test]
    async fn a_store_from_before_sort_keys_is_reindexed_at_open() {
        // The tables as kz-groups wrote them before sort keys: view keys as JSON text, ordered
        // by a `couch` collation that is no longer registered.
        let dir = tempfile::tempdir().unwrap();
        {
            let old = Connection::open(dir.path().join(FILE_NAME)).unwrap();
            old.create_collation("couch", |a: &str, b: &str| a.cmp(b))
                .unwrap();
            old.execute_batch(
                r#"
                PRAGMA journal_mode = WAL;
                CREATE TABLE dbs (name TEXT PRIMARY KEY);
                CREATE TABLE docs (db TEXT NOT NULL, id TEXT NOT NULL, rev TEXT NOT NULL,
                    deleted INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (db, id));
                CREATE TABLE attachments (db TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
                    content_type TEXT NOT NULL, digest TEXT NOT NULL, data BLOB NOT NULL,
                    PRIMARY KEY (db, id, name));
                CREATE TABLE view_rows (db TEXT NOT NULL, design TEXT NOT NULL,
                    view TEXT NOT NULL, key TEXT NOT NULL COLLATE couch, id TEXT NOT NULL,
                    value TEXT NOT NULL);
                CREATE INDEX view_rows_order ON view_rows (db, design, view, key, id);
                CREATE INDEX view_rows_doc ON view_rows (db, id);
                INSERT INTO dbs VALUES ('db');
                INSERT INTO docs VALUES ('db', '_design/groups', '1-a', 0,
                    '{"views":{"crossbar_listing":{"map":"f"}}}');
                INSERT INTO docs VALUES ('db', 'b', '1-b', 0, '{"pvt_type":"group","name":"B"}');
                INSERT INTO docs VALUES ('db', 'a', '1-c', 0, '{"pvt_type":"group","name":"A"}');
                INSERT INTO docs VALUES ('db', 'c', '2-d', 1, '{}');
                INSERT INTO view_rows VALUES ('db', 'groups', 'crossbar_listing', '"b"', 'b', '{}');
                "#,
            )
            .unwrap();
        }
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let db = DbName::system("db");
        let rows = s
            .query_view(&db, View::GroupsListing, &ViewQuery::default())
            .await
            .unwrap();
        let rows: Vec<(String, String)> = rows
            .into_iter()
            .map(|r| (r.id, r.value.get().to_owned()))
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "a".into(),
                    r#"{"id":"a","name":"A","features":[],"endpoints":0,"flags":[]}"#.into()
                ),
                (
                    "b".into(),
                    r#"{"id":"b","name":"B","features":[],"endpoints":0,"flags":[]}"#.into()
                ),
            ]
        );
        // Opened again, nothing is rebuilt: the format is recorded.
        drop(s);
        let again = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        again
            .execute("DELETE FROM view_rows WHERE id = 'a'", [])
            .unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let rows = s
            .query_view(&db, View::GroupsListing, &ViewQuery::default())
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
    }
}
