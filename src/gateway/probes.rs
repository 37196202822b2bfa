//! Liveness, readiness and metrics: what an orchestrator and Prometheus ask.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{ApiError, AppState};
use crate::sources::health::Status;

pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers and every source is up; otherwise 503 says
/// which is not.
pub async fn ready(State(state): State<AppState>) -> Response {
    let store = state.dispatcher.store().ping().await;
    let sources = state.health.snapshot();
    let store_text = match &store {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    // Registries never make fanin unready (the local copies always work);
    // they say which copy each category uses.
    let registries = state.dispatcher.registries().map(|r| json!(r.status()));
    if store.is_ok() && state.health.all_up() {
        Json(json!({"status": "ready", "store": store_text, "sources": sources, "registries": registries}))
            .into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready")
            .with("store", store_text)
            .with("sources", json!(sources))
            .with("registries", registries)
            .into_response()
    }
}

/// Prometheus text. Source gauges are set from the health snapshot at scrape
/// time, so "age of the last event" is current when read.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let now = chrono::Utc::now();
    for (name, source) in state.health.snapshot() {
        let up = f64::from(u8::from(source.status == Status::Up));
        metrics::gauge!("fanin_source_up", "source" => name.clone()).set(up);
        metrics::gauge!("fanin_source_reconnects", "source" => name.clone()).set(source.reconnects as f64);
        if let Some(at) = source.last_event_at {
            let age = (now - at).num_milliseconds() as f64 / 1000.0;
            metrics::gauge!("fanin_source_last_event_age_seconds", "source" => name).set(age);
        }
    }
    let body = state.metrics.as_ref().map(|m| m.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
