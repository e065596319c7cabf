//! The history on CouchDB: the database `kz_groups_history`, created partitioned by account
//! (`?partitioned=true`) where the server allows it and plain where it refuses (pouchdb-server,
//! CouchDB 2); every read below works on both. One group's entries are one `_all_docs` range
//! (their ids share a prefix, `domain::history`); one account's by time one range of the global
//! view `history/by_account_time` (`[account, time key]`); pruning reads `history/by_time`.
//! Checkpoints of the change-feed follower are `_local` documents (never replicated).
use async_trait::async_trait;
use reqwest::Method;
use serde_json::{json, Value};

use super::CouchClient;
use crate::domain::history::{group_prefix, stored_id, time_key, Entry, EntryId};
use crate::domain::ids::{AccountId, DbName, DocId};
use crate::store::history::{AccountRange, HistoryStore, Written, HISTORY_DB};
use crate::store::{DocStore, StoreError, StoreResult};

/// Above every character of a stored id, in CouchDB's collation and bytewise.
const ID_END: &str = "\u{fff0}";
const DESIGN: &str = "history";
/// Rows of the history's change feed read per call.
const WRITTEN_BATCH: usize = 5000;
/// Rows read per call while pruning.
const PRUNE_BATCH: usize = 1000;

fn design() -> Value {
    json!({
        "language": "javascript",
        // A global view: on a partitioned database, views are per partition unless told not.
        "options": {"partitioned": false},
        "views": {
            "by_account_time": {
                "map": "function (doc) { if (doc.time_key && doc.account_id) \
                        { emit([doc.account_id, doc.time_key], null); } }"
            },
            "by_time": {
                "map": "function (doc) { if (typeof doc.timestamp === 'number') \
                        { emit(doc.timestamp, doc._rev); } }"
            }
        }
    })
}

/// An entry as stored: its document id and account-wide order beside its fields.
#[derive(serde::Serialize)]
struct Stored<'a> {
    #[serde(rename = "_id")]
    id: String,
    time_key: String,
    #[serde(flatten)]
    entry: &'a Entry,
}

pub struct CouchHistory {
    client: CouchClient,
    db: DbName,
}

impl CouchHistory {
    pub fn new(client: CouchClient) -> Self {
        Self {
            client,
            db: DbName::system(HISTORY_DB),
        }
    }

    async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> StoreResult<Value> {
        let url = self.client.url(segments, query);
        self.client
            .json(self.client.patient(Method::GET, url))
            .await
    }

    /// The rows of a view-shaped answer.
    fn rows(answer: &Value) -> impl Iterator<Item = &Value> {
        answer
            .get("rows")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    }

    /// The documents of a view-shaped answer's rows.
    fn docs(answer: &Value) -> impl Iterator<Item = (&Value, Entry)> {
        Self::rows(answer).filter_map(|row| {
            let entry = serde_json::from_value(row.get("doc")?.clone()).ok()?;
            Some((row, entry))
        })
    }

    /// The ids and revisions of a view-shaped answer's rows (the revision as `_all_docs` or
    /// `by_time` values it).
    fn revs(answer: &Value) -> Vec<Value> {
        Self::rows(answer)
            .filter_map(|row| {
                let id = row.get("id")?.as_str()?;
                let value = row.get("value")?;
                let rev = value.get("rev").unwrap_or(value).as_str()?;
                Some(json!({"_id": id, "_rev": rev, "_deleted": true}))
            })
            .collect()
    }

    async fn delete_rows(&self, answer: &Value) -> StoreResult<u64> {
        let docs = Self::revs(answer);
        if docs.is_empty() {
            return Ok(0);
        }
        let results = self.client.bulk_docs(&self.db, &docs).await?;
        Ok(results.iter().filter(|r| r.is_ok()).count() as u64)
    }

    async fn create_db(&self) -> StoreResult<()> {
        let url = self
            .client
            .url(&[HISTORY_DB], &[("partitioned", "true".into())]);
        match self
            .client
            .send(self.client.request(Method::PUT, url))
            .await
        {
            Ok(_) | Err(StoreError::Other { status: 412, .. }) => Ok(()),
            // A server without partitioned databases: a plain one serves the same reads.
            Err(StoreError::Other { .. }) => self.client.create_db(&self.db).await,
            Err(e) => Err(e),
        }
    }
}

fn json_key(v: impl serde::Serialize) -> String {
    serde_json::to_string(&v).unwrap_or_default()
}

