//! Liveness (`/healthz`, no I/O) and readiness (`/readyz`: CouchDB answers and the design
//! documents parsed at start are loaded). The AMQP bus is reported in the body but never makes
//! the service unready: writes go on while the broker is away (their notices wait in the
//! bus queue), and taking kz-groups out of a load balancer would turn a bus outage into an API
//! outage.
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::pipeline::AppState;

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
    let amqp = match state.notifier.bus_status() {
        None => json!({"enabled": false}),
        Some(bus) => json!({
            "enabled": true,
            "connected": bus.connected,
            "queued": bus.queued,
            "capacity": bus.capacity,
            "dropped": bus.dropped,
        }),
    };
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(
            json!({"status": "ready", "couchdb": "up", "design_docs": designs, "amqp": amqp}),
        ),
        Err(e) => {
            log::warn!("readiness: couchdb not reachable: {e}");
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable", "couchdb": "down", "design_docs": designs, "amqp": amqp
            }))
        }
    }
}
