//! The embedded document store: SQLite under `KZ_GROUPS_DATA`, with CouchDB's semantics
//! (databases, revisions and 409s, tombstones, attachments) and the views of `couch_views/`
//! indexed natively at write time and read back in CouchDB's collation order. SQLite's locking
//! lets the CLI work on the same data while the server runs; every acknowledged write is
//! committed with `synchronous=FULL`, so it survives `kill -9`.
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use md5::{Digest, Md5};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

pub mod collation;
pub mod native_views;

use super::{DocStore, RowStream, StoreError, StoreResult, View, ViewQuery, ViewRow};
use crate::domain::ids::{DbName, DocId};

const FILE_NAME: &str = "kz-groups.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dbs (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS docs (
    db TEXT NOT NULL, id TEXT NOT NULL, rev TEXT NOT NULL,
    deleted INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (db, id));
CREATE TABLE IF NOT EXISTS attachments (
    db TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
    content_type TEXT NOT NULL, digest TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (db, id, name));
CREATE TABLE IF NOT EXISTS view_rows (
    db TEXT NOT NULL, design TEXT NOT NULL, view TEXT NOT NULL,
    key TEXT NOT NULL COLLATE couch, id TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS view_rows_order ON view_rows (db, design, view, key, id);
CREATE INDEX IF NOT EXISTS view_rows_doc ON view_rows (db, id);
";

#[derive(Clone)]
pub struct EmbeddedStore {
    conn: Arc<Mutex<Connection>>,
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

/// The view-row collation: CouchDB's order of the JSON keys.
fn couch_collation(a: &str, b: &str) -> Ordering {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(a), Ok(b)) => collation::collate(&a, &b),
        _ => a.cmp(b),
    }
}

fn new_rev(generation: u64, body: &str) -> String {
    let digest: String = Md5::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{generation}-{digest}")
}

fn generation(rev: &str) -> u64 {
    rev.split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

struct Current {
    rev: String,
    deleted: bool,
}

impl EmbeddedStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create KZ_GROUPS_DATA={}: {e}", dir.display()))?;
        let path = dir.join(FILE_NAME);
        let conn =
            Connection::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let setup = || -> rusqlite::Result<()> {
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.create_collation("couch", couch_collation)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(SCHEMA)
        };
        // Switching a new file to WAL needs it to itself, and SQLite answers "busy" at once rather
        // than wait: processes opening the same new store together (several CLI runs) take turns.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut pause = Duration::from_millis(2);
        loop {
            match setup() {
                Ok(()) => break,
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(format!("cannot prepare {}: {e}", path.display())),
            }
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// Runs `f` on the connection off the async runtime.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(fault)?
    }
}

fn db_exists(conn: &Connection, db: &str) -> StoreResult<bool> {
    conn.query_row("SELECT 1 FROM dbs WHERE name = ?1", [db], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
        .map_err(sql_error)
}

fn current(conn: &Connection, db: &str, id: &str) -> StoreResult<Option<Current>> {
    conn.query_row(
        "SELECT rev, deleted FROM docs WHERE db = ?1 AND id = ?2",
        [db, id],
        |row| {
            Ok(Current {
                rev: row.get(0)?,
                deleted: row.get::<_, i64>(1)? != 0,
            })
        },
    )
    .optional()
    .map_err(sql_error)
}

/// The stored document as CouchDB returns it: `_id`, `_rev`, the body, attachment stubs.
fn load(conn: &Connection, db: &str, id: &str) -> StoreResult<Option<Value>> {
    load_text(conn, db, id)?
        .map(|text| serde_json::from_str(&text).map_err(fault))
        .transpose()
}

/// [`load`] as JSON text, put together from the stored parts without parsing the body.
fn load_text(conn: &Connection, db: &str, id: &str) -> StoreResult<Option<String>> {
    let row = conn
        .query_row(
            "SELECT rev, body FROM docs WHERE db = ?1 AND id = ?2 AND deleted = 0",
            [db, id],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
        )
        .optional()
        .map_err(sql_error)?;
    let Some((rev, body)) = row else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare_cached("SELECT name, content_type, digest, length(data) FROM attachments WHERE db = ?1 AND id = ?2 ORDER BY name")
        .map_err(sql_error)?;
    let stubs = stmt
        .query_map([db, id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                json!({"content_type": row.get::<_, String>(1)?, "digest": row.get::<_, String>(2)?,
                       "length": row.get::<_, i64>(3)?, "stub": true}),
            ))
        })
        .map_err(sql_error)?
        .collect::<Result<Map<String, Value>, _>>()
        .map_err(sql_error)?;
    // The body is stored as a compact object without `_` fields: `{` + members + `}`.
    let members = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| fault(format!("{db}/{id}: stored body is not an object")))?;
    let mut text = String::with_capacity(body.len() + id.len() + rev.len() + 32);
    text.push_str("{\"_id\":");
    text.push_str(&Value::from(id).to_string());
    text.push_str(",\"_rev\":");
    text.push_str(&Value::from(rev).to_string());
    if !members.is_empty() {
        text.push(',');
        text.push_str(members);
    }
    if !stubs.is_empty() {
        text.push_str(",\"_attachments\":");
        text.push_str(&Value::Object(stubs).to_string());
    }
    text.push('}');
    Ok(Some(text))
}

