//! Reading a view or `_all_docs` from the embedded store: a query is answered in batches of
//! about [`BATCH_BYTES`], each read in one turn on a read connection, so a long listing of large
//! documents never holds a connection that other requests wait for longer than one batch, and
//! only one batch of rows is held at a time.
use std::collections::VecDeque;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::docs::{db_exists, load_text};
use super::pool::Connections;
use super::{fault, sort_key, sql_error};
use crate::store::{RowStream, StoreError, StoreResult, View, ViewQuery, ViewRow};

/// Rows a view query reads in one turn, in bytes.
const BATCH_BYTES: usize = 1 << 20;

/// Where a read continues: after this row, in the query's order.
#[derive(Debug, Clone)]
struct After {
    sort_key: Vec<u8>,
    id: String,
    seq: i64,
}

/// The rows of one turn, and whether it stopped for size (so there may be more).
type Batch = (Vec<ViewRow>, bool);

/// One SQL argument of a view query.
enum Arg {
    Text(String),
    Blob(Vec<u8>),
    Int(i64),
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Arg::Text(s) => s.to_sql(),
            Arg::Blob(b) => b.to_sql(),
            Arg::Int(i) => i.to_sql(),
        }
    }
}

/// The SQL of one turn of a view query, with its arguments: the query's range (keys compared
/// as sort keys), the rows after `after`, the order, `skip` on the first turn, and `limit`.
fn view_sql(
    db: &str,
    view: View,
    q: &ViewQuery,
    after: Option<&After>,
    limit: Option<usize>,
) -> (String, Vec<Arg>) {
    let (lt, gt) = if q.descending { (">", "<") } else { ("<", ">") };
    let mut sql = String::from(
        "SELECT id, key, value, sort_key, seq FROM view_rows WHERE db = ?1 AND design = ?2 AND view = ?3",
    );
    let mut args = vec![
        Arg::Text(db.into()),
        Arg::Text(view.design().into()),
        Arg::Text(view.name().into()),
    ];
    let mut arg = |value: Arg| {
        args.push(value);
        format!("?{}", args.len())
    };
    if let Some(key) = &q.key {
        let k = arg(Arg::Blob(sort_key::of(key)));
        sql.push_str(&format!(" AND sort_key = {k}"));
    } else {
        if let Some(start) = &q.startkey {
            let s = arg(Arg::Blob(sort_key::of(start)));
            match &q.startkey_docid {
                Some(docid) => {
                    let d = arg(Arg::Text(docid.clone()));
                    sql.push_str(&format!(" AND (sort_key, id) {gt}= ({s}, {d})"));
                }
                None => sql.push_str(&format!(" AND sort_key {gt}= {s}")),
            }
        }
        if let Some(end) = &q.endkey {
            let e = arg(Arg::Blob(sort_key::of(end)));
            sql.push_str(&format!(" AND sort_key {lt}= {e}"));
        }
    }
    if let Some(after) = after {
        let k = arg(Arg::Blob(after.sort_key.clone()));
        let d = arg(Arg::Text(after.id.clone()));
        let n = arg(Arg::Int(after.seq));
        sql.push_str(&format!(" AND (sort_key, id, seq) {gt} ({k}, {d}, {n})"));
    }
    let order = if q.descending { "DESC" } else { "ASC" };
    let limit = arg(Arg::Int(limit.map_or(-1, |l| l as i64)));
    let skip = arg(Arg::Int(if after.is_some() { 0 } else { q.skip as i64 }));
    // Statements differ only by the query's shape, so each connection's cache keeps them.
    sql.push_str(&format!(
        " ORDER BY sort_key {order}, id {order}, seq {order} LIMIT {limit} OFFSET {skip}"
    ));
    (sql, args)
}

/// As in CouchDB, a view exists only while its design document defines it; Kazoo's views
/// (`View::is_kazoos`), whose design documents no Kazoo installs here, are always indexed.
fn view_defined(conn: &Connection, db: &str, view: View) -> StoreResult<bool> {
    if view.is_kazoos() {
        return Ok(true);
    }
    conn.prepare_cached(
        "SELECT json_type(body, '$.views.\"' || ?3 || '\"') IS NOT NULL FROM docs
         WHERE db = ?1 AND id = ?2 AND deleted = 0",
    )
    .and_then(|mut stmt| {
        let design = format!("_design/{}", view.design());
        stmt.query_row(params![db, design, view.name()], |row| row.get(0))
            .optional()
    })
    .map(|defined| defined.unwrap_or(false))
    .map_err(sql_error)
}

