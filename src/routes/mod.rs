//! The whole route table: health probes outside `/v2`, and every API path through the
//! Crossbar pipeline, which does its own noun routing (`api::path`).
pub mod health;

use actix_web::web;

use crate::api;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .default_service(web::to(api::crossbar));
}