/// CouchDB's revision check: a live doc is replaced only through its current revision; a
/// missing or deleted one only without a revision (or through its tombstone's).
fn check_rev(current: Option<&Current>, given: Option<&str>) -> StoreResult<u64> {
    match (current, given) {
        (Some(c), Some(g)) if c.rev == g => Ok(generation(&c.rev) + 1),
        (Some(c), None) if c.deleted => Ok(generation(&c.rev) + 1),
        (None, None) => Ok(1),
        _ => Err(StoreError::Conflict),
    }
}

/// A document ready to be written, prepared from its JSON before the connection is taken: the
/// stored body text (the document without its `_` fields), and the view rows it emits.
struct Prepared {
    rev: Option<String>,
    deleted: bool,
    /// Attachments the new revision names; the others are dropped, as in CouchDB.
    keep: Vec<String>,
    body: String,
    rows: Vec<(View, String, String)>,
}

impl Prepared {
    fn of(id: &str, doc: &Value) -> StoreResult<Self> {
        let empty = Map::new();
        let fields = doc.as_object().unwrap_or(&empty);
        let deleted = fields.get("_deleted") == Some(&Value::Bool(true));
        let keep = fields
            .get("_attachments")
            .and_then(Value::as_object)
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default();
        if deleted {
            return Ok(Self {
                rev: rev_of(fields),
                deleted,
                keep,
                body: "{}".into(),
                rows: Vec::new(),
            });
        }
        let body = serde_json::to_string(&PublicFields(fields)).map_err(fault)?;
        // The views read `_id`; a document that does not carry its own is indexed as stored.
        let rows = if fields.get("_id").and_then(Value::as_str) == Some(id) {
            emitted(doc)
        } else {
            let mut with_id = fields.clone();
            with_id.insert("_id".into(), Value::from(id));
            emitted(&Value::Object(with_id))
        };
        Ok(Self {
            rev: rev_of(fields),
            deleted,
            keep,
            body,
            rows,
        })
    }
}

fn rev_of(fields: &Map<String, Value>) -> Option<String> {
    fields
        .get("_rev")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The rows every native view emits for `doc`, as stored text.
fn emitted(doc: &Value) -> Vec<(View, String, String)> {
    View::ALL
        .into_iter()
        .flat_map(|view| {
            native_views::emit(view, doc)
                .into_iter()
                .map(move |(key, value)| (view, key.to_string(), value.to_string()))
        })
        .collect()
}

/// Serialises an object without its `_` fields, as the body is stored.
struct PublicFields<'a>(&'a Map<String, Value>);

impl serde::Serialize for PublicFields<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().filter(|(k, _)| !k.starts_with('_')))
    }
}

