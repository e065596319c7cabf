//! The embedded store's tables, and the one migration they have: the view index (`view_rows`)
//! is derived data, rebuilt from the documents at open whenever what derives it changes.
//!
//! `meta.view_rows` records the format of the stored rows: [`ROWS_FORMAT`] and the ICU4X
//! crates (code and CLDR data, as Cargo.lock pins them) that computed the keys' sort keys. A
//! store written by a kz-groups before sort keys (whose `view_rows` ordered JSON text through a
//! `couch` collation) has no record, so it is rebuilt too: the first open after an upgrade reads
//! every document once, in one transaction.
use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;

use super::docs::{emitted, insert_rows, with_id};

/// Bump when the sort key layout or a view port's output changes: stores rebuild their rows.
const ROWS_FORMAT: &str =
    "sort keys 2, rows stored in view order; Kazoo's attributes/owned and callflows/crossbar_listing";

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS dbs (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS docs (
    db TEXT NOT NULL, id TEXT NOT NULL, rev TEXT NOT NULL,
    deleted INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (db, id));
CREATE TABLE IF NOT EXISTS attachments (
    db TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
    content_type TEXT NOT NULL, digest TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (db, id, name));
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// The rows every view emits, stored in view order: by `sort_key` (BINARY), then `id` (BINARY:
/// doc ids tie-break as raw bytes, as in CouchDB), then `seq` (a document's rows in emit
/// order), so a range is read in one pass without a lookup per row. `key` and `value` are the
/// JSON text given back.
const VIEW_ROWS: &str = "
CREATE TABLE view_rows (
    db TEXT NOT NULL, design TEXT NOT NULL, view TEXT NOT NULL,
    sort_key BLOB NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL,
    key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (db, design, view, sort_key, id, seq)) WITHOUT ROWID;
CREATE INDEX view_rows_doc ON view_rows (db, id);
";

/// What the stored view rows were made with.
fn rows_format() -> String {
    const LOCK: &str = include_str!("../../../Cargo.lock");
    let icu: Vec<String> = LOCK
        .split("[[package]]")
        .filter_map(|package| {
            let field = |name: &str| {
                package.lines().find_map(|line| {
                    line.strip_prefix(name)
                        .and_then(|rest| rest.trim().strip_prefix('='))
                        .map(|v| v.trim().trim_matches('"').to_owned())
                })
            };
            let name = field("name")?;
            name.starts_with("icu_")
                .then(|| format!("{name} {}", field("version").unwrap_or_default()))
        })
        .collect();
    format!("{ROWS_FORMAT}; {}", icu.join(", "))
}

/// Creates what is missing and rebuilds the view rows if their format changed, in one
/// transaction (so of several processes opening one store, one rebuilds).
pub fn prepare(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch(TABLES)?;
    conn.execute_batch(super::changes::TABLE)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let format = rows_format();
    let stored: Option<String> = tx
        .query_row(
            "SELECT value FROM meta WHERE name = 'view_rows'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if stored.as_deref() != Some(format.as_str()) {
        let docs = rebuild_view_rows(&tx)?;
        log::info!("view rows rebuilt from {docs} documents ({format})");
        tx.execute(
            "INSERT INTO meta (name, value) VALUES ('view_rows', ?1)
             ON CONFLICT (name) DO UPDATE SET value = ?1",
            [&format],
        )?;
    }
    tx.commit()
}

/// Drops the view rows and emits them again from every live document. Returns how many
/// documents were read.
fn rebuild_view_rows(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute_batch("DROP TABLE IF EXISTS view_rows;")?;
    conn.execute_batch(VIEW_ROWS)?;
    let mut docs = conn.prepare("SELECT db, id, body FROM docs WHERE deleted = 0")?;
    let mut cursor = docs.query([])?;
    let mut count = 0;
    while let Some(row) = cursor.next()? {
        let (db, id, body): (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
        count += 1;
        let Ok(Value::Object(fields)) = serde_json::from_str(&body) else {
            continue;
        };
        insert_rows(conn, &db, &id, &emitted(&with_id(&id, &fields)))?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_names_the_icu_crates_that_make_sort_keys() {
        let format = rows_format();
        assert!(format.starts_with(ROWS_FORMAT), "{format}");
        assert!(format.contains("icu_collator 2."), "{format}");
        assert!(format.contains("icu_collator_data 2."), "{format}");
    }
}
