//! Liveness (`/healthz`, no I/O) and readiness (`/readyz`: CouchDB answers and the design
//! documents parsed at start are loaded).
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::api::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let designs: Vec<&str> = state
        .views
        .designs()
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok()
            .json(json!({"status": "ready", "couchdb": "up", "design_docs": designs})),
        Err(e) => {
            log::warn!("readiness: couchdb not reachable: {e}");
            HttpResponse::ServiceUnavailable()
                .json(json!({"status": "unavailable", "couchdb": "down", "design_docs": designs}))
        }
    }
}
