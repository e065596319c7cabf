//! Wiring in one place: schemas, design documents, the CouchDB client and the listener are built
//! once here, so tests run exactly the production application (port 0 allowed).
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::api::AppState;
use crate::bus::Bus;
use crate::config::{Backend, Config};
use crate::notices::{ChangeNotifier, LogNotifier};
use crate::routes;
use crate::store::couch::CouchClient;
use crate::store::embedded::EmbeddedStore;
use crate::store::views::{DesignDoc, ViewInstaller};
use crate::store::Store;
use crate::validation::SchemaValidator;

/// The schemas and design documents ship inside the binary, from `schemas/` and `couch_views/`.
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
const GROUPS_SCHEMA: (&str, &str) = (
    "schemas/groups.json",
    include_str!("../schemas/groups.json"),
);
const API_AUTH_SCHEMA: (&str, &str) = (
    "schemas/api_auth.json",
    include_str!("../schemas/api_auth.json"),
);
const USER_AUTH_SCHEMA: (&str, &str) = (
    "schemas/user_auth.json",
    include_str!("../schemas/user_auth.json"),
);

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

fn schema((file, text): (&str, &str)) -> Result<SchemaValidator, String> {
    SchemaValidator::from_schema(parse_embedded(file, text)?).map_err(|e| format!("{file}: {e}"))
}

/// The compiled schemas of every resource served.
pub struct Schemas {
    pub groups: SchemaValidator,
    pub api_auth: SchemaValidator,
    pub user_auth: SchemaValidator,
}

pub fn schemas() -> Result<Schemas, String> {
    Ok(Schemas {
        groups: schema(GROUPS_SCHEMA)?,
        api_auth: schema(API_AUTH_SCHEMA)?,
        user_auth: schema(USER_AUTH_SCHEMA)?,
    })
}

/// The document store the configuration names.
pub fn store(config: &Config) -> Result<Store, String> {
    Ok(match &config.backend {
        Backend::CouchDb { url } => Arc::new(CouchClient::new(url, config.couch_timeout)?),
        Backend::Embedded { dir } => Arc::new(EmbeddedStore::open(dir)?),
    })
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
    /// Builds everything and binds the listener; fails fast on a broken schema, design doc or
    /// address.
    pub fn build(config: Config) -> Result<Self, String> {
        let couch = store(&config)?;
        let views = ViewInstaller::new(couch.clone(), design_docs()?);
        let schemas = schemas()?;
        let listener = TcpListener::bind(&config.listen)
            .map_err(|e| format!("cannot listen on KZ_GROUPS_LISTEN={}: {e}", config.listen))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        // Started last, once nothing else can fail, so a failed build leaves no worker behind.
        let (notifier, bus) = notifier(&config);
        let state = web::Data::new(AppState::from_parts(
            &config, couch, views, schemas, notifier,
        ));
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::Logger::new(
                    "%a \"%r\" %s %b %Dms request_id=%{x-request-id}o",
                ))
                .app_data(state.clone())
                .configure(routes::configure)
        })
        .listen(listener)
        .map_err(|e| e.to_string())?
        .run();
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
