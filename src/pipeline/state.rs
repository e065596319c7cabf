//! Everything a request needs, built once at start and shared by every worker.
use std::sync::Arc;

use base64::Engine;
use md5::{Digest, Md5};

use super::limiter::RateLimiter;
use super::memory::MemoryBudget;
use crate::auth::issuer::Issuer;
use crate::auth::Authenticator;
use crate::cache::CacheStats;
use crate::config::Config;
use crate::domain::line::CrossbarLine;
use crate::error::ApiError;
use crate::history::Recorder;
use crate::history_feed::HistoryFeed;
use crate::metrics::Metrics;
use crate::notices::ChangeNotifier;
use crate::recent_writes::RecentWrites;
use crate::resolver::Resolver;
use crate::store::cached::CachedStore;
use crate::store::views::ViewInstaller;
use crate::store::Store;
use crate::validation::Schemas;

pub struct AppState {
    /// The store, read through `caches`.
    pub store: Store,
    caches: Arc<CachedStore>,
    pub views: ViewInstaller,
    pub schemas: Schemas,
    pub auth: Authenticator,
    pub issuer: Issuer,
    pub limiter: RateLimiter,
    pub notifier: Arc<dyn ChangeNotifier>,
    pub page_size: usize,
    /// `KZ_GROUPS_CROSSBAR`: the Crossbar line every request is answered as.
    pub crossbar: CrossbarLine,
    pub max_upload_bytes: usize,
    /// `KZ_GROUPS_BODY_TIMEOUT_MS`.
    pub body_timeout: std::time::Duration,
    /// What request bodies and their parsed JSON may hold at once.
    pub memory: MemoryBudget,
    /// Large bodies measured or built at once, off the workers: one per core.
    parse_slots: tokio::sync::Semaphore,
    /// base64url(md5(node name)), the envelope's `node`.
    pub node: String,
    pub version: String,
    /// The Prometheus metrics of `/metrics`; other parts of the service count into its hooks.
    pub metrics: Arc<Metrics>,
    /// Which store serves, as `/readyz` names it: `couchdb` or `embedded`.
    pub store_kind: &'static str,
    /// Resolves conflicted group documents (its feed worker is started by `startup`).
    pub resolver: Arc<Resolver>,
    /// The group writes acknowledged in the last seconds, which listings must show.
    pub recent: RecentWrites,
    /// Records every group change in the group's history (its worker is started by `startup`).
    pub history: Arc<Recorder>,
    /// Records the group changes that have no entry, from the change feeds (started by
    /// `startup`).
    pub history_feed: Arc<HistoryFeed>,
}

impl AppState {
    pub fn node_id(node_name: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Md5::digest(node_name.as_bytes()))
    }

    /// `store` is read through the caches; `direct` is the store itself, for what a login must
    /// never see stale (signing material `kz-groups init` may have just created).
    pub fn from_parts(
        config: &Config,
        caches: Arc<CachedStore>,
        direct: Store,
        views: ViewInstaller,
        schemas: Schemas,
        notifier: Arc<dyn ChangeNotifier>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let store: Store = caches.clone();
        let history = Arc::new(Recorder::new(
            crate::history::open_store(config)?,
            metrics.clone(),
            config.history,
        ));
        let resolver = Arc::new(
            Resolver::new(store.clone(), notifier.clone(), metrics.clone())
                .recording(history.clone()),
        );
        Ok(Self {
            resolver,
            recent: RecentWrites::new(),
            history_feed: Arc::new(HistoryFeed::new(direct.clone(), history.clone())),
            history,
            auth: Authenticator::new(store.clone(), config.key_cache, config.token_cache_entries),
            issuer: Issuer::new(direct, store.clone(), config.key_cache),
            store,
            caches,
            views,
            schemas,
            limiter: RateLimiter::new(config.clock.clone()),
            notifier,
            page_size: config.page_size,
            crossbar: config.crossbar,
            max_upload_bytes: config.max_upload_bytes,
            body_timeout: config.body_timeout,
            memory: MemoryBudget::new(config.request_memory_bytes),
            parse_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
            node: Self::node_id(&config.node_name),
            version: config.version.clone(),
            metrics,
            store_kind: match config.backend {
                crate::config::Backend::CouchDb { .. } => "couchdb",
                crate::config::Backend::Embedded { .. } => "embedded",
            },
        })
    }

    /// Every in-process cache by the name `/metrics` gives it.
    pub fn cache_stats(&self) -> [(&'static str, CacheStats); 4] {
        [
            ("group", self.caches.doc_stats()),
            ("auth", self.caches.auth_stats()),
            ("listing", self.caches.listing_stats()),
            ("token", self.auth.token_stats()),
        ]
    }

    /// Runs CPU-heavy work on the blocking pool, at most one job per core at a time.
    pub async fn off_workers<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let _slot = self.parse_slots.acquire().await;
        tokio::task::spawn_blocking(job).await.map_err(|e| {
            log::error!("parsing a request body stopped ({e}): answered 500");
            ApiError::Bare(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_is_22_chars_of_base64url() {
        let node = AppState::node_id("kz-groups@host");
        assert_eq!(node.len(), 22);
        assert!(node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
