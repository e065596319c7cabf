//! The embedded store's change feed: every write appends what it changed to `changes`, in the
//! write's own transaction, so a change is seen exactly when its data is, by this process and
//! by any other on the same file (the CLI writing while the server runs). Readers poll it: a
//! sequence number is an integer, and the table keeps the last [`KEPT`] changes.
use std::collections::HashMap;

use rusqlite::{params, Connection};

use super::sql_error;
use crate::store::{Changed, StoreError, StoreResult};

/// How many changes the table keeps; a reader further behind has lost its place.
const KEPT: i64 = 10_000;

pub const TABLE: &str = "
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, db TEXT NOT NULL, id TEXT);
";

/// Records that `id` of `db` changed (`None`: the database itself), inside the writer's
/// transaction, and forgets changes older than the last [`KEPT`].
pub fn record(conn: &Connection, db: &str, id: Option<&str>) -> StoreResult<()> {
    conn.prepare_cached("INSERT INTO changes (db, id) VALUES (?1, ?2)")
        .and_then(|mut insert| insert.execute(params![db, id]))
        .and_then(|_| {
            let seq = conn.last_insert_rowid();
            conn.prepare_cached("DELETE FROM changes WHERE seq <= ?1")
                .and_then(|mut prune| prune.execute([seq - KEPT]))
        })
        .map(|_| ())
        .map_err(sql_error)
}

/// The last change's sequence number (0 before any).
pub fn end(conn: &Connection) -> StoreResult<i64> {
    conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM changes")
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .map_err(sql_error)
}

/// The changes after `since` (of `db` only, when given), at most `limit` of them, and the
/// sequence number to read on from. A reader whose place was forgotten gets an error: what it
/// guards may have changed unseen.
pub fn after(
    conn: &Connection,
    db: Option<&str>,
    since: i64,
    limit: usize,
) -> StoreResult<(Vec<Changed>, i64, HashMap<String, String>)> {
    let last = end(conn)?;
    if last - since > KEPT {
        return Err(StoreError::Other {
            status: 500,
            error: "embedded_store".into(),
            reason: format!("the change feed moved on past {since}"),
        });
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT c.seq, c.db, c.id, d.rev FROM changes c
             LEFT JOIN docs d ON d.db = c.db AND d.id = c.id
             WHERE c.seq > ?1 AND (?2 IS NULL OR c.db = ?2)
             ORDER BY c.seq LIMIT ?3",
        )
        .map_err(sql_error)?;
    let mut rows = stmt
        .query(params![since, db, limit as i64])
        .map_err(sql_error)?;
    let (mut changed, mut read, mut full) = (Vec::new(), 0, false);
    let mut revs = HashMap::new();
    while let Some(row) = rows.next().map_err(sql_error)? {
        let seq: i64 = row.get(0).map_err(sql_error)?;
        let db: String = row.get(1).map_err(sql_error)?;
        let id: Option<String> = row.get(2).map_err(sql_error)?;
        let rev: Option<String> = row.get(3).map_err(sql_error)?;
        if let (Some(id), Some(rev)) = (&id, rev) {
            revs.insert(id.clone(), rev);
        }
        read = seq;
        changed.push(match id {
            Some(id) => Changed::Doc { db, id },
            None => Changed::Db(db),
        });
        full = changed.len() == limit;
    }
    // A filtered read that found less than its limit has seen everything up to `last`.
    let next = if full { read } else { last.max(since) };
    Ok((changed, next, revs))
}
