//! Wiring in one place: schemas, design documents, the CouchDB client and the listener are built
//! once here, so tests run exactly the production application (port 0 allowed). The store is
//! opened here too: the embedded store's directory made private first, CouchDB probed once.
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::body::BoxBody;
use actix_http::{HttpService, Request, Response};
use actix_service::{fn_service, map_config};
use actix_web::dev::Service as _;
use actix_web::dev::{AppConfig, Server};
use actix_web::{web, App};

use crate::auth::issuer::Issuer;
use crate::bus::Bus;
use crate::bus_listener;
use crate::config::{Backend, Config};
use crate::history::Recorder;
use crate::metrics::Metrics;
use crate::notices::{ChangeNotifier, LogNotifier};
use crate::pipeline::{request, AppState};
use crate::routes;
use crate::store::cached::CachedStore;
use crate::store::couch::CouchClient;
use crate::store::embedded::EmbeddedStore;
use crate::store::views::{DesignDoc, ViewInstaller};
use crate::store::{Store, StoreError};
use crate::store_metrics::MeteredStore;
use crate::systemd;
use crate::validation::Schemas;

/// The design documents ship inside the binary, from `couch_views/`.
const DESIGN_FILES: &[(&str, &str)] = &[
    (
        "couch_views/accounts.json",
        include_str!("../couch_views/accounts.json"),
    ),
    (
        "couch_views/groups.json",
        include_str!("../couch_views/groups.json"),
    ),
    (
        "couch_views/users.json",
        include_str!("../couch_views/users.json"),
    ),
];
fn parse_embedded(file: &str, text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("{file}: {e}"))
}

pub fn design_docs() -> Result<Vec<DesignDoc>, String> {
    DESIGN_FILES
        .iter()
        .map(|(file, text)| {
            DesignDoc::from_value(parse_embedded(file, text)?).map_err(|e| format!("{file}: {e}"))
        })
        .collect()
}

/// The document store the configuration names. The embedded store's directory is made (or
/// kept) private, mode 0700, before the store opens it, and the files in it 0600 once it has:
/// it holds the token signing key.
pub fn store(config: &Config) -> Result<Store, String> {
    Ok(match &config.backend {
        Backend::CouchDb { url } => Arc::new(CouchClient::new(
            url,
            config.couch_timeout,
            config.view_timeout,
            config.couch_ca.as_ref(),
        )?),
        Backend::Embedded { dir } => {
            private_dir(dir)?;
            let store = EmbeddedStore::open(dir)?;
            private_files(dir)?;
            Arc::new(store)
        }
    })
}

/// Creates `dir` (and its missing parents) and sets its mode to 0700.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let fail = |e: std::io::Error| format!("cannot create KZ_GROUPS_DATA={}: {e}", dir.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    let mode = std::fs::metadata(dir).map_err(fail)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            format!(
                "cannot make KZ_GROUPS_DATA={} private (0700): {e}",
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// Sets every file in `dir` to 0600 (SQLite gives its journal files the database file's mode).
fn private_files(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))
                .map_err(|e| {
                    format!("cannot make {} private (0600): {e}", entry.path().display())
                })?;
        }
    }
    Ok(())
}

/// The store, once it has answered: a CouchDB that does not is an error naming the cause
/// (connection refused, no answer in time, unknown host, refused credentials).
pub async fn open_store(config: &Config) -> Result<Store, String> {
    let store = store(config)?;
    probe(config, &store).await?;
    Ok(store)
}

