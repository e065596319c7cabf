//! Documents in the embedded store, with CouchDB's semantics: revisions and their checks,
//! tombstones, attachment stubs, and the view rows a document emits, written with it.
use md5::{Digest, Md5};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{json, Map, Value};

use super::{changes, fault, native_views, sort_key, sql_error};
use crate::store::{StoreError, StoreResult, View};

fn new_rev(generation: u64, body: &str) -> String {
    let digest = crate::domain::ids::hex(&Md5::digest(body.as_bytes()));
    format!("{generation}-{digest}")
}

pub fn generation(rev: &str) -> u64 {
    rev.split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

pub struct Current {
    rev: String,
    pub deleted: bool,
}

pub fn db_exists(conn: &Connection, db: &str) -> StoreResult<bool> {
    conn.prepare_cached("SELECT 1 FROM dbs WHERE name = ?1")
        .and_then(|mut stmt| stmt.query_row([db], |_| Ok(())).optional())
        .map(|r| r.is_some())
        .map_err(sql_error)
}

pub fn current(conn: &Connection, db: &str, id: &str) -> StoreResult<Option<Current>> {
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
pub fn load(conn: &Connection, db: &str, id: &str) -> StoreResult<Option<Value>> {
    load_text(conn, db, id)?
        .map(|text| serde_json::from_str(&text).map_err(fault))
        .transpose()
}

/// [`load`] as JSON text, put together from the stored parts without parsing the body.
pub fn load_text(conn: &Connection, db: &str, id: &str) -> StoreResult<Option<String>> {
    let row = conn
        .prepare_cached("SELECT rev, body FROM docs WHERE db = ?1 AND id = ?2 AND deleted = 0")
        .and_then(|mut stmt| {
            stmt.query_row([db, id], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .optional()
        })
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
pub fn check_rev(current: Option<&Current>, given: Option<&str>) -> StoreResult<u64> {
    match (current, given) {
        (Some(c), Some(g)) if c.rev == g => Ok(generation(&c.rev) + 1),
        (Some(c), None) if c.deleted => Ok(generation(&c.rev) + 1),
        (None, None) => Ok(1),
        _ => Err(StoreError::Conflict),
    }
}

/// One row a view emits for a document, as it is stored.
pub struct EmittedRow {
    pub view: View,
    pub sort_key: Vec<u8>,
    pub key: String,
    pub value: String,
}

/// A document ready to be written, prepared from its JSON before a connection is taken: the
/// stored body text (the document without its `_` fields), and the view rows it emits.
pub struct Prepared {
    pub rev: Option<String>,
    deleted: bool,
    /// Attachments the new revision names; the others are dropped, as in CouchDB.
    keep: Vec<String>,
    body: String,
    rows: Vec<EmittedRow>,
}

impl Prepared {
    pub fn of(id: &str, doc: &Value) -> StoreResult<Self> {
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
            emitted(&with_id(id, fields))
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

/// `fields` as a document whose `_id` is `id`.
pub fn with_id(id: &str, fields: &Map<String, Value>) -> Value {
    let mut doc = fields.clone();
    doc.insert("_id".into(), Value::from(id));
    Value::Object(doc)
}

fn rev_of(fields: &Map<String, Value>) -> Option<String> {
    fields
        .get("_rev")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The rows every view emits for `doc`, as stored.
pub fn emitted(doc: &Value) -> Vec<EmittedRow> {
    View::ALL
        .into_iter()
        .flat_map(|view| {
            native_views::emit(view, doc)
                .into_iter()
                .map(move |(key, value)| EmittedRow {
                    view,
                    sort_key: sort_key::of(&key),
                    key: key.to_string(),
                    value: value.to_string(),
                })
        })
        .collect()
}

/// Stores the rows a document emits.
pub fn insert_rows(
    conn: &Connection,
    db: &str,
    id: &str,
    rows: &[EmittedRow],
) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO view_rows (db, design, view, sort_key, id, seq, key, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (seq, row) in rows.iter().enumerate() {
        let (design, view) = (row.view.design(), row.view.name());
        let (key, value) = (&row.key, &row.value);
        insert.execute(params![
            db,
            design,
            view,
            row.sort_key,
            id,
            seq as i64,
            key,
            value
        ])?;
    }
    Ok(())
}

/// Serialises an object without its `_` fields, as the body is stored.
struct PublicFields<'a>(&'a Map<String, Value>);

impl serde::Serialize for PublicFields<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().filter(|(k, _)| !k.starts_with('_')))
    }
}

/// Writes a prepared document (or its tombstone) inside an open transaction.
pub fn write(
    conn: &Connection,
    db: &str,
    id: &str,
    doc: &Prepared,
    generation: u64,
) -> StoreResult<String> {
    let rev = new_rev(generation, &doc.body);
    conn.prepare_cached(
        "INSERT INTO docs (db, id, rev, deleted, body) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (db, id) DO UPDATE SET rev = ?3, deleted = ?4, body = ?5",
    )
    .and_then(|mut stmt| stmt.execute(params![db, id, rev, doc.deleted as i64, doc.body]))
    .map_err(sql_error)?;
    // As in CouchDB, attachments not named in the new revision are dropped.
    let mut attachments = conn
        .prepare_cached("SELECT name FROM attachments WHERE db = ?1 AND id = ?2")
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
    conn.prepare_cached("DELETE FROM view_rows WHERE db = ?1 AND id = ?2")
        .and_then(|mut stmt| stmt.execute([db, id]))
        .map_err(sql_error)?;
    insert_rows(conn, db, id, &doc.rows).map_err(sql_error)?;
    changes::record(conn, db, Some(id))?;
    Ok(rev)
}

/// Reads, checks and writes in one immediate transaction, so two writers (threads or processes)
/// can never both pass the revision check.
pub fn put(conn: &mut Connection, db: &str, id: &str, doc: &Prepared) -> StoreResult<String> {
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
