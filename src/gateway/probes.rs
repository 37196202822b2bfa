//! Liveness, readiness and metrics: what an orchestrator and Prometheus ask.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{ApiError, AppState};

pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers (and, as sources are wired, each source).
pub async fn ready(State(state): State<AppState>) -> Response {
    match state.dispatcher.store().ping().await {
        Ok(()) => Json(json!({"status": "ready", "store": "ok", "sources": {"webhook": "up"}})).into_response(),
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready")
            .with("store", e.to_string())
            .with("sources", json!({"webhook": "up"}))
            .into_response(),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.as_ref().map(|m| m.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
