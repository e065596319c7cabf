//! Wiring in one place: schemas, design documents, the CouchDB client and the listener are built
//! once here, so tests run exactly the production application (port 0 allowed).
use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::api::AppState;
use crate::config::Config;
use crate::notices::LogNotifier;
use crate::routes;
use crate::store::couch::CouchClient;
use crate::store::views::{DesignDoc, ViewInstaller};
use crate::validation::GroupValidator;

/// The schema and design documents ship inside the binary, from `schemas/` and `couch_views/`.
pub const GROUPS_SCHEMA: &str = include_str!("../schemas/groups.json");
pub const GROUPS_VIEWS: &str = include_str!("../couch_views/groups.json");

pub fn design_docs() -> Result<Vec<DesignDoc>, String> {
    let value =
        serde_json::from_str(GROUPS_VIEWS).map_err(|e| format!("couch_views/groups.json: {e}"))?;
    Ok(vec![
        DesignDoc::from_value(value).map_err(|e| format!("couch_views/groups.json: {e}"))?
    ])
}

pub fn validator() -> Result<GroupValidator, String> {
    let schema =
        serde_json::from_str(GROUPS_SCHEMA).map_err(|e| format!("schemas/groups.json: {e}"))?;
    GroupValidator::from_schema(schema).map_err(|e| format!("schemas/groups.json: {e}"))
}

pub fn couch_client(config: &Config) -> Result<CouchClient, String> {
    CouchClient::new(&config.couchdb_url, config.couch_timeout)
}

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Builds everything and binds the listener; fails fast on a broken schema, design doc or
    /// address.
    pub fn build(config: Config) -> Result<Self, String> {
        let couch = couch_client(&config)?;
        let views = ViewInstaller::new(couch.clone(), design_docs()?);
        let state = web::Data::new(AppState::from_parts(
            &config,
            couch,
            views,
            validator()?,
            Box::new(LogNotifier),
        ));
        let listener = TcpListener::bind(&config.listen)
            .map_err(|e| format!("cannot listen on KZ_GROUPS_LISTEN={}: {e}", config.listen))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
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
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