/// Whether the store answers; a CouchDB that does not is an error naming the cause.
pub async fn probe(config: &Config, store: &Store) -> Result<(), String> {
    let Backend::CouchDb { url } = &config.backend else {
        return Ok(());
    };
    match store.ping().await {
        Ok(()) => Ok(()),
        Err(StoreError::Unreachable(e)) => {
            let https = url.starts_with("https:");
            let cause = match unreachable_cause(url, config.couch_timeout).await {
                Some(cause) => cause,
                // TCP connects, yet nothing answers in time: a plain-HTTP server (CouchDB's
                // 5984, say) waiting for a request line while we wait for its TLS handshake.
                None if https && e.contains("timed out") => format!(
                    "TLS handshake with {} got no answer within {} ms \
                     (KZ_GROUPS_COUCH_TIMEOUT_MS): does it serve https on that port?",
                    store.describe(),
                    config.couch_timeout.as_millis()
                ),
                None => e,
            };
            Err(format!(
                "cannot reach {} (COUCHDB_URL): {cause}",
                store.describe()
            ))
        }
        Err(StoreError::Other { status: 401, .. }) => Err(format!(
            "{} refused the credentials in COUCHDB_URL (401 unauthorized)",
            store.describe()
        )),
        Err(e) => Err(format!("{} (COUCHDB_URL): {e}", store.describe())),
    }
}

/// Why nothing answers at `url`'s host and port, found with a plain TCP connection; `None` when
/// the connection works (the failure is above TCP, e.g. TLS).
async fn unreachable_cause(url: &str, timeout: Duration) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?.trim_matches(['[', ']']).to_owned();
    let port = parsed.port_or_known_default()?;
    tokio::task::spawn_blocking(move || {
        use std::net::ToSocketAddrs as _;
        let addrs = match (host.as_str(), port).to_socket_addrs() {
            Ok(addrs) => addrs.collect::<Vec<_>>(),
            Err(e) => return Some(format!("cannot resolve the host {host:?}: {e}")),
        };
        let mut cause = None;
        for addr in addrs {
            match std::net::TcpStream::connect_timeout(&addr, timeout) {
                Ok(_) => return None,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    cause = Some(format!("connection refused by {addr}"))
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    cause = Some(format!(
                        "no answer from {addr} within {} ms (KZ_GROUPS_COUCH_TIMEOUT_MS)",
                        timeout.as_millis()
                    ))
                }
                Err(e) => cause = Some(format!("{addr}: {e}")),
            }
        }
        cause
    })
    .await
    .ok()
    .flatten()
}

/// What is missing of the signing material logins need, said with what to run (`None`: all
/// there). A store error is reported the same way, since logins would fail too.
pub async fn missing_signing_material(store: &Store) -> Option<String> {
    match Issuer::new(store.clone(), store.clone(), Duration::ZERO)
        .missing_material()
        .await
    {
        Ok(missing) => missing,
        Err(e) => Some(format!("cannot read the token signing material: {e}")),
    }
}

/// The time a client has to send a request's headers (cowboy's and actix's 5 s).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// File descriptors kept for everything but client connections: CouchDB connections, the
/// embedded store's files, logs.
const RESERVED_FILES: u64 = 256;

/// Raises the open-file soft limit to the hard limit, and returns how many client connections
/// may be open at once: `KZ_GROUPS_MAX_CONNECTIONS`, else what the limit leaves after
/// [`RESERVED_FILES`]. Past it, new connections wait in the listen backlog rather than take the
/// descriptors the service needs to answer the ones it has.
pub fn connection_limit(configured: Option<usize>) -> usize {
    let files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(files) => files,
        Err(e) => {
            log::warn!(
                "cannot raise the open-file limit ({e}): the connection limit comes from the \
                 current one"
            );
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    };
    let room = files.saturating_sub(RESERVED_FILES).max(64);
    configured.unwrap_or(room.min(100_000) as usize)
}

/// An `Expect: 100-continue` refused with a full answer instead of `100 Continue`.
struct Refused(actix_web::HttpResponse);

impl From<Refused> for Response<BoxBody> {
    fn from(refused: Refused) -> Self {
        refused.0.into()
    }
}

/// Where change notices go: the bus when `KZ_GROUPS_AMQP_URL` is set (its worker starts on
/// the current Tokio runtime), else the log. The bus is returned too, for its shutdown.
pub fn notifier(config: &Config) -> (Arc<dyn ChangeNotifier>, Option<Arc<Bus>>) {
    match &config.amqp {
        Some(amqp) => {
            let bus = Bus::start(amqp, &config.node_name);
            (bus.clone(), Some(bus))
        }
        None => (Arc::new(LogNotifier), None),
    }
}