/// Writes a prepared document (or its tombstone) inside an open transaction.
fn write(
    conn: &Connection,
    db: &str,
    id: &str,
    doc: &Prepared,
    generation: u64,
) -> StoreResult<String> {
    let rev = new_rev(generation, &doc.body);
    conn.execute(
        "INSERT INTO docs (db, id, rev, deleted, body) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (db, id) DO UPDATE SET rev = ?3, deleted = ?4, body = ?5",
        params![db, id, rev, doc.deleted as i64, doc.body],
    )
    .map_err(sql_error)?;
    // As in CouchDB, attachments not named in the new revision are dropped.
    let mut attachments = conn
        .prepare("SELECT name FROM attachments WHERE db = ?1 AND id = ?2")
        .map_err(sql_error)?;
    let names: Vec<String> = attachments
        .query_map([db, id], |row| row.get(0))
        .map_err(sql_error)?
        .collect::<Result<_, _>>()
        .map_err(sql_error)?;
    for name in names
        .iter()
        .filter(|n| doc.deleted || !doc.keep.contains(n))
    {
        conn.execute(
            "DELETE FROM attachments WHERE db = ?1 AND id = ?2 AND name = ?3",
            [db, id, name],
        )
        .map_err(sql_error)?;
    }
    conn.execute("DELETE FROM view_rows WHERE db = ?1 AND id = ?2", [db, id])
        .map_err(sql_error)?;
    let mut insert = conn
        .prepare_cached("INSERT INTO view_rows (db, design, view, key, id, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .map_err(sql_error)?;
    for (view, key, value) in &doc.rows {
        insert
            .execute(params![db, view.design(), view.name(), key, id, value])
            .map_err(sql_error)?;
    }
    Ok(rev)
}

/// Reads, checks and writes in one immediate transaction, so two writers (threads or processes)
/// can never both pass the revision check.
fn put(conn: &mut Connection, db: &str, id: &str, doc: &Prepared) -> StoreResult<String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    if !db_exists(&tx, db)? {
        return Err(StoreError::NotFound);
    }
    let cur = current(&tx, db, id)?;
    let generation = check_rev(cur.as_ref(), doc.rev.as_deref())?;
    let rev = write(&tx, db, id, doc, generation)?;
    tx.commit().map_err(sql_error)?;
    Ok(rev)
}

/// Rows a view query reads under the connection at a time, in bytes: a listing of large
/// documents is read in several short turns, never all at once.
const BATCH_BYTES: usize = 1 << 20;

/// Where a view read continues: after this row, in the query's order.
#[derive(Debug, Clone)]
struct After {
    key: String,
    id: String,
}

