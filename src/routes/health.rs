//! Liveness (`/healthz`, no I/O) and readiness (`/readyz`: the store answers, the design
//! documents parsed at start are loaded, and the token signing material logins need is there).
//! The AMQP bus is reported in the body but never makes the service unready: writes go on while
//! the broker is away (their notices wait in the bus queue), and taking kz-groups out of a load
//! balancer would turn a bus outage into an API outage.
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::pipeline::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `{"status", "version", "store", "crossbar" (`4.3` or `master`), "<store kind>": "up"|"down", "signing", "design_docs",
/// "amqp"}`; 503 unless the store is up and the signing material is there. With signing
/// material missing, `signing` is `"missing"` and `problem` says what to run; with the store
/// down, `problem` says why.
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
    let kind = state.store_kind;
    let (store_up, problem) = match state.store.ping().await {
        Ok(()) => match state.issuer.missing_material().await {
            Ok(None) => (true, None),
            Ok(Some(missing)) => (true, Some(missing)),
            Err(e) => (false, Some(format!("store: {e}"))),
        },
        Err(e) => {
            log::warn!("readiness: {kind} store not reachable: {e}");
            // The cause (refused, timed out, a TLS certificate problem) is the operator's
            // first question; it names no credentials.
            (false, Some(e.to_string()))
        }
    };
    let ready = store_up && problem.is_none();
    let mut body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "version": env!("CARGO_PKG_VERSION"),
        "store": kind,
        "crossbar": state.crossbar.as_str(),
        kind: if store_up { "up" } else { "down" },
        "signing": match (&problem, store_up) {
            (None, true) => "ready",
            (Some(_), true) => "missing",
            _ => "unknown",
        },
        "design_docs": designs,
        "amqp": amqp,
    });
    if let Some(problem) = problem {
        body["problem"] = json!(problem);
    }
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
