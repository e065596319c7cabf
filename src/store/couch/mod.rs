//! The CouchDB adapter: one pooled HTTP client, the base URL and credentials, a timeout, and one
//! method per remote call. It speaks only what CouchDB 3 documents, and gives the port
//! CouchDB's meaning on servers that speak it loosely: the rows of a view are cut out of the
//! answer as it arrives (`rows`), `startkey_docid` works where a server ignores it
//! (`startkey_docid`), and database names come back with their slashes (`all_dbs`).
pub mod history;
mod rows;
pub mod startkey_docid;
pub mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use futures::FutureExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use self::rows::{Malformed, RowSplitter};
use self::tls::CouchCa;
use super::{
    BulkResult, Changed, Changes, DocStore, Feed, Leaf, RowStream, StoreError, StoreResult, View,
    ViewQuery, ViewRow,
};
use crate::domain::ids::{DbName, DocId};

/// Everything but the unreserved characters is escaped in a path segment, `/` included.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Clone)]
pub struct CouchClient {
    http: reqwest::Client,
    /// For answers that may be slow to start for good reasons: a view whose index is being
    /// built, a change feed waiting for a change (`KZ_GROUPS_VIEW_TIMEOUT_MS` between reads).
    patient: reqwest::Client,
    base: Url,
    user: Option<(String, Option<String>)>,
    /// Every call's whole answer must arrive within this; a view's rows, read as they are
    /// consumed, must keep arriving (no read waits longer).
    timeout: Duration,
    /// Writes answered `202 Accepted` (fewer copies than the write quorum), shared by clones.
    accepted: Arc<AtomicU64>,
    /// The documents of those writes, told to whoever listens (the conflict resolver): a copy
    /// that refused such a write may hold a sibling revision. Bounded; a listener that falls
    /// behind misses some, which the change feeds still report.
    accepted_docs: tokio::sync::broadcast::Sender<(DbName, DocId)>,
    /// How many copies each database keeps (`cluster.n` of its info), read once: a read of
    /// every leaf asks them all.
    copies: Arc<std::sync::Mutex<lru::LruCache<String, u32>>>,
}

/// Documents of 202 writes held for a listener that has not read them yet.
const ACCEPTED_BACKLOG: usize = 1024;
/// Databases whose number of copies is remembered.
const COPIES_KNOWN: usize = 10_000;

#[derive(Deserialize)]
struct WriteResponse {
    rev: String,
}

impl CouchClient {
    /// `url` carries the credentials (`http://user:pass@host:5984`); they are sent as Basic auth
    /// and never logged. An `https://` URL is checked against the system's roots and `ca`.
    pub fn new(
        url: &str,
        timeout: Duration,
        view_timeout: Duration,
        ca: Option<&CouchCa>,
    ) -> Result<Self, String> {
        let mut base = Url::parse(url).map_err(|e| format!("COUCHDB_URL is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err("COUCHDB_URL must be an http or https URL".into());
        }
        let user = (!base.username().is_empty()).then(|| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(base.username()), base.password().map(decode))
        });
        let _ = base.set_username("");
        let _ = base.set_password(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let tls = tls::client_config(ca)?;
        let client = |read_timeout: Duration| {
            tls::client_builder(&tls)
                .connect_timeout(timeout)
                .read_timeout(read_timeout)
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        };
        Ok(Self {
            http: client(timeout)?,
            patient: client(view_timeout.max(timeout))?,
            base,
            user,
            timeout,
            accepted: Arc::new(AtomicU64::new(0)),
            accepted_docs: tokio::sync::broadcast::channel(ACCEPTED_BACKLOG).0,
            copies: Arc::new(std::sync::Mutex::new(lru::LruCache::new(
                COPIES_KNOWN.try_into().expect("non-zero"),
            ))),
        })
    }