#[async_trait]
impl HistoryStore for CouchHistory {
    async fn prepare(&self) -> StoreResult<()> {
        self.create_db().await?;
        let mut wanted = design();
        match self.client.get_design(&self.db, DESIGN).await? {
            Some(found) if found.get("views") == wanted.get("views") => Ok(()),
            found => {
                if let Some(rev) = found.as_ref().and_then(|d| d.get("_rev")) {
                    wanted["_rev"] = rev.clone();
                }
                match self.client.put_design(&self.db, DESIGN, &wanted).await {
                    // Another instance installed it meanwhile.
                    Ok(_) | Err(StoreError::Conflict) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn insert(&self, entries: &[Entry]) -> StoreResult<Vec<bool>> {
        let docs = entries
            .iter()
            .map(|entry| {
                let (account, group) = entry.ids().ok_or(StoreError::NotFound)?;
                Ok(Stored {
                    id: stored_id(&account, &group, &entry.id),
                    time_key: time_key(entry, &group),
                    entry,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        let results = self.client.bulk_write(&self.db, &docs, &ids).await?;
        results
            .into_iter()
            .map(|r| match r {
                Ok(_) => Ok(true),
                Err(StoreError::Conflict) => Ok(false),
                Err(e) => Err(e),
            })
            .collect()
    }

    async fn stored(&self, ids: &[String]) -> StoreResult<Vec<bool>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let url = self.client.url(&[HISTORY_DB, "_all_docs"], &[]);
        let request = self
            .client
            .request(Method::POST, url)
            .json(&json!({ "keys": ids }));
        let answer = self.client.json(request).await?;
        // A row with a `value` is a stored entry, or one removed since (`value.deleted`); an
        // unknown id's row carries `error` instead.
        let found: std::collections::HashSet<&str> = Self::rows(&answer)
            .filter(|row| row.get("value").is_some_and(Value::is_object))
            .filter_map(|row| row.get("key").and_then(Value::as_str))
            .collect();
        Ok(ids.iter().map(|id| found.contains(id.as_str())).collect())
    }

    async fn written_since(&self, since: Option<&Value>) -> StoreResult<Option<Written>> {
        let Some(since) = since else {
            let end = self
                .get(&[HISTORY_DB, "_changes"], &[("since", "now".into())])
                .await?;
            let last_seq = end.get("last_seq").cloned().unwrap_or(Value::from(0));
            return Ok(Some(Written {
                ids: Vec::new(),
                last_seq,
            }));
        };
        let since = match since {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let answer = self
            .get(
                &[HISTORY_DB, "_changes"],
                &[("since", since), ("limit", WRITTEN_BATCH.to_string())],
            )
            .await?;
        let ids = answer
            .get("results")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|row| row.get("deleted") != Some(&Value::Bool(true)))
            .filter_map(|row| Some(row.get("id")?.as_str()?.to_owned()))
            .collect();
        let last_seq = answer
            .get("last_seq")
            .cloned()
            .ok_or_else(|| super::bad_answer("a _changes answer without last_seq"))?;
        Ok(Some(Written { ids, last_seq }))
    }

    async fn group(
        &self,
        account: &AccountId,
        group: &DocId,
        start: Option<&EntryId>,
        limit: usize,
    ) -> StoreResult<Vec<Entry>> {
        let prefix = group_prefix(account, group);
        let answer = self
            .get(
                &[HISTORY_DB, "_all_docs"],
                &[
                    ("include_docs", "true".into()),
                    ("descending", "true".into()),
                    (
                        "startkey",
                        json_key(format!("{prefix}{}", start.map_or(ID_END, EntryId::as_str))),
                    ),
                    ("endkey", json_key(&prefix)),
                    ("limit", limit.to_string()),
                ],
            )
            .await?;
        Ok(Self::docs(&answer).map(|(_, e)| e).collect())
    }

    async fn entry(
        &self,
        account: &AccountId,
        group: &DocId,
        id: &EntryId,
    ) -> StoreResult<Option<Entry>> {
        match self
            .get(&[HISTORY_DB, &stored_id(account, group, id)], &[])
            .await
        {
            Ok(doc) => Ok(serde_json::from_value(doc).ok()),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn account(
        &self,
        account: &AccountId,
        range: &AccountRange,
    ) -> StoreResult<Vec<(String, Entry)>> {
        let answer = self
            .get(
                &[HISTORY_DB, "_design", DESIGN, "_view", "by_account_time"],
                &[
                    ("include_docs", "true".into()),
                    ("descending", "true".into()),
                    ("startkey", json_key([account.as_str(), &range.upper])),
                    ("endkey", json_key([account.as_str(), &range.lower])),
                    ("limit", range.limit.to_string()),
                ],
            )
            .await?;
        Ok(Self::docs(&answer)
            .filter_map(|(row, e)| Some((row.pointer("/key/1")?.as_str()?.to_owned(), e)))
            .collect())
    }

    async fn prune(
        &self,
        before: i64,
        groups: &[(AccountId, DocId)],
        keep: usize,
    ) -> StoreResult<u64> {
        let mut removed = 0;
        loop {
            let old = self
                .get(
                    &[HISTORY_DB, "_design", DESIGN, "_view", "by_time"],
                    &[
                        ("endkey", (before - 1).to_string()),
                        ("limit", PRUNE_BATCH.to_string()),
                    ],
                )
                .await?;
            let n = self.delete_rows(&old).await?;
            removed += n;
            if n < PRUNE_BATCH as u64 {
                break;
            }
        }
        for (account, group) in groups {
            let prefix = group_prefix(account, group);
            let surplus = self
                .get(
                    &[HISTORY_DB, "_all_docs"],
                    &[
                        ("descending", "true".into()),
                        ("startkey", json_key(format!("{prefix}{ID_END}"))),
                        ("endkey", json_key(&prefix)),
                        ("skip", keep.to_string()),
                        ("limit", PRUNE_BATCH.to_string()),
                    ],
                )
                .await?;
            removed += self.delete_rows(&surplus).await?;
        }
        Ok(removed)
    }

    async fn checkpoint(&self, name: &str) -> StoreResult<Option<Value>> {
        match self.get(&[HISTORY_DB, "_local", name], &[]).await {
            Ok(doc) => Ok(doc.get("seq").cloned()),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn set_checkpoint(&self, name: &str, value: &Value) -> StoreResult<()> {
        let rev = match self.get(&[HISTORY_DB, "_local", name], &[]).await {
            Ok(doc) => doc.get("_rev").cloned(),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e),
        };
        let mut doc = json!({"seq": value});
        if let Some(rev) = rev {
            doc["_rev"] = rev;
        }
        let url = self.client.url(&[HISTORY_DB, "_local", name], &[]);
        self.client
            .send(self.client.request(Method::PUT, url).json(&doc))
            .await
            .map(|_| ())
    }
}