/// Kazoo's own change notices, heard on the bus (with `KZ_GROUPS_AMQP_URL`), drop what they
/// name from the caches.
fn hear_kazoo(config: &Config, caches: &Arc<CachedStore>) -> Option<tokio::task::JoinHandle<()>> {
    config.amqp.as_ref().map(|amqp| {
        let caches = Arc::downgrade(caches);
        let on_change: bus_listener::OnChange = Arc::new(move |change| {
            if let Some(caches) = caches.upgrade() {
                caches.heard(change);
            }
        });
        bus_listener::start(amqp.url.clone(), config.node_name.clone(), on_change)
    })
}

/// One worker's HTTP service: the route table behind the request metrics and the access log,
/// `Expect: 100-continue` refused where the body would be, and idle connections closed as a
/// stop begins.
fn http_service(
    state: web::Data<AppState>,
    drain: actix_server::GracefulShutdownSignal,
    access_log: bool,
) -> impl actix_service::ServiceFactory<
    actix_web::rt::net::TcpStream,
    Config = (),
    Response = (),
    Error = actix_http::error::DispatchError,
    InitError = (),
> {
    let metrics = state.metrics.clone();
    let app = App::new()
        .wrap_fn(move |req, service| {
            let route = routes::route_name(req.path());
            let method = req.method().clone();
            let start = Instant::now();
            let metrics = metrics.clone();
            let answer = service.call(req);
            async move {
                let response = answer.await?;
                let status = response.status().as_u16();
                metrics.observe_request(route, &method, status, start.elapsed());
                Ok(response)
            }
        })
        // The request line without its secrets (`auth_token=` and the like); not even
        // formatted where the log level leaves access lines out.
        .wrap(actix_web::middleware::Condition::new(
            access_log,
            actix_web::middleware::Logger::new(
                "%a \"%{request}xi\" %s %b %Dms request_id=%{x-request-id}o",
            )
            .custom_request_replace("request", request::logged_request_line),
        ))
        .app_data(state.clone())
        .configure(routes::configure);
    HttpService::build()
        .client_request_timeout(HEADER_TIMEOUT)
        // At a stop, idle keep-alive connections close at once; a connection with a request in
        // flight closes once it is answered.
        .graceful_shutdown_signal(move || {
            let drain = drain.clone();
            async move { drain.notified().await }
        })
        .expect(fn_service(move |req: Request| {
            let refused = routes::refuse_announced_body(req.head(), req.peer_addr(), &state);
            if let Some(answer) = &refused {
                state.metrics.observe_request(
                    routes::route_name(req.path()),
                    req.method(),
                    answer.status().as_u16(),
                    Duration::ZERO,
                );
            }
            async move {
                match refused {
                    Some(answer) => Err(Refused(answer)),
                    None => Ok(req),
                }
            }
        }))
        .finish(map_config(app, |_| AppConfig::default()))
        .tcp()
}

pub struct Application {
    port: u16,
    server: Server,
    /// Notified when a stop begins (SIGTERM, SIGINT): the background workers end then.
    draining: actix_server::GracefulShutdownSignal,
    caches: Arc<CachedStore>,
    bus: Option<Arc<Bus>>,
    /// Kazoo's change notices, heard for the caches.
    hearing: Option<tokio::task::JoinHandle<()>>,
    /// The conflict resolver's feed worker (CouchDB only).
    resolver: Option<tokio::task::JoinHandle<()>>,
    /// The group history's writer.
    history: Option<tokio::task::JoinHandle<()>>,
    /// The group history's change-feed follower.
    history_feed: Option<tokio::task::JoinHandle<()>>,
    recorder: Arc<Recorder>,
}

/// How long a stop waits for the history entries still queued.
const HISTORY_FLUSH: Duration = Duration::from_secs(5);

impl Application {
    /// Builds everything, the store included, and binds the listener; fails fast on a broken
    /// schema, design doc or address.
    pub fn build(config: Config) -> Result<Self, String> {
        let store = store(&config)?;
        Self::build_with_store(config, store)
    }