    /// The base URL without credentials, for logs.
    pub fn display_url(&self) -> &str {
        self.base.as_str()
    }

    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let path: Vec<String> = segments
            .iter()
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        // Joined by hand: Url::join and path_segments_mut would re-interpret `%2F` and dots.
        let mut url = self.base.clone();
        url.set_path(&format!("{}{}", self.base.path(), path.join("/")));
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// A call whose whole answer is read at once, within the timeout.
    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.streamed(method, url).timeout(self.timeout)
    }

    /// A call whose answer is read as it is consumed (the read timeout still applies).
    fn streamed(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.authorised(self.http.request(method, url))
    }

    /// A call that may wait long for its answer (views, change feeds).
    fn patient(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.authorised(self.patient.request(method, url))
    }

    fn authorised(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.user {
            Some((user, pass)) => builder.basic_auth(user, pass.as_deref()),
            None => builder,
        }
    }

    async fn send(&self, builder: reqwest::RequestBuilder) -> StoreResult<reqwest::Response> {
        let response = builder.send().await.map_err(transport_error)?;
        let status = response.status();
        if status.is_success() {
            // A cluster stored the write on fewer copies than its quorum: Kazoo takes it as a
            // success, and so does every caller; it is counted for operators.
            if status == StatusCode::ACCEPTED {
                self.accepted.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(response);
        }
        match status {
            StatusCode::NOT_FOUND => Err(StoreError::NotFound),
            StatusCode::CONFLICT => Err(StoreError::Conflict),
            _ => {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                let (error, reason) = (field("error"), field("reason"));
                // Overloaded or restarting nodes are "unreachable" for the caller (503).
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    return Err(StoreError::Unreachable(format!("{error}: {reason}")));
                }
                Err(StoreError::Other {
                    status: status.as_u16(),
                    error,
                    reason,
                })
            }
        }
    }

    async fn json(&self, builder: reqwest::RequestBuilder) -> StoreResult<Value> {
        self.send(builder)
            .await?
            .json()
            .await
            .map_err(transport_error)
    }

    /// `_bulk_docs` of documents of any serialisable shape (`ids`: theirs), serialised
    /// straight into the request's body: a batch is never copied into a tree first.
    pub async fn bulk_write<T: serde::Serialize + Sync>(
        &self,
        db: &DbName,
        docs: &[T],
        ids: &[&str],
    ) -> StoreResult<Vec<BulkResult>> {
        #[derive(serde::Serialize)]
        struct Body<'a, T> {
            docs: &'a [T],
        }
        let url = self.url(&[db.as_str(), "_bulk_docs"], &[]);
        let request = self.request(Method::POST, url).json(&Body { docs });
        let answer = self.write(request, db, ids).await?;
        let Value::Array(rows) = answer else {
            return Err(bad_answer("a _bulk_docs answer is no array"));
        };
        if rows.len() != docs.len() {
            return Err(bad_answer(
                "a _bulk_docs answer with a row count unlike the request's",
            ));
        }
        Ok(rows.into_iter().map(bulk_row).collect())
    }

    /// A write of the documents `ids` of `db`: its answer as JSON; a 202 (fewer copies than the
    /// quorum) is told to the listeners of [`DocStore::accepted_docs`].
    async fn write(
        &self,
        builder: reqwest::RequestBuilder,
        db: &DbName,
        ids: &[&str],
    ) -> StoreResult<Value> {
        let response = self.send(builder).await?;
        if response.status() == StatusCode::ACCEPTED && self.accepted_docs.receiver_count() > 0 {
            for id in ids.iter().filter_map(|id| DocId::parse(id)) {
                let _ = self.accepted_docs.send((db.clone(), id));
            }
        }
        response.json().await.map_err(transport_error)
    }

    /// How many copies CouchDB keeps of `db` (1 where its info does not say, as
    /// pouchdb-server's does not).
    async fn copies(&self, db: &DbName) -> StoreResult<u32> {
        let known = self
            .copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(db.as_str())
            .copied();
        if let Some(n) = known {
            return Ok(n);
        }
        let info = self
            .json(self.request(Method::GET, self.url(&[db.as_str()], &[])))
            .await?;
        let n = info
            .pointer("/cluster/n")
            .and_then(Value::as_u64)
            .map_or(1, |n| n.clamp(1, 64) as u32);
        self.copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(db.as_str().to_owned(), n);
        Ok(n)
    }

    /// A document by its full id, or `None` on a 404.
    async fn get_raw(
        &self,
        db: &DbName,
        id: &str,
        query: &[(&str, String)],
    ) -> StoreResult<Option<Value>> {
        let url = self.doc_url(db, id, query);
        match self.json(self.request(Method::GET, url)).await {
            Ok(doc) => Ok(Some(doc)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `doc` (which carries `_rev` when it updates) and returns the new revision.
    async fn put_raw(&self, db: &DbName, id: &str, doc: &Value) -> StoreResult<String> {
        let url = self.doc_url(db, id, &[]);
        // `_conflicts` is what a read said, not something to store.
        let request = match doc.get("_conflicts") {
            Some(_) => {
                let mut doc = doc.clone();
                if let Some(fields) = doc.as_object_mut() {
                    fields.remove("_conflicts");
                }
                self.request(Method::PUT, url).json(&doc)
            }
            None => self.request(Method::PUT, url).json(doc),
        };
        parse_rev(self.write(request, db, &[id]).await?)
    }

    /// Deletes revision `rev` of a document by its full id; returns the tombstone's revision.
    async fn delete_raw(&self, db: &DbName, id: &str, rev: &str) -> StoreResult<String> {
        let url = self.doc_url(db, id, &[("rev", rev.to_owned())]);
        let body = self
            .write(self.request(Method::DELETE, url), db, &[id])
            .await?;
        parse_rev(body)
    }

    /// Deletes a database and all it holds.
    pub async fn delete_db(&self, db: &DbName) -> StoreResult<()> {
        let url = self.url(&[db.as_str()], &[]);
        self.send(self.request(Method::DELETE, url))
            .await
            .map(|_| ())
    }

    /// A document's URL.
    fn doc_url(&self, db: &DbName, id: &str, query: &[(&str, String)]) -> Url {
        // `_design/x` keeps its slash as a path separator, as CouchDB documents it.
        match id.strip_prefix("_design/") {
            Some(name) => self.url(&[db.as_str(), "_design", name], query),
            None => self.url(&[db.as_str(), id], query),
        }
    }
}

#[async_trait]
impl DocStore for CouchClient {
    fn describe(&self) -> String {
        format!("CouchDB at {}", self.display_url())
    }

    /// GET / : the server answers (pouchdb-server has no `/_up`).
    async fn ping(&self) -> StoreResult<()> {
        self.json(self.request(Method::GET, self.base.clone()))
            .await
            .map(|_| ())
    }

    async fn all_dbs(&self) -> StoreResult<Vec<String>> {
        let body = self
            .json(self.request(Method::GET, self.url(&["_all_dbs"], &[])))
            .await?;
        let names: Vec<String> = serde_json::from_value(body).map_err(|e| StoreError::Other {
            status: 200,
            error: "bad_answer".into(),
            reason: format!("unexpected _all_dbs answer: {e}"),
        })?;
        Ok(names.into_iter().map(with_slashes).collect())
    }

    /// A document, or `None` when CouchDB says 404 (missing doc or missing database, which
    /// Kazoo treats alike).
    /// With `conflicts=true`: CouchDB reads the revision tree anyway, so a conflict shows at no
    /// cost.
    async fn get_doc(&self, db: &DbName, id: &DocId) -> StoreResult<Option<Value>> {
        let query = [("conflicts", "true".to_owned())];
        self.get_raw(db, id.as_str(), &query).await
    }

    /// `POST /{db}/_all_docs?include_docs=true` with the ids as `keys`: a row per key, in
    /// their order, whose `doc` is null for a deleted document and which carries `error`
    /// instead for one that never existed. A missing database is missing documents, as for
    /// `get_doc`.
    async fn get_docs(&self, db: &DbName, ids: &[DocId]) -> StoreResult<Vec<Option<Value>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let url = self.url(
            &[db.as_str(), "_all_docs"],
            &[("include_docs", "true".to_owned())],
        );
        let keys: Vec<&str> = ids.iter().map(DocId::as_str).collect();
        let request = self
            .request(Method::POST, url)
            .json(&serde_json::json!({ "keys": keys }));
        let mut answer = match self.json(request).await {
            Ok(answer) => answer,
            Err(StoreError::NotFound) => return Ok(vec![None; ids.len()]),
            Err(e) => return Err(e),
        };
        // The documents are moved out of the answer, never copied: they may be large.
        let rows = answer
            .get_mut("rows")
            .and_then(Value::as_array_mut)
            .map(std::mem::take)
            .ok_or_else(|| bad_answer("an _all_docs answer without rows"))?;
        let mut found: std::collections::HashMap<String, Value> = rows
            .into_iter()
            .filter_map(|mut row| {
                let key = row.get("key").and_then(Value::as_str)?.to_owned();
                let doc = row
                    .get_mut("doc")
                    .map(Value::take)
                    .filter(Value::is_object)?;
                Some((key, doc))
            })
            .collect();
        Ok(ids.iter().map(|id| found.remove(id.as_str())).collect())
    }

    async fn get_rev(&self, db: &DbName, id: &DocId, rev: &str) -> StoreResult<Option<Value>> {
        self.get_raw(db, id.as_str(), &[("rev", rev.to_owned())])
            .await
    }

    /// `open_revs=all` answers multipart unless JSON is asked for. Every copy is asked (`r`
    /// = their number): on a cluster, a leaf a write left on one copy alone (answered 202)
    /// is then seen at once, not after internal replication carried it to a quorum.
    async fn leaves(&self, db: &DbName, id: &DocId) -> StoreResult<Vec<Leaf>> {
        let copies = match self.copies(db).await {
            Ok(n) => n,
            Err(StoreError::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let url = self.doc_url(
            db,
            id.as_str(),
            &[
                ("open_revs", "all".to_owned()),
                ("revs", "true".to_owned()),
                ("r", copies.to_string()),
            ],
        );
        let request = self
            .request(Method::GET, url)
            .header(reqwest::header::ACCEPT, "application/json");
        let body = match self.json(request).await {
            Ok(body) => body,
            Err(StoreError::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let Value::Array(answers) = body else {
            return Err(bad_answer("an open_revs answer is no array"));
        };
        answers
            .into_iter()
            // `{"missing": rev}`: a leaf this copy does not have (yet).
            .filter_map(|answer| answer.get("ok").cloned())
            .map(parse_leaf)
            .collect()
    }

    async fn bulk_docs(&self, db: &DbName, docs: &[Value]) -> StoreResult<Vec<BulkResult>> {
        let ids: Vec<&str> = docs
            .iter()
            .filter_map(|doc| doc.get("_id").and_then(Value::as_str))
            .collect();
        self.bulk_write(db, docs, &ids).await
    }

    /// A design document by its full id (`_design/groups`).
    async fn get_design(&self, db: &DbName, name: &str) -> StoreResult<Option<Value>> {
        self.get_raw(db, &format!("_design/{name}"), &[]).await
    }

    async fn put_doc(&self, db: &DbName, id: &DocId, doc: &Value) -> StoreResult<String> {
        self.put_raw(db, id.as_str(), doc).await
    }

    async fn put_design(&self, db: &DbName, name: &str, doc: &Value) -> StoreResult<String> {
        self.put_raw(db, &format!("_design/{name}"), doc).await
    }

    /// A query of no rows: CouchDB answers once the index is up to date.
    async fn build_index(&self, db: &DbName, design: &str, view: &str) -> StoreResult<()> {
        let url = self.url(
            &[db.as_str(), "_design", design, "_view", view],
            &[("limit", "0".into())],
        );
        self.json(self.patient(Method::GET, url)).await.map(|_| ())
    }

    async fn delete_doc(&self, db: &DbName, id: &DocId, rev: &str) -> StoreResult<String> {
        self.delete_raw(db, id.as_str(), rev).await
    }

    async fn delete_design(&self, db: &DbName, name: &str, rev: &str) -> StoreResult<String> {
        self.delete_raw(db, &format!("_design/{name}"), rev).await
    }

    /// An attachment's bytes, or `None` if the doc or attachment is missing.
    async fn get_attachment(
        &self,
        db: &DbName,
        id: &DocId,
        name: &str,
    ) -> StoreResult<Option<bytes::Bytes>> {
        let url = self.url(&[db.as_str(), id.as_str(), name], &[]);
        match self.send(self.request(Method::GET, url)).await {
            Ok(resp) => resp.bytes().await.map(Some).map_err(transport_error),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds an attachment to revision `rev` of a doc; returns the new revision.
    async fn put_attachment(
        &self,
        db: &DbName,
        id: &DocId,
        name: &str,
        rev: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> StoreResult<String> {
        let url = self.url(
            &[db.as_str(), id.as_str(), name],
            &[("rev", rev.to_owned())],
        );
        let request = self
            .request(Method::PUT, url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        parse_rev(self.write(request, db, &[id.as_str()]).await?)
    }

    async fn create_db(&self, db: &DbName) -> StoreResult<()> {
        let url = self.url(&[db.as_str()], &[]);
        match self.send(self.request(Method::PUT, url)).await {
            Ok(_) => Ok(()),
            // 412: the database already exists.
            Err(StoreError::Other { status: 412, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn feed_end(&self, feed: Feed<'_>) -> StoreResult<Option<Value>> {
        let since_now = [("since", "now".to_owned())];
        let url = match feed {
            Feed::Db(db) => self.url(&[db.as_str(), "_changes"], &since_now),
            Feed::Server => self.url(&["_db_updates"], &since_now),
        };
        match self.json(self.request(Method::GET, url)).await {
            Ok(body) => Ok(body.get("last_seq").cloned()),
            // No `_global_changes` (or a server without `_db_updates`): no server feed.
            Err(StoreError::NotFound | StoreError::Other { .. }) if feed == Feed::Server => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn feed_next(
        &self,
        feed: Feed<'_>,
        since: &Value,
        wait: Duration,
    ) -> StoreResult<Changes> {
        let since = match since {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut params = vec![
            ("since", since),
            // A batch at a time: a long backlog is read in several calls.
            ("limit", "1000".to_owned()),
        ];
        if wait.is_zero() {
            params.push(("feed", "normal".to_owned()));
        } else {
            params.push(("feed", "longpoll".to_owned()));
            params.push(("timeout", wait.as_millis().to_string()));
        }
        let url = match feed {
            Feed::Db(db) => {
                // Every leaf of each changed document, so a conflict shows in the feed.
                params.push(("style", "all_docs".to_owned()));
                self.url(&[db.as_str(), "_changes"], &params)
            }
            Feed::Server => self.url(&["_db_updates"], &params),
        };
        let body = self
            .send(self.patient(Method::GET, url))
            .await?
            .json::<Value>()
            .await
            .map_err(transport_error)?;
        let last_seq = body.get("last_seq").cloned().unwrap_or(Value::Null);
        let results = body.get("results").and_then(Value::as_array);
        let branched = results
            .into_iter()
            .flatten()
            .filter(|change| {
                change
                    .get("changes")
                    .and_then(Value::as_array)
                    .is_some_and(|leaves| leaves.len() > 1)
            })
            .filter_map(|change| change.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        let changed = results
            .into_iter()
            .flatten()
            .filter_map(|change| match feed {
                Feed::Db(db) => change
                    .get("id")
                    .and_then(Value::as_str)
                    .map(|id| Changed::Doc {
                        db: db.as_str().to_owned(),
                        id: id.to_owned(),
                    }),
                Feed::Server => change
                    .get("db_name")
                    .and_then(Value::as_str)
                    .map(|db| Changed::Db(db.to_owned())),
            })
            .collect();
        // With `style=all_docs` the winning revision comes first.
        let revs = results
            .into_iter()
            .flatten()
            .filter_map(|change| {
                let id = change.get("id")?.as_str()?;
                let rev = change.pointer("/changes/0/rev")?.as_str()?;
                Some((id.to_owned(), rev.to_owned()))
            })
            .collect();
        Ok(Changes {
            last_seq,
            changed,
            branched,
            revs,
        })
    }

    fn accepted_docs(&self) -> Option<tokio::sync::broadcast::Receiver<(DbName, DocId)>> {
        Some(self.accepted_docs.subscribe())
    }

    fn accepted_writes(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    async fn all_docs(&self, db: &DbName) -> StoreResult<RowStream> {
        let url = self.url(
            &[db.as_str(), "_all_docs"],
            &[("include_docs", "true".to_owned())],
        );
        self.rows(url).await
    }

    async fn view_rows(
        &self,
        db: &DbName,
        view: View,
        query: &ViewQuery,
    ) -> StoreResult<RowStream> {
        let (client, db) = (self.clone(), db.clone());
        let fetch = move |query: ViewQuery| {
            let url = client.url(
                &[db.as_str(), "_design", view.design(), "_view", view.name()],
                &view_params(&query),
            );
            let client = client.clone();
            async move { client.rows(url).await }.boxed()
        };
        startkey_docid::rows(fetch, query).await
    }
}

/// A database name as CouchDB lists it. pouchdb-server lists `account/4b/31/…` (and a monthly
/// `account/4b/31/…-202411`) without its slashes; Kazoo never names a database `account`
/// followed by 32 hex digits, so that shape is a name that lost its slashes, whatever the server.
fn with_slashes(listed: String) -> String {
    let Some(rest) = listed.strip_prefix("account") else {
        return listed;
    };
    let Some((id, month)) = rest.split_at_checked(32) else {
        return listed;
    };
    let hex = id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let monthly = month.is_empty()
        || month
            .strip_prefix('-')
            .is_some_and(|m| m.len() == 6 && m.bytes().all(|b| b.is_ascii_digit()));
    if !hex || !monthly {
        return listed;
    }
    format!("account/{}/{}/{}{month}", &id[..2], &id[2..4], &id[4..])
}

impl CouchClient {
    /// The rows of a view-shaped answer (a view, `_all_docs`), read as they are consumed; a
    /// view being indexed may take long to answer, which is not an outage.
    async fn rows(&self, url: Url) -> StoreResult<RowStream> {
        let body = self
            .send(self.patient(Method::GET, url))
            .await?
            .bytes_stream();
        let rows = stream::try_unfold(
            (body, RowSplitter::default()),
            |(mut body, mut splitter)| async move {
                loop {
                    if let Some(row) = splitter.next_row().map_err(bad_view_answer)? {
                        let row: ViewRow = serde_json::from_slice(&row)
                            .map_err(|e| bad_view_answer(Malformed(leak_reason(e))))?;
                        return Ok(Some((row, (body, splitter))));
                    }
                    match body.next().await {
                        Some(chunk) => splitter.push(&chunk.map_err(transport_error)?),
                        None => {
                            splitter.finish().map_err(bad_view_answer)?;
                            return Ok(None);
                        }
                    }
                }
            },
        );
        Ok(Box::pin(rows))
    }
}

fn leak_reason(e: serde_json::Error) -> &'static str {
    log::warn!("CouchDB sent a view row that is not a row ({e}): the listing answers 500");
    "a view row is not a row"
}

fn bad_view_answer(e: Malformed) -> StoreError {
    StoreError::Other {
        status: 200,
        error: "bad_answer".into(),
        reason: format!("unexpected view answer: {}", e.0),
    }
}

fn view_params(query: &ViewQuery) -> Vec<(&'static str, String)> {
    let mut params = Vec::new();
    let json = |v: &Value| v.to_string();
    if let Some(key) = &query.key {
        params.push(("key", json(key)));
    }
    if let Some(key) = &query.startkey {
        params.push(("startkey", json(key)));
    }
    if let Some(key) = &query.endkey {
        params.push(("endkey", json(key)));
    }
    if let Some(id) = &query.startkey_docid {
        params.push(("startkey_docid", id.clone()));
    }
    if query.descending {
        params.push(("descending", "true".into()));
    }
    if let Some(limit) = query.limit {
        params.push(("limit", limit.to_string()));
    }
    if query.skip > 0 {
        params.push(("skip", query.skip.to_string()));
    }
    if query.include_docs {
        params.push(("include_docs", "true".into()));
    }
    params
}

pub(super) fn bad_answer(reason: &str) -> StoreError {
    StoreError::Other {
        status: 200,
        error: "bad_answer".into(),
        reason: reason.to_owned(),
    }
}

/// A leaf of an `open_revs` answer: its `_revisions` become its history.
fn parse_leaf(mut doc: Value) -> StoreResult<Leaf> {
    let fields = doc
        .as_object_mut()
        .ok_or_else(|| bad_answer("an open_revs leaf is no object"))?;
    let rev = fields
        .get("_rev")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_answer("an open_revs leaf without _rev"))?
        .to_owned();
    let deleted = fields.get("_deleted") == Some(&Value::Bool(true));
    let history = match fields.remove("_revisions") {
        Some(revisions) => {
            let start = revisions.get("start").and_then(Value::as_u64).unwrap_or(0);
            let ids = revisions.get("ids").and_then(Value::as_array);
            ids.into_iter()
                .flatten()
                .zip((1..=start).rev())
                .filter_map(|(id, generation)| id.as_str().map(|id| format!("{generation}-{id}")))
                .collect()
        }
        None => vec![rev.clone()],
    };
    Ok(Leaf {
        rev,
        deleted,
        history,
        doc,
    })
}

/// One row of a `_bulk_docs` answer.
fn bulk_row(row: Value) -> BulkResult {
    if let Some(rev) = row.get("rev").and_then(Value::as_str) {
        if row.get("error").is_none() {
            return Ok(rev.to_owned());
        }
    }
    let field = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    match field("error").as_str() {
        "conflict" => Err(StoreError::Conflict),
        "not_found" => Err(StoreError::NotFound),
        error => Err(StoreError::Other {
            status: match error {
                "forbidden" => 403,
                "unauthorized" => 401,
                _ => 400,
            },
            error: error.to_owned(),
            reason: field("reason"),
        }),
    }
}

fn parse_rev(body: Value) -> StoreResult<String> {
    serde_json::from_value::<WriteResponse>(body)
        .map(|w| w.rev)
        .map_err(|e| StoreError::Other {
            status: 200,
            error: "bad_answer".into(),
            reason: format!("write answer without rev: {e}"),
        })
}

/// A failed call: an answer that is not the JSON it should be is a bad answer; anything else
/// (refused, reset, timed out, TLS, or an answer cut short, which reqwest also reports as a
/// "decode" error, with the connection's error as its cause) is an unreachable store.
fn transport_error(e: reqwest::Error) -> StoreError {
    if e.is_decode() && caused_by_json(&e) {
        return StoreError::Other {
            status: e.status().map(|s| s.as_u16()).unwrap_or(200),
            error: "bad_answer".into(),
            reason: format!("undecodable answer: {e}"),
        };
    }
    if e.is_decode() {
        return StoreError::Unreachable(format!("answer cut short: {}", tls::explain(&e)));
    }
    StoreError::Unreachable(tls::explain(&e))
}

fn caused_by_json(e: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cause {
        if err.is::<serde_json::Error>() {
            return true;
        }
        cause = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> CouchClient {
        CouchClient::new(
            "http://admin:s%40cret@127.0.0.1:5984",
            Duration::from_secs(1),
            Duration::from_secs(1),
            None,
        )
        .unwrap()
    }

    /// A write a cluster stored on fewer copies than its quorum (202) is a success, counted.
    #[tokio::test]
    async fn a_202_accepted_write_succeeds_and_is_counted() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // The head and the small JSON body.
            while !String::from_utf8_lossy(&request).contains("\"name\"") {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"ok":true,"id":"g1","rev":"1-abc"}"#;
            let answer = format!(
                "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
        });
        let client = CouchClient::new(
            &format!("http://127.0.0.1:{port}"),
            Duration::from_secs(2),
            Duration::from_secs(2),
            None,
        )
        .unwrap();
        let db = DbName::system("system_config");
        let id = DocId::parse("g1").unwrap();
        assert_eq!(client.accepted_writes(), 0);
        let rev = client
            .put_doc(&db, &id, &serde_json::json!({"name": "x"}))
            .await
            .unwrap();
        assert_eq!(rev, "1-abc");
        assert_eq!(client.accepted_writes(), 1);
    }

    #[test]
    fn credentials_leave_the_url_and_become_basic_auth() {
        let c = client();
        assert_eq!(c.display_url(), "http://127.0.0.1:5984/");
        assert_eq!(
            c.user,
            Some(("admin".to_string(), Some("s@cret".to_string())))
        );
    }

    #[test]
    fn account_db_and_ids_are_single_encoded_segments() {
        let c = client();
        let db = crate::domain::ids::AccountId::parse("4b31dd1d32ce6d249897c06332375d65")
            .unwrap()
            .db();
        let id = DocId::parse("a b%2F..c").unwrap();
        assert_eq!(
            c.doc_url(&db, id.as_str(), &[]).as_str(),
            "http://127.0.0.1:5984/account%2F4b%2F31%2Fdd1d32ce6d249897c06332375d65/a%20b%252F..c"
        );
    }

    #[test]
    fn design_docs_keep_their_slash() {
        let c = client();
        let db = DbName::system("system_auth");
        assert_eq!(
            c.doc_url(&db, "_design/groups", &[]).as_str(),
            "http://127.0.0.1:5984/system_auth/_design/groups"
        );
    }

    #[test]
    fn listed_account_names_get_their_slashes_back() {
        let id = "4b31dd1d32ce6d249897c06332375d65";
        for (listed, name) in [
            (
                format!("account{id}"),
                format!("account/4b/31/{}", &id[4..]),
            ),
            (
                format!("account{id}-202411"),
                format!("account/4b/31/{}-202411", &id[4..]),
            ),
            (
                format!("account/4b/31/{}", &id[4..]),
                format!("account/4b/31/{}", &id[4..]),
            ),
        ] {
            assert_eq!(with_slashes(listed), name);
        }
        for other in [
            "accounts".to_string(),
            "system_auth".to_string(),
            format!("account{}", id.to_uppercase()),
            format!("account{id}0"),
            format!("account{id}-2024"),
            format!("account{}", &id[1..]),
            "accounté".to_string(),
        ] {
            assert_eq!(with_slashes(other.clone()), other);
        }
    }

    #[test]
    fn view_query_parameters_are_json() {
        let q = ViewQuery {
            startkey: Some(Value::from("u1")),
            endkey: Some(Value::from("u1")),
            startkey_docid: Some("g2".into()),
            descending: true,
            limit: Some(51),
            include_docs: true,
            ..Default::default()
        };
        assert_eq!(
            view_params(&q),
            vec![
                ("startkey", "\"u1\"".to_string()),
                ("endkey", "\"u1\"".to_string()),
                ("startkey_docid", "g2".to_string()),
                ("descending", "true".to_string()),
                ("limit", "51".to_string()),
                ("include_docs", "true".to_string()),
            ]
        );
    }
}
