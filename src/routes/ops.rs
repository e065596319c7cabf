//! For operators and tools, beside Crossbar's paths: the Prometheus metrics (`/metrics`) and
//! the OpenAPI 3.1 document of every endpoint (`/openapi.json`, `docs/openapi.json` as shipped).
use actix_web::http::header::ContentType;
use actix_web::{web, HttpResponse};

use crate::metrics;
use crate::pipeline::AppState;

/// The OpenAPI document, embedded at build time; `tests/api/openapi.rs` keeps it true.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.accepted(state.store.accepted_writes());
    let text = state
        .metrics
        .render(state.notifier.bus_status(), &state.cache_stats());
    HttpResponse::Ok()
        .insert_header(("content-type", metrics::CONTENT_TYPE))
        .body(text)
}

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(OPENAPI)
}