    /// [`Application::build`] on a store already open: a process opens its store once and
    /// shares the handle.
    pub fn build_with_store(config: Config, store: Store) -> Result<Self, String> {
        let metrics = Arc::new(Metrics::new());
        // The server reads through its caches (the CLI's short runs do not); what reaches the
        // store itself is measured.
        let direct = MeteredStore::wrap(store, metrics.clone());
        let caches = CachedStore::new(direct.clone(), config.caches);
        let views = ViewInstaller::new(caches.clone(), design_docs()?);
        let schemas = Schemas::load()?;
        let listener = TcpListener::bind(&config.listen)
            .map_err(|e| format!("cannot listen on KZ_GROUPS_LISTEN={}: {e}", config.listen))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let port = address.port();
        // Started last, once nothing else can fail, so a failed build leaves no worker behind.
        let (notifier, bus) = notifier(&config);
        let hearing = hear_kazoo(&config, &caches);
        let state = web::Data::new(AppState::from_parts(
            &config,
            caches.clone(),
            direct,
            views,
            schemas,
            notifier,
            metrics,
        )?);
        let recorder = state.history.clone();
        let resolver = state.resolver.clone();
        let history_feed = state.history_feed.clone();
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let connections = connection_limit(config.max_connections);
        let access_log =
            log::log_enabled!(target: "actix_web::middleware::logger", log::Level::Info);
        let builder = actix_server::Server::build()
            .workers(workers)
            .max_concurrent_connections(connections.div_ceil(workers))
            .shutdown_timeout(config.shutdown_grace.as_secs());
        let draining = builder.graceful_shutdown_signal();
        let drain = draining.clone();
        let server = builder
            .listen("kz-groups", listener, move || {
                http_service(state.clone(), drain.clone(), access_log)
            })
            .map_err(|e| e.to_string())?
            .run();
        // The embedded store has one writer, hence never a conflict: nothing to follow.
        let resolver = match config.backend {
            Backend::CouchDb { .. } => Some(resolver.start()),
            Backend::Embedded { .. } => None,
        };
        let history = Some(recorder.start());
        let history_feed = Some(history_feed.start());
        log::info!(
            "listening on {address} with {workers} workers, up to {connections} connections"
        );
        Ok(Self {
            port,
            server,
            draining,
            caches,
            bus,
            hearing,
            resolver,
            history,
            history_feed,
            recorder,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM/SIGINT. A stop closes idle keep-alive connections at once, lets
    /// requests in flight finish (for `KZ_GROUPS_SHUTDOWN_GRACE_SECS` at most, then closes
    /// their connections), and ends the background workers as it begins, quietly: the cache
    /// feeds, Kazoo's notices heard, the conflict resolver (what its feed would still find waits
    /// for the next start, or another instance). Then the bus gets its bounded flush of the
    /// notices still queued.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let workers: Vec<tokio::task::AbortHandle> =
            [&self.hearing, &self.resolver, &self.history_feed]
                .into_iter()
                .flatten()
                .map(tokio::task::JoinHandle::abort_handle)
                .collect();
        let (draining, caches) = (self.draining.clone(), self.caches.clone());
        let quiet = tokio::spawn(async move {
            draining.notified().await;
            systemd::stopping();
            log::info!("stopping: idle connections closed, requests in flight finishing");
            workers.iter().for_each(tokio::task::AbortHandle::abort);
            caches.stop_feeds();
        });
        // Bound and accepting since `build`: under systemd's `Type=notify`, started now.
        systemd::ready();
        let served = self.server.await;
        quiet.abort();
        for worker in [&self.hearing, &self.resolver, &self.history_feed]
            .into_iter()
            .flatten()
        {
            worker.abort();
        }
        self.caches.stop_feeds();
        // The history entries of the writes answered: a bounded wait, as the bus's below; what
        // is left is recovered from the change feeds at the next start.
        self.recorder.flush(HISTORY_FLUSH).await;
        if let Some(history) = &self.history {
            history.abort();
        }
        if let Some(bus) = &self.bus {
            let left = bus.shutdown().await;
            if left > 0 {
                log::error!(
                    "{left} change notices were not delivered to the AMQP broker before the \
                     stop (each is logged above): Kazoo's caches may hold those documents \
                     until they expire"
                );
            }
        }
        log::info!("stopped");
        served
    }
}
