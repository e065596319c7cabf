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
use serde_json::{json, Map, Value};

use super::{collation, native_views, DocStore, StoreError, StoreResult, ViewQuery, ViewRow};
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

fn sql_error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        // Another process holds the write lock past the busy timeout: a passing outage.
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Unreachable(e.to_string())
        }
        _ => fault(e),
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
        setup().map_err(|e| format!("cannot prepare {}: {e}", path.display()))?;
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
    let body: Map<String, Value> = serde_json::from_str(&body).map_err(fault)?;
    let mut doc = Map::new();
    doc.insert("_id".into(), json!(id));
    doc.insert("_rev".into(), json!(rev));
    doc.extend(body);
    let mut stmt = conn
        .prepare("SELECT name, content_type, digest, length(data) FROM attachments WHERE db = ?1 AND id = ?2 ORDER BY name")
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
    if !stubs.is_empty() {
        doc.insert("_attachments".into(), Value::Object(stubs));
    }
    Ok(Some(Value::Object(doc)))
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

fn reindex(conn: &Connection, db: &str, id: &str, doc: Option<&Value>) -> StoreResult<()> {
    conn.execute("DELETE FROM view_rows WHERE db = ?1 AND id = ?2", [db, id])
        .map_err(sql_error)?;
    let Some(doc) = doc else {
        return Ok(());
    };
    let mut insert = conn
        .prepare_cached("INSERT INTO view_rows (db, design, view, key, id, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .map_err(sql_error)?;
    for (design, view) in native_views::VIEWS {
        for (key, value) in native_views::emit(design, view, doc) {
            insert
                .execute(params![
                    db,
                    design,
                    view,
                    key.to_string(),
                    id,
                    value.to_string()
                ])
                .map_err(sql_error)?;
        }
    }
    Ok(())
}

/// Writes a document (or its tombstone) inside an open transaction.
fn write(
    conn: &Connection,
    db: &str,
    id: &str,
    doc: &Value,
    generation: u64,
) -> StoreResult<String> {
    let mut body = doc.as_object().cloned().unwrap_or_default();
    let deleted = body.get("_deleted") == Some(&Value::Bool(true));
    let keep: Vec<String> = body
        .get("_attachments")
        .and_then(Value::as_object)
        .map(|a| a.keys().cloned().collect())
        .unwrap_or_default();
    body.retain(|k, _| !k.starts_with('_'));
    let text = if deleted {
        "{}".to_owned()
    } else {
        Value::Object(body).to_string()
    };
    let rev = new_rev(generation, &text);
    conn.execute(
        "INSERT INTO docs (db, id, rev, deleted, body) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (db, id) DO UPDATE SET rev = ?3, deleted = ?4, body = ?5",
        params![db, id, rev, deleted as i64, text],
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
    for name in names.iter().filter(|n| deleted || !keep.contains(n)) {
        conn.execute(
            "DELETE FROM attachments WHERE db = ?1 AND id = ?2 AND name = ?3",
            [db, id, name],
        )
        .map_err(sql_error)?;
    }
    let indexed = if deleted { None } else { load(conn, db, id)? };
    reindex(conn, db, id, indexed.as_ref())?;
    Ok(rev)
}

/// Reads, checks and writes in one immediate transaction, so two writers (threads or processes)
/// can never both pass the revision check.
fn put(conn: &mut Connection, db: &str, id: &str, doc: &Value) -> StoreResult<String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    if !db_exists(&tx, db)? {
        return Err(StoreError::NotFound);
    }
    let cur = current(&tx, db, id)?;
    let given = doc.get("_rev").and_then(Value::as_str);
    let generation = check_rev(cur.as_ref(), given)?;
    let rev = write(&tx, db, id, doc, generation)?;
    tx.commit().map_err(sql_error)?;
    Ok(rev)
}

fn view_query(
    conn: &Connection,
    db: &str,
    design: &str,
    view: &str,
    q: &ViewQuery,
) -> StoreResult<Vec<ViewRow>> {
    if !db_exists(conn, db)? {
        return Err(StoreError::NotFound);
    }
    // As in CouchDB, a view exists only while its design document defines it.
    let ddoc = load(conn, db, &format!("_design/{design}"))?;
    let defined = ddoc
        .as_ref()
        .and_then(|d| d.get("views"))
        .and_then(|v| v.get(view))
        .is_some();
    if !defined || !native_views::VIEWS.contains(&(design, view)) {
        return Err(StoreError::NotFound);
    }
    let (lt, gt) = if q.descending { (">", "<") } else { ("<", ">") };
    let mut sql = String::from(
        "SELECT id, key, value FROM view_rows WHERE db = ?1 AND design = ?2 AND view = ?3",
    );
    let mut args: Vec<String> = vec![db.into(), design.into(), view.into()];
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
    let order = if q.descending { "DESC" } else { "ASC" };
    sql.push_str(&format!(" ORDER BY key {order}, id {order}"));
    sql.push_str(&format!(
        " LIMIT {} OFFSET {}",
        q.limit.map_or(-1, |l| l as i64),
        q.skip
    ));
    let mut stmt = conn.prepare(&sql).map_err(sql_error)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .map_err(sql_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql_error)?;
    rows.into_iter()
        .map(|(id, key, value)| {
            let doc = if q.include_docs {
                load(conn, db, &id)?
            } else {
                None
            };
            Ok(ViewRow {
                key: serde_json::from_str(&key).map_err(fault)?,
                value: serde_json::from_str(&value).map_err(fault)?,
                id,
                doc,
            })
        })
        .collect()
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
        let (db, id, doc) = (db.as_str().to_owned(), id.as_str().to_owned(), doc.clone());
        self.with(move |conn| put(conn, &db, &id, &doc)).await
    }

    async fn delete_doc(&self, db: &DbName, id: &DocId, rev: &str) -> StoreResult<String> {
        let (db, id) = (db.as_str().to_owned(), id.as_str().to_owned());
        let tombstone = json!({"_rev": rev, "_deleted": true});
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_error)?;
            let cur = current(&tx, &db, &id)?;
            if cur.as_ref().is_none_or(|c| c.deleted) {
                return Err(StoreError::NotFound);
            }
            let generation =
                check_rev(cur.as_ref(), tombstone.get("_rev").and_then(Value::as_str))?;
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
            let new_rev = write(&tx, &db, &id, &doc, generation(&rev) + 1)?;
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
        let (db, id, doc) = (
            db.as_str().to_owned(),
            format!("_design/{name}"),
            doc.clone(),
        );
        self.with(move |conn| put(conn, &db, &id, &doc)).await
    }

    async fn all_docs(
        &self,
        db: &DbName,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Value>> {
        let (db, after) = (db.as_str().to_owned(), after.unwrap_or("").to_owned());
        self.with(move |conn| {
            if !db_exists(conn, &db)? {
                return Err(StoreError::NotFound);
            }
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id FROM docs WHERE db = ?1 AND deleted = 0 AND id > ?2 ORDER BY id LIMIT ?3",
                )
                .map_err(sql_error)?;
            let ids = stmt
                .query_map(params![db, after, limit as i64], |row| row.get::<_, String>(0))
                .map_err(sql_error)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_error)?;
            let mut docs = Vec::with_capacity(ids.len());
            for id in ids {
                docs.extend(load(conn, &db, &id)?);
            }
            Ok(docs)
        })
        .await
    }

    async fn query_view(
        &self,
        db: &DbName,
        design: &str,
        view: &str,
        query: &ViewQuery,
    ) -> StoreResult<Vec<ViewRow>> {
        let (db, design, view, query) = (
            db.as_str().to_owned(),
            design.to_owned(),
            view.to_owned(),
            query.clone(),
        );
        self.with(move |conn| view_query(conn, &db, &design, &view, &query))
            .await
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
            s.query_view(&db, "groups", "crossbar_listing", &q).await,
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
        let rows = s
            .query_view(&db, "groups", "crossbar_listing", &q)
            .await
            .unwrap();
        assert_eq!(ids(rows), ["1", "a", "A", "b", "B"]);
        let q = ViewQuery {
            startkey: Some(json!("A")),
            limit: Some(2),
            ..Default::default()
        };
        assert_eq!(
            ids(s
                .query_view(&db, "groups", "crossbar_listing", &q)
                .await
                .unwrap()),
            ["A", "b"]
        );
        let q = ViewQuery {
            startkey: Some(json!("b")),
            descending: true,
            ..Default::default()
        };
        assert_eq!(
            ids(s
                .query_view(&db, "groups", "crossbar_listing", &q)
                .await
                .unwrap()),
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
            .query_view(&db, "groups", "crossbar_listing_by_user", &q)
            .await
            .unwrap();
        assert_eq!(
            rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["g2", "g3"]
        );
    }
}
