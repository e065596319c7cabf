//! Wiring in one place: schemas, design documents, the CouchDB client and the listener are built
//! once here, so tests run exactly the production application (port 0 allowed).
use std::net::TcpListener;
use std::sync::Arc;

use std::time::Duration;

use actix_http::body::BoxBody;
use actix_http::{HttpService, Request, Response};
use actix_service::{fn_service, map_config};
use actix_web::dev::{AppConfig, Server};
use actix_web::{web, App};

use crate::bus::Bus;
use crate::config::{Backend, Config};
use crate::notices::{ChangeNotifier, LogNotifier};
use crate::pipeline::AppState;
use crate::routes;
use crate::store::cached::CachedStore;
use crate::store::couch::CouchClient;
use crate::store::embedded::EmbeddedStore;
use crate::store::views::{DesignDoc, ViewInstaller};
use crate::store::Store;
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

/// The document store the configuration names.
pub fn store(config: &Config) -> Result<Store, String> {
    Ok(match &config.backend {
        Backend::CouchDb { url } => Arc::new(CouchClient::new(
            url,
            config.couch_timeout,
            config.view_timeout,
        )?),
        Backend::Embedded { dir } => Arc::new(EmbeddedStore::open(dir)?),
    })
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
            log::warn!("cannot raise the open-file limit: {e}");
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

pub struct Application {
    port: u16,
    server: Server,
    bus: Option<Arc<Bus>>,
}

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
        // The server reads through its caches; the CLI's short runs do not.
        let store: Store = CachedStore::new(store, config.caches);
        let views = ViewInstaller::new(store.clone(), design_docs()?);
        let schemas = Schemas::load()?;
        let listener = TcpListener::bind(&config.listen)
            .map_err(|e| format!("cannot listen on KZ_GROUPS_LISTEN={}: {e}", config.listen))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let port = address.port();
        // Started last, once nothing else can fail, so a failed build leaves no worker behind.
        let (notifier, bus) = notifier(&config);
        let state = web::Data::new(AppState::from_parts(
            &config, store, views, schemas, notifier,
        ));
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let connections = connection_limit(config.max_connections);
        let server = actix_server::Server::build()
            .workers(workers)
            .max_concurrent_connections(connections.div_ceil(workers))
            .listen("kz-groups", listener, move || {
                let app = App::new()
                    .wrap(actix_web::middleware::Logger::new(
                        "%a \"%r\" %s %b %Dms request_id=%{x-request-id}o",
                    ))
                    .app_data(state.clone())
                    .configure(routes::configure);
                let expect_state = state.clone();
                HttpService::build()
                    .client_request_timeout(HEADER_TIMEOUT)
                    .expect(fn_service(move |req: Request| {
                        let refused = routes::refuse_announced_body(
                            req.head(),
                            req.peer_addr(),
                            &expect_state,
                        );
                        async move {
                            match refused {
                                Some(answer) => Err(Refused(answer)),
                                None => Ok(req),
                            }
                        }
                    }))
                    .finish(map_config(app, |_| AppConfig::default()))
                    .tcp()
            })
            .map_err(|e| e.to_string())?
            .run();
        log::info!(
            "listening on {address} with {workers} workers, up to {connections} connections"
        );
        Ok(Self { port, server, bus })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM/SIGINT; actix lets requests in flight finish, then the bus gets
    /// its bounded flush of the notices still queued.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        if let Some(bus) = &self.bus {
            let left = bus.shutdown().await;
            if left > 0 {
                log::error!("{left} change notices were not delivered to the AMQP broker");
            }
        }
        served
    }
}