/// One turn of a view query: the rows after `after` (or from the query's start), up to `limit`
/// rows or about [`BATCH_BYTES`], whichever comes first (at least one row).
fn view_batch(
    conn: &Connection,
    db: &str,
    view: View,
    q: &ViewQuery,
    after: Option<&After>,
    limit: Option<usize>,
) -> StoreResult<(Batch, Option<After>)> {
    if !db_exists(conn, db)? || !view_defined(conn, db, view)? {
        return Err(StoreError::NotFound);
    }
    let (sql, args) = view_sql(db, view, q, after, limit);
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_error)?;
    let mut cursor = stmt
        .query(rusqlite::params_from_iter(args.iter()))
        .map_err(sql_error)?;
    let (mut rows, mut bytes, mut last) = (Vec::new(), 0, None);
    while let Some(row) = cursor.next().map_err(sql_error)? {
        if bytes >= BATCH_BYTES {
            return Ok(((rows, true), last));
        }
        let (id, key, value, sort_key, seq) = (
            row.get::<_, String>(0).map_err(sql_error)?,
            row.get::<_, String>(1).map_err(sql_error)?,
            row.get::<_, String>(2).map_err(sql_error)?,
            row.get::<_, Vec<u8>>(3).map_err(sql_error)?,
            row.get::<_, i64>(4).map_err(sql_error)?,
        );
        let doc = if q.include_docs {
            load_text(conn, db, &id)?
        } else {
            None
        };
        bytes += id.len() + key.len() + value.len() + doc.as_ref().map_or(0, String::len);
        last = Some(After {
            sort_key,
            id: id.clone(),
            seq,
        });
        rows.push(ViewRow {
            key: serde_json::from_str(&key).map_err(fault)?,
            value: RawValue::from_string(value).map_err(fault)?,
            doc: doc.map(RawValue::from_string).transpose().map_err(fault)?,
            id,
        });
    }
    Ok(((rows, false), last))
}

/// Every live document of `db` after the id `after`, in id order (`_all_docs`), up to about
/// [`BATCH_BYTES`] (at least one).
fn docs_batch(
    conn: &Connection,
    db: &str,
    after: Option<&After>,
) -> StoreResult<(Batch, Option<After>)> {
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
    let (mut rows, mut bytes, mut more) = (Vec::new(), 0, false);
    while let Some(row) = cursor.next().map_err(sql_error)? {
        if bytes >= BATCH_BYTES {
            more = true;
            break;
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
    let last = rows.last().map(|row| After {
        sort_key: Vec::new(),
        id: row.id.clone(),
        seq: 0,
    });
    Ok(((rows, more), last))
}

/// What a [`BatchReader`] reads.
#[derive(Clone)]
pub enum Read {
    View { view: View, query: Box<ViewQuery> },
    AllDocs,
}

/// Rows read in turns of [`view_batch`] or [`docs_batch`], each on a read connection only while
/// it reads, handed out one at a time.
pub struct BatchReader {
    conns: Arc<Connections>,
    db: String,
    read: Read,
    after: Option<After>,
    /// Rows still wanted (`limit`), if limited.
    remaining: Option<usize>,
    batch: VecDeque<ViewRow>,
    more: bool,
}

impl BatchReader {
    pub fn new(conns: Arc<Connections>, db: &str, read: Read) -> Self {
        let remaining = match &read {
            Read::View { query, .. } => query.limit,
            Read::AllDocs => None,
        };
        Self {
            conns,
            db: db.to_owned(),
            read,
            after: None,
            remaining,
            batch: VecDeque::new(),
            more: true,
        }
    }

    async fn next_row(&mut self) -> StoreResult<Option<ViewRow>> {
        if self.batch.is_empty() && self.more && self.remaining != Some(0) {
            let (db, after, limit) = (self.db.clone(), self.after.take(), self.remaining);
            let read = self.read.clone();
            let ((rows, more), last) = self
                .conns
                .read(move |conn| match read {
                    Read::View { view, query } => {
                        view_batch(conn, &db, view, &query, after.as_ref(), limit)
                    }
                    Read::AllDocs => docs_batch(conn, &db, after.as_ref()),
                })
                .await?;
            self.more = more;
            self.after = last;
            if let Some(remaining) = self.remaining.as_mut() {
                *remaining -= rows.len().min(*remaining);
            }
            self.batch = rows.into();
        }
        Ok(self.batch.pop_front())
    }

    /// The rows as a stream. The first turn runs now, so a missing database or view is an
    /// error of the call, as CouchDB answers it.
    pub async fn stream(mut self) -> StoreResult<RowStream> {
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