/// One turn of a view query: the rows after `after` (or from the query's start), up to `limit`
/// rows or about [`BATCH_BYTES`], whichever comes first (at least one row). Reports whether it
/// stopped for size, so the caller knows to read on.
fn view_batch(
    conn: &Connection,
    db: &str,
    view: View,
    q: &ViewQuery,
    after: Option<&After>,
    limit: Option<usize>,
) -> StoreResult<(Vec<ViewRow>, bool)> {
    if !db_exists(conn, db)? {
        return Err(StoreError::NotFound);
    }
    // As in CouchDB, a view exists only while its design document defines it.
    let ddoc = load(conn, db, &format!("_design/{}", view.design()))?;
    let defined = ddoc
        .as_ref()
        .and_then(|d| d.get("views"))
        .and_then(|v| v.get(view.name()))
        .is_some();
    if !defined {
        return Err(StoreError::NotFound);
    }
    let (lt, gt) = if q.descending { (">", "<") } else { ("<", ">") };
    let mut sql = String::from(
        "SELECT id, key, value FROM view_rows WHERE db = ?1 AND design = ?2 AND view = ?3",
    );
    let mut args: Vec<String> = vec![db.into(), view.design().into(), view.name().into()];
    let arg = |value: String, args: &mut Vec<String>| {
        args.push(value);
        format!("?{}", args.len())
    };
    if let Some(key) = &q.key {
        let k = arg(key.to_string(), &mut args);
        sql.push_str(&format!(" AND key = {k}"));
    } else {
        if let Some(start) = &q.startkey {
            let s = arg(start.to_string(), &mut args);
            match &q.startkey_docid {
                Some(docid) => {
                    let d = arg(docid.clone(), &mut args);
                    sql.push_str(&format!(
                        " AND (key {gt} {s} OR (key = {s} AND id {gt}= {d}))"
                    ));
                }
                None => sql.push_str(&format!(" AND key {gt}= {s}")),
            }
        }
        if let Some(end) = &q.endkey {
            let e = arg(end.to_string(), &mut args);
            sql.push_str(&format!(" AND key {lt}= {e}"));
        }
    }
    if let Some(after) = after {
        let k = arg(after.key.clone(), &mut args);
        let d = arg(after.id.clone(), &mut args);
        sql.push_str(&format!(
            " AND (key {gt} {k} OR (key = {k} AND id {gt} {d}))"
        ));
    }
    let order = if q.descending { "DESC" } else { "ASC" };
    sql.push_str(&format!(" ORDER BY key {order}, id {order}"));
    let skip = if after.is_some() { 0 } else { q.skip };
    sql.push_str(&format!(
        " LIMIT {} OFFSET {skip}",
        limit.map_or(-1, |l| l as i64),
    ));
    let mut stmt = conn.prepare(&sql).map_err(sql_error)?;
    let mut cursor = stmt
        .query(rusqlite::params_from_iter(args.iter()))
        .map_err(sql_error)?;
    let mut rows = Vec::new();
    let mut bytes = 0;
    while let Some(row) = cursor.next().map_err(sql_error)? {
        if bytes >= BATCH_BYTES {
            return Ok((rows, true));
        }
        let (id, key, value) = (
            row.get::<_, String>(0).map_err(sql_error)?,
            row.get::<_, String>(1).map_err(sql_error)?,
            row.get::<_, String>(2).map_err(sql_error)?,
        );
        let doc = if q.include_docs {
            load_text(conn, db, &id)?
        } else {
            None
        };
        bytes += id.len() + key.len() + value.len() + doc.as_ref().map_or(0, String::len);
        rows.push(ViewRow {
            key: serde_json::from_str(&key).map_err(fault)?,
            value: RawValue::from_string(value).map_err(fault)?,
            doc: doc.map(RawValue::from_string).transpose().map_err(fault)?,
            id,
        });
    }
    Ok((rows, false))
}

/// Every live document of `db` after the id `after`, in id order (`_all_docs`), up to about
/// [`BATCH_BYTES`] (at least one); reports whether it stopped for size.
fn docs_batch(
    conn: &Connection,
    db: &str,
    after: Option<&After>,
) -> StoreResult<(Vec<ViewRow>, bool)> {
    if !db_exists(conn, db)? {
        return Err(StoreError::NotFound);
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, rev FROM docs WHERE db = ?1 AND deleted = 0 AND id > ?2 ORDER BY id",
        )
        .map_err(sql_error)?;
    let after = after.map_or("", |a| a.id.as_str());
    let mut cursor = stmt.query(params![db, after]).map_err(sql_error)?;
    let mut rows = Vec::new();
    let mut bytes = 0;
    while let Some(row) = cursor.next().map_err(sql_error)? {
        if bytes >= BATCH_BYTES {
            return Ok((rows, true));
        }
        let (id, rev) = (
            row.get::<_, String>(0).map_err(sql_error)?,
            row.get::<_, String>(1).map_err(sql_error)?,
        );
        let doc = load_text(conn, db, &id)?;
        bytes += id.len() + doc.as_ref().map_or(0, String::len);
        rows.push(ViewRow {
            key: Value::from(id.as_str()),
            value: RawValue::from_string(json!({ "rev": rev }).to_string()).map_err(fault)?,
            doc: doc.map(RawValue::from_string).transpose().map_err(fault)?,
            id,
        });
    }
    Ok((rows, false))
}

/// What a [`BatchReader`] reads.
enum Read {
    View { view: View, query: Box<ViewQuery> },
    AllDocs,
}

/// Rows read in turns of [`view_batch`] or [`docs_batch`], each under the connection only while
/// it reads, handed out one at a time.
struct BatchReader {
    store: EmbeddedStore,
    db: String,
    read: Read,
    after: Option<After>,
    /// Rows still wanted (`limit`), if limited.
    remaining: Option<usize>,
    batch: std::collections::VecDeque<ViewRow>,
    more: bool,
}

