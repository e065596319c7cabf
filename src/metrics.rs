//! The service's Prometheus metrics (`GET /metrics`), one registry per application: HTTP
//! requests by route name (the route table's, never a raw path), method and status; store calls
//! (counted by `MeteredStore` of `store_metrics`); the AMQP bus, read when scraped; and the
//! counters other parts of the service increment through [`Metrics`] in `AppState`. Every label
//! takes values from a fixed set, so the number of series is bounded.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::http::Method;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::cache::CacheStats;
use crate::notices::BusStatus;
use crate::store::StoreError;

/// Latency buckets, in seconds: from a cached read to a slow CouchDB view.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct Metrics {
    registry: Registry,
    http: Http,
    store: StoreCalls,
    caches: Caches,
    bus: Bus,
    /// Hook: a CouchDB document conflict resolved by kz-groups.
    pub conflicts_resolved: IntCounter,
    /// A write CouchDB answered `202 Accepted` (stored, quorum not yet reached): the store
    /// counts them (`DocStore::accepted_writes`), followed here when scraped ([`Self::accepted`]).
    pub couchdb_accepted: IntCounter,
    /// The store's count as last scraped, so the counter follows it.
    couchdb_accepted_seen: Mutex<u64>,
    /// Hook: group history entries written (issue 18), by whichever path.
    pub history_written: IntCounter,
    /// Hook: changes acknowledged whose history entry is queued, not yet written.
    pub history_waiting: IntGauge,
    /// Hook: the memory the queued changes' documents take (`history::QUEUE_BYTES` at most).
    pub history_queue_bytes: IntGauge,
    /// Hook: entries recovered from the change feeds (a change with no entry yet).
    pub history_recovered: IntCounter,
    /// Hook: passes of the history's change-feed follower, by `result` (`ok`: every changed
    /// database read up to its end; `failed`: one could not be read, retried next pass).
    pub history_feed_passes: IntCounterVec,
    /// Hook: a listing read again because its rows did not yet show a write this instance
    /// acknowledged (a cluster's view copy lagging; never on a single node).
    pub listing_rereads: IntCounter,
}

/// Registers `metric` and hands it back (names are fixed, so registering cannot fail).
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("a metric registered once");
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("a metric"),
    )
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
    register(registry, HistogramVec::new(opts, labels).expect("a metric"))
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("a metric"))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), &["cache"]).expect("a metric"),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("a metric"))
}

/// Moves `counter` on to `total`, a count kept elsewhere and read now; `seen` is what it was
/// last time.
fn follow(counter: &IntCounter, seen: &Mutex<u64>, total: u64) {
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    if total > *seen {
        counter.inc_by(total - *seen);
        *seen = total;
    }
}

/// A method as a label: the standard ones by name, anything else `OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// A store error as a label.
fn error_kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::Unreachable(_) => "unreachable",
        StoreError::NotFound => "not_found",
        StoreError::Conflict => "conflict",
        StoreError::Other { .. } => "other",
    }
}

