//! The store port, metered: every call of [`DocStore`] is counted and timed, and its errors
//! counted by kind, then passed to the store it wraps unchanged. Installed by `startup` around
//! the store the server uses; the CLI's stores are not metered.
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

use crate::domain::ids::{DbName, DocId};
use crate::metrics::Metrics;
use crate::store::{
    BulkResult, Changes, DocStore, Feed, Leaf, RowStream, Store, StoreResult, View, ViewQuery,
    ViewRow,
};

pub struct MeteredStore {
    inner: Store,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn wrap(inner: Store, metrics: Arc<Metrics>) -> Store {
        Arc::new(Self { inner, metrics })
    }

    /// Runs one call of the wrapped store, recording it as `operation`.
    async fn call<T>(
        &self,
        operation: &str,
        call: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let start = Instant::now();
        let result = call.await;
        self.metrics
            .observe_store(operation, result.as_ref().err(), start.elapsed());
        result
    }
}

#[async_trait]
impl DocStore for MeteredStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn ping(&self) -> StoreResult<()> {
        self.call("ping", self.inner.ping()).await
    }

    async fn all_dbs(&self) -> StoreResult<Vec<String>> {
        self.call("all_dbs", self.inner.all_dbs()).await
    }

    async fn create_db(&self, db: &DbName) -> StoreResult<()> {
        self.call("create_db", self.inner.create_db(db)).await
    }

    async fn get_doc(&self, db: &DbName, id: &DocId) -> StoreResult<Option<Value>> {
        self.call("get_doc", self.inner.get_doc(db, id)).await
    }

    async fn get_docs(&self, db: &DbName, ids: &[DocId]) -> StoreResult<Vec<Option<Value>>> {
        self.call("get_docs", self.inner.get_docs(db, ids)).await
    }

    async fn put_doc(&self, db: &DbName, id: &DocId, doc: &Value) -> StoreResult<String> {
        self.call("put_doc", self.inner.put_doc(db, id, doc)).await
    }

    async fn delete_doc(&self, db: &DbName, id: &DocId, rev: &str) -> StoreResult<String> {
        self.call("delete_doc", self.inner.delete_doc(db, id, rev))
            .await
    }

    async fn get_rev(&self, db: &DbName, id: &DocId, rev: &str) -> StoreResult<Option<Value>> {
        self.call("get_rev", self.inner.get_rev(db, id, rev)).await
    }

    async fn leaves(&self, db: &DbName, id: &DocId) -> StoreResult<Vec<Leaf>> {
        self.call("leaves", self.inner.leaves(db, id)).await
    }

    async fn bulk_docs(&self, db: &DbName, docs: &[Value]) -> StoreResult<Vec<BulkResult>> {
        self.call("bulk_docs", self.inner.bulk_docs(db, docs)).await
    }

    fn accepted_writes(&self) -> u64 {
        self.inner.accepted_writes()
    }

    fn accepted_docs(&self) -> Option<tokio::sync::broadcast::Receiver<(DbName, DocId)>> {
        self.inner.accepted_docs()
    }

    async fn get_attachment(
        &self,
        db: &DbName,
        id: &DocId,
        name: &str,
    ) -> StoreResult<Option<Bytes>> {
        self.call("get_attachment", self.inner.get_attachment(db, id, name))
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
        let call = self
            .inner
            .put_attachment(db, id, name, rev, content_type, body);
        self.call("put_attachment", call).await
    }

    async fn get_design(&self, db: &DbName, name: &str) -> StoreResult<Option<Value>> {
        self.call("get_design", self.inner.get_design(db, name))
            .await
    }

    async fn put_design(&self, db: &DbName, name: &str, doc: &Value) -> StoreResult<String> {
        self.call("put_design", self.inner.put_design(db, name, doc))
            .await
    }

    async fn build_index(&self, db: &DbName, design: &str, view: &str) -> StoreResult<()> {
        self.call("build_index", self.inner.build_index(db, design, view))
            .await
    }

    async fn delete_design(&self, db: &DbName, name: &str, rev: &str) -> StoreResult<String> {
        self.call("delete_design", self.inner.delete_design(db, name, rev))
            .await
    }

    async fn view_rows(
        &self,
        db: &DbName,
        view: View,
        query: &ViewQuery,
    ) -> StoreResult<RowStream> {
        self.call("view_rows", self.inner.view_rows(db, view, query))
            .await
    }

    async fn all_docs(&self, db: &DbName) -> StoreResult<RowStream> {
        self.call("all_docs", self.inner.all_docs(db)).await
    }

    async fn query_view(
        &self,
        db: &DbName,
        view: View,
        query: &ViewQuery,
    ) -> StoreResult<Vec<ViewRow>> {
        self.call("query_view", self.inner.query_view(db, view, query))
            .await
    }

    async fn feed_end(&self, feed: Feed<'_>) -> StoreResult<Option<Value>> {
        self.call("feed_end", self.inner.feed_end(feed)).await
    }

    async fn feed_next(
        &self,
        feed: Feed<'_>,
        since: &Value,
        wait: Duration,
    ) -> StoreResult<Changes> {
        self.call("feed_next", self.inner.feed_next(feed, since, wait))
            .await
    }
}