impl BatchReader {
    async fn next_row(&mut self) -> StoreResult<Option<ViewRow>> {
        if self.batch.is_empty() && self.more && self.remaining != Some(0) {
            let (db, after, limit) = (self.db.clone(), self.after.clone(), self.remaining);
            let (rows, more) = match &self.read {
                Read::View { view, query } => {
                    let (view, query) = (*view, (**query).clone());
                    self.store
                        .with(move |conn| {
                            view_batch(conn, &db, view, &query, after.as_ref(), limit)
                        })
                        .await?
                }
                Read::AllDocs => {
                    self.store
                        .with(move |conn| docs_batch(conn, &db, after.as_ref()))
                        .await?
                }
            };
            self.more = more;
            if let Some(last) = rows.last() {
                self.after = Some(After {
                    key: last.key.to_string(),
                    id: last.id.clone(),
                });
            }
            if let Some(remaining) = self.remaining.as_mut() {
                *remaining -= rows.len().min(*remaining);
            }
            self.batch = rows.into();
        }
        Ok(self.batch.pop_front())
    }

    /// The rows as a stream. The first turn runs now, so a missing database or view is an
    /// error of the call, as CouchDB answers it.
    async fn stream(mut self) -> StoreResult<RowStream> {
        let first = self.next_row().await?;
        let rows = futures::stream::try_unfold((self, first), |(mut reader, pending)| async move {
            let row = match pending {
                Some(row) => Some(row),
                None => reader.next_row().await?,
            };
            Ok(row.map(|row| (row, (reader, None))))
        });
        Ok(Box::pin(rows))
    }
}

#[async_trait]
impl DocStore for EmbeddedStore {
    fn describe(&self) -> String {
        format!("embedded store at {}", self.path.display())
    }

    async fn ping(&self) -> StoreResult<()> {
        self.with(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(sql_error)
        })
        .await
    }

    async fn all_dbs(&self) -> StoreResult<Vec<String>> {
        self.with(|conn| {
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
        self.with(move |conn| {
            conn.execute("INSERT OR IGNORE INTO dbs (name) VALUES (?1)", [db])
                .map(|_| ())
                .map_err(sql_error)
        })
        .await
    }

    async fn get_doc(&self, db: &DbName, id: &DocId) -> StoreResult<Option<Value>> {
        let (db, id) = (db.as_str().to_owned(), id.as_str().to_owned());
        self.with(move |conn| load(conn, &db, &id)).await
    }

    async fn put_doc(&self, db: &DbName, id: &DocId, doc: &Value) -> StoreResult<String> {
        let doc = Prepared::of(id.as_str(), doc)?;
        let (db, id) = (db.as_str().to_owned(), id.as_str().to_owned());
        self.with(move |conn| put(conn, &db, &id, &doc)).await
    }

    async fn delete_doc(&self, db: &DbName, id: &DocId, rev: &str) -> StoreResult<String> {
        let (db, id) = (db.as_str().to_owned(), id.as_str().to_owned());
        let tombstone = Prepared::of(&id, &json!({"_rev": rev, "_deleted": true}))?;
        self.with(move |conn| {
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
        self.with(move |conn| {
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
        self.with(move |conn| {
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
        self.with(move |conn| load(conn, &db, &id)).await
    }

    async fn put_design(&self, db: &DbName, name: &str, doc: &Value) -> StoreResult<String> {
        let id = format!("_design/{name}");
        let doc = Prepared::of(&id, doc)?;
        let db = db.as_str().to_owned();
        self.with(move |conn| put(conn, &db, &id, &doc)).await
    }

    async fn all_docs(&self, db: &DbName) -> StoreResult<RowStream> {
        let reader = BatchReader {
            store: self.clone(),
            db: db.as_str().to_owned(),
            read: Read::AllDocs,
            after: None,
            remaining: None,
            batch: Default::default(),
            more: true,
        };
        reader.stream().await
    }

    async fn view_rows(
        &self,
        db: &DbName,
        view: View,
        query: &ViewQuery,
    ) -> StoreResult<RowStream> {
        let reader = BatchReader {
            store: self.clone(),
            db: db.as_str().to_owned(),
            read: Read::View {
                view,
                query: Box::new(query.clone()),
            },
            after: None,
            remaining: query.limit,
            batch: Default::default(),
            more: true,
        };
        reader.stream().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::AccountId;

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
}