/// HTTP requests answered.
struct Http {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl Http {
    fn new(r: &Registry) -> Self {
        Self {
            requests: counter_vec(
                r,
                "kz_groups_http_requests_total",
                "HTTP requests answered, by route name, method and status.",
                &["route", "method", "status"],
            ),
            duration: histogram_vec(
                r,
                "kz_groups_http_request_duration_seconds",
                "Time from a request's arrival to its answer's headers, by route name and method.",
                &["route", "method"],
            ),
        }
    }
}

/// Calls to the store.
struct StoreCalls {
    calls: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
}

impl StoreCalls {
    fn new(r: &Registry) -> Self {
        Self {
            calls: counter_vec(
                r,
                "kz_groups_store_requests_total",
                "Calls to the document store (CouchDB or embedded), by operation.",
                &["operation"],
            ),
            errors: counter_vec(
                r,
                "kz_groups_store_errors_total",
                "Store calls that failed, by operation and kind (unreachable, not_found, conflict, other).",
                &["operation", "kind"],
            ),
            duration: histogram_vec(
                r,
                "kz_groups_store_request_duration_seconds",
                "Duration of store calls (for row streams: until the first rows arrive), by operation.",
                &["operation"],
            ),
        }
    }
}

/// Reads a cache answered, and those it passed to the store, as the caches count them
/// (followed at each scrape), with what each holds.
struct Caches {
    hits: IntCounterVec,
    misses: IntCounterVec,
    entries: IntGaugeVec,
    bytes: IntGaugeVec,
    /// Hits and misses of each cache as last scraped, so the counters follow them.
    seen: Mutex<HashMap<&'static str, (u64, u64)>>,
}

impl Caches {
    fn new(r: &Registry) -> Self {
        Self {
            hits: counter_vec(
                r,
                "kz_groups_cache_hits_total",
                "Reads answered from an in-memory cache, by cache.",
                &["cache"],
            ),
            misses: counter_vec(
                r,
                "kz_groups_cache_misses_total",
                "Reads a cache could not answer and passed to the store, by cache.",
                &["cache"],
            ),
            entries: gauge_vec(
                r,
                "kz_groups_cache_entries",
                "Entries a cache holds now, by cache.",
            ),
            bytes: gauge_vec(
                r,
                "kz_groups_cache_bytes",
                "The weight of what a cache holds now (its estimate of memory), by cache.",
            ),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Each cache's figures as read now.
    fn follow(&self, caches: &[(&'static str, CacheStats)]) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (name, stats) in caches {
            let (hits, misses) = seen.entry(name).or_default();
            let labels = [*name];
            self.hits
                .with_label_values(&labels)
                .inc_by(stats.hits.saturating_sub(*hits));
            self.misses
                .with_label_values(&labels)
                .inc_by(stats.misses.saturating_sub(*misses));
            (*hits, *misses) = (stats.hits, stats.misses);
            self.entries
                .with_label_values(&labels)
                .set(stats.entries as i64);
            self.bytes
                .with_label_values(&labels)
                .set(stats.bytes as i64);
        }
    }
}

/// The AMQP bus, read when scraped.
struct Bus {
    enabled: IntGauge,
    connected: IntGauge,
    queue_depth: IntGauge,
    queue_capacity: IntGauge,
    dropped: IntCounter,
    /// The bus's `dropped` as last scraped, so the counter follows it.
    dropped_seen: Mutex<u64>,
}

impl Bus {
    fn new(r: &Registry) -> Self {
        Self {
            enabled: gauge(
                r,
                "kz_groups_amqp_enabled",
                "1 when KZ_GROUPS_AMQP_URL is set, else 0.",
            ),
            connected: gauge(
                r,
                "kz_groups_amqp_connected",
                "1 while the AMQP connection is up, else 0.",
            ),
            queue_depth: gauge(
                r,
                "kz_groups_amqp_queue_depth",
                "Change notices waiting for the broker's confirm.",
            ),
            queue_capacity: gauge(
                r,
                "kz_groups_amqp_queue_capacity",
                "Notices the queue holds at most (KZ_GROUPS_AMQP_QUEUE).",
            ),
            dropped: counter(
                r,
                "kz_groups_amqp_dropped_total",
                "Change notices dropped because the queue was full.",
            ),
            dropped_seen: Mutex::new(0),
        }
    }

    fn follow(&self, bus: Option<BusStatus>) {
        self.enabled.set(bus.is_some() as i64);
        if let Some(bus) = bus {
            self.connected.set(bus.connected as i64);
            self.queue_depth.set(bus.queued as i64);
            self.queue_capacity.set(bus.capacity as i64);
            follow(&self.dropped, &self.dropped_seen, bus.dropped);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let build_info = IntGaugeVec::new(
            Opts::new("kz_groups_build_info", "Always 1; the version as a label."),
            &["version"],
        );
        register(r, build_info.expect("a metric"))
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let metrics = Self {
            http: Http::new(r),
            store: StoreCalls::new(r),
            caches: Caches::new(r),
            bus: Bus::new(r),
            conflicts_resolved: counter(
                r,
                "kz_groups_conflicts_resolved_total",
                "CouchDB document conflicts resolved by kz-groups.",
            ),
            couchdb_accepted: counter(
                r,
                "kz_groups_couchdb_accepted_writes_total",
                "Writes CouchDB answered 202 Accepted (stored without write quorum).",
            ),
            couchdb_accepted_seen: Mutex::new(0),
            history_written: counter(
                r,
                "kz_groups_history_entries_written_total",
                "Group history entries written.",
            ),
            history_waiting: gauge(
                r,
                "kz_groups_history_entries_waiting",
                "Acknowledged group changes whose history entry is queued, not yet written.",
            ),
            history_queue_bytes: gauge(
                r,
                "kz_groups_history_queue_bytes",
                "Memory the queued group changes' documents take, in bytes (writes wait past 64 MiB).",
            ),
            history_recovered: counter(
                r,
                "kz_groups_history_entries_recovered_total",
                "Group history entries recovered from the change feeds (changes without an entry).",
            ),
            history_feed_passes: counter_vec(
                r,
                "kz_groups_history_feed_passes_total",
                "Passes of the group history's change-feed follower over the changed account databases, by result (ok: all read; failed: one could not be read, retried next pass).",
                &["result"],
            ),
            listing_rereads: counter(
                r,
                "kz_groups_listing_rereads_total",
                "Listings read again because they did not yet show a write this instance acknowledged (a cluster's view copy lagging).",
            ),
            registry,
        };
        // Both series from the start, so a rule comparing them never meets an absent one.
        for result in ["ok", "failed"] {
            metrics.history_feed_passes.with_label_values(&[result]);
        }
        metrics
    }

    /// One pass of the history's change-feed follower (`ok`: nothing left unread).
    pub fn history_feed_pass(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.history_feed_passes.with_label_values(&[result]).inc();
    }

    /// One answered request; `route` is a name of the route table (`routes::route_name`).
    pub fn observe_request(&self, route: &str, method: &Method, status: u16, took: Duration) {
        let method = method_label(method);
        self.http
            .requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.http
            .duration
            .with_label_values(&[route, method])
            .observe(took.as_secs_f64());
    }

    /// One store call and its outcome.
    pub fn observe_store(&self, operation: &str, error: Option<&StoreError>, took: Duration) {
        self.store.calls.with_label_values(&[operation]).inc();
        self.store
            .duration
            .with_label_values(&[operation])
            .observe(took.as_secs_f64());
        if let Some(error) = error {
            self.store
                .errors
                .with_label_values(&[operation, error_kind(error)])
                .inc();
        }
    }

    /// The store's count of writes answered `202 Accepted`, read at scrape time.
    pub fn accepted(&self, total: u64) {
        follow(&self.couchdb_accepted, &self.couchdb_accepted_seen, total);
    }

    /// The text exposition of every metric, the bus's and the caches' read now.
    pub fn render(&self, bus: Option<BusStatus>, caches: &[(&'static str, CacheStats)]) -> String {
        self.caches.follow(caches);
        self.bus.follow(bus);
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("text encoding of gathered metrics");
        String::from_utf8(text).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_writes_follow_the_stores_count() {
        let metrics = Metrics::new();
        metrics.accepted(2);
        metrics.accepted(2);
        metrics.accepted(5);
        assert_eq!(metrics.couchdb_accepted.get(), 5);
        assert!(metrics
            .render(None, &[])
            .contains("kz_groups_couchdb_accepted_writes_total 5"));
    }

    #[test]
    fn requests_store_calls_and_the_bus_are_exposed() {
        let metrics = Metrics::new();
        metrics.observe_request("groups", &Method::GET, 200, Duration::from_millis(3));
        metrics.observe_request(
            "groups",
            &Method::from_bytes(b"BREW").unwrap(),
            405,
            Duration::ZERO,
        );
        metrics.observe_store("get_doc", None, Duration::from_millis(1));
        metrics.observe_store(
            "put_doc",
            Some(&StoreError::Conflict),
            Duration::from_millis(1),
        );
        let group = CacheStats {
            entries: 2,
            bytes: 300,
            hits: 1,
            misses: 4,
        };
        let bus = BusStatus {
            connected: true,
            queued: 3,
            capacity: 10,
            dropped: 2,
        };
        let text = metrics.render(Some(bus), &[("group", group)]);
        for line in [
            r#"kz_groups_http_requests_total{method="GET",route="groups",status="200"} 1"#,
            r#"kz_groups_http_requests_total{method="OTHER",route="groups",status="405"} 1"#,
            r#"kz_groups_http_request_duration_seconds_count{method="GET",route="groups"} 1"#,
            r#"kz_groups_store_requests_total{operation="put_doc"} 1"#,
            r#"kz_groups_store_errors_total{kind="conflict",operation="put_doc"} 1"#,
            r#"kz_groups_cache_hits_total{cache="group"} 1"#,
            r#"kz_groups_cache_misses_total{cache="group"} 4"#,
            r#"kz_groups_cache_entries{cache="group"} 2"#,
            "kz_groups_amqp_connected 1",
            "kz_groups_amqp_queue_depth 3",
            "kz_groups_amqp_dropped_total 2",
            "kz_groups_conflicts_resolved_total 0",
            "kz_groups_listing_rereads_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        let later = CacheStats { hits: 3, ..group };
        let again = metrics.render(Some(bus), &[("group", later)]);
        assert!(again.lines().any(|l| l == "kz_groups_amqp_dropped_total 2"));
        assert!(again
            .lines()
            .any(|l| l == r#"kz_groups_cache_hits_total{cache="group"} 3"#));
    }
}
