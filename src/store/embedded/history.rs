//! The history on the embedded store: a table of its own, in a file of its own beside the
//! store's (`history.sqlite3` under `KZ_GROUPS_DATA`), so its batched writes never wait for the
//! groups' writer nor make it wait. Entries by id (one group's range), by account and time, and
//! by time alone (pruning).
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::pool::Connections;
use super::{fault, sql_error};
use crate::domain::history::{group_prefix, stored_id, time_key, Entry, EntryId};
use crate::domain::ids::{AccountId, DocId};
use crate::store::history::{AccountRange, HistoryStore};
use crate::store::StoreResult;

const FILE_NAME: &str = "history.sqlite3";
const READERS: usize = 2;
/// Above every character of a stored id (ASCII).
const ID_END: &str = "~";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS history (
    id TEXT PRIMARY KEY, account TEXT NOT NULL, time_key TEXT NOT NULL,
    timestamp INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_by_account_time ON history (account, time_key);
CREATE INDEX IF NOT EXISTS history_by_time ON history (timestamp);
CREATE TABLE IF NOT EXISTS history_checkpoints (name TEXT PRIMARY KEY, value TEXT NOT NULL);
";

pub struct EmbeddedHistory {
    conns: Arc<Connections>,
}

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

impl EmbeddedHistory {
    /// Opens (creating) `history.sqlite3` in `dir`, private to its user.
    pub fn open(dir: &Path) -> Result<Self, String> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(FILE_NAME);
        let fail = |e: rusqlite::Error| format!("cannot open {}: {e}", path.display());
        let writer = open_conn(&path).map_err(fail)?;
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| writer.pragma_update(None, "synchronous", "FULL"))
            .and_then(|_| writer.execute_batch(SCHEMA))
            .map_err(fail)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot make {} private (0600): {e}", path.display()))?;
        let readers = (0..READERS)
            .map(|_| open_conn(&path))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        Ok(Self {
            conns: Arc::new(Connections::new(writer, readers)),
        })
    }
}

fn parse(body: String) -> StoreResult<Entry> {
    serde_json::from_str(&body).map_err(fault)
}

#[async_trait]
impl HistoryStore for EmbeddedHistory {
    async fn prepare(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn insert(&self, entries: &[Entry]) -> StoreResult<Vec<bool>> {
        let rows = entries
            .iter()
            .map(|e| {
                let (account, group) = e.ids().ok_or_else(|| fault("bad entry ids"))?;
                Ok((
                    stored_id(&account, &group, &e.id),
                    e.account_id.clone(),
                    time_key(e, &group),
                    e.timestamp,
                    serde_json::to_string(e).map_err(fault)?,
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.conns
            .write(move |conn| {
                let tx = conn.transaction().map_err(sql_error)?;
                let mut written = Vec::with_capacity(rows.len());
                {
                    let mut stmt = tx
                        .prepare_cached(
                            "INSERT OR IGNORE INTO history (id, account, time_key, timestamp, \
                             body) VALUES (?1, ?2, ?3, ?4, ?5)",
                        )
                        .map_err(sql_error)?;
                    for (id, account, key, ts, body) in &rows {
                        let n = stmt
                            .execute(params![id, account, key, ts, body])
                            .map_err(sql_error)?;
                        written.push(n == 1);
                    }
                }
                tx.commit().map_err(sql_error)?;
                Ok(written)
            })
            .await
    }

    async fn stored(&self, ids: &[String]) -> StoreResult<Vec<bool>> {
        let ids = ids.to_vec();
        self.conns
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT 1 FROM history WHERE id = ?1")
                    .map_err(sql_error)?;
                ids.iter()
                    .map(|id| stmt.exists([id]).map_err(sql_error))
                    .collect()
            })
            .await
    }

    async fn group(
        &self,
        account: &AccountId,
        group: &DocId,
        start: Option<&EntryId>,
        limit: usize,
    ) -> StoreResult<Vec<Entry>> {
        let prefix = group_prefix(account, group);
        let upper = format!("{prefix}{}", start.map_or(ID_END, EntryId::as_str));
        self.conns
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT body FROM history WHERE id >= ?1 AND id <= ?2 \
                         ORDER BY id DESC LIMIT ?3",
                    )
                    .map_err(sql_error)?;
                let bodies = stmt
                    .query_map(params![prefix, upper, limit as i64], |r| r.get(0))
                    .map_err(sql_error)?
                    .collect::<Result<Vec<String>, _>>()
                    .map_err(sql_error)?;
                bodies.into_iter().map(parse).collect()
            })
            .await
    }

    async fn entry(
        &self,
        account: &AccountId,
        group: &DocId,
        id: &EntryId,
    ) -> StoreResult<Option<Entry>> {
        let id = stored_id(account, group, id);
        let body = self
            .conns
            .read(move |conn| {
                conn.query_row("SELECT body FROM history WHERE id = ?1", [id], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
                .map_err(sql_error)
            })
            .await?;
        body.map(parse).transpose()
    }

    async fn account(
        &self,
        account: &AccountId,
        range: &AccountRange,
    ) -> StoreResult<Vec<(String, Entry)>> {
        let (account, range) = (account.as_str().to_owned(), range.clone());
        self.conns
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT time_key, body FROM history WHERE account = ?1 \
                         AND time_key <= ?2 AND time_key >= ?3 ORDER BY time_key DESC LIMIT ?4",
                    )
                    .map_err(sql_error)?;
                let rows = stmt
                    .query_map(
                        params![account, range.upper, range.lower, range.limit as i64],
                        |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                    )
                    .map_err(sql_error)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(sql_error)?;
                rows.into_iter()
                    .map(|(key, body)| Ok((key, parse(body)?)))
                    .collect()
            })
            .await
    }

    async fn prune(
        &self,
        before: i64,
        groups: &[(AccountId, DocId)],
        keep: usize,
    ) -> StoreResult<u64> {
        let prefixes: Vec<String> = groups.iter().map(|(a, g)| group_prefix(a, g)).collect();
        self.conns
            .write(move |conn| {
                let tx = conn.transaction().map_err(sql_error)?;
                let mut removed = tx
                    .execute("DELETE FROM history WHERE timestamp < ?1", [before])
                    .map_err(sql_error)? as u64;
                for prefix in &prefixes {
                    removed += tx
                        .execute(
                            "DELETE FROM history WHERE id IN (SELECT id FROM history \
                             WHERE id >= ?1 AND id < ?2 ORDER BY id DESC LIMIT -1 OFFSET ?3)",
                            params![prefix, format!("{prefix}{ID_END}"), keep as i64],
                        )
                        .map_err(sql_error)? as u64;
                }
                tx.commit().map_err(sql_error)?;
                Ok(removed)
            })
            .await
    }

    async fn checkpoint(&self, name: &str) -> StoreResult<Option<Value>> {
        let name = name.to_owned();
        let value = self
            .conns
            .read(move |conn| {
                conn.query_row(
                    "SELECT value FROM history_checkpoints WHERE name = ?1",
                    [name],
                    |r| r.get::<_, String>(0),
                )
                .optional()
                .map_err(sql_error)
            })
            .await?;
        value
            .map(|v| serde_json::from_str(&v).map_err(fault))
            .transpose()
    }

    async fn set_checkpoint(&self, name: &str, value: &Value) -> StoreResult<()> {
        let (name, value) = (name.to_owned(), value.to_string());
        self.conns
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO history_checkpoints (name, value) VALUES (?1, ?2) \
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    params![name, value],
                )
                .map(|_| ())
                .map_err(sql_error)
            })
            .await
    }
}
