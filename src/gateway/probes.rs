//! Liveness, readiness and metrics: what an orchestrator and Prometheus ask.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::cluster::DutyState;
use crate::sources::health::Status;
use crate::store::WriteState;

pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers, its writes succeed, and every source is
/// up; otherwise 503 says which is not. A store whose last write failed is
/// `failing: <reason>` until a write succeeds again, whoever wrote.
pub async fn ready(State(state): State<AppState>) -> Response {
    let store = &state.store;
    let reads = store.ping().await;
    let writes = store.watch().write_state();
    let sources = state.health.snapshot();
    let store_text = match (&reads, &writes) {
        (Err(e), _) => e.to_string(),
        (Ok(()), WriteState::Failing { reason, .. }) => format!("failing: {reason}"),
        (Ok(()), WriteState::Ok) => "ok".to_string(),
    };
    let store_ok = reads.is_ok() && writes == WriteState::Ok;
    // Registries never make fanin unready (the local copies always work);
    // they say which copy each category uses. Nor do destinations: a
    // destination that fails or is not configured is its operator's matter,
    // and envelopes wait for it durably.
    let registries = state.dispatcher.registries().map(|r| json!(r.status()));
    let outbox = outbox_status(&state);
    let mut body = json!({"store": store_text, "store_kind": store.kind(), "sources": sources, "registries": registries,
        "outbox": outbox});
    if let Some(node_id) = &state.node_id {
        body["node_id"] = json!(node_id);
    }
    if let WriteState::Failing { since, refused, .. } = writes {
        body["store_failing"] = json!({"since": since, "writes_refused": refused});
    }
    if store_ok && state.health.all_up() {
        body["status"] = json!("ready");
        Json(body).into_response()
    } else {
        let mut error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
        if let Value::Object(fields) = body {
            for (key, value) in fields {
                error = error.with(&key, value);
            }
        }
        error.into_response()
    }
}

/// The outbox in `/ready`: pending envelopes, and per destination whether
/// it is configured, deliveries to it failing (since when, how many
/// attempts, the latest cause), or envelopes waiting for it unconfigured.
fn outbox_status(state: &AppState) -> Value {
    let watch = state.store.watch();
    let mut destinations = serde_json::Map::new();
    for (name, d) in state.delivery.snapshot() {
        let mut entry = match (&d.configured, &d.failing) {
            (false, _) => {
                let waiting = (d.pending_at_start + watch.enqueued(name)).saturating_sub(watch.withdrawn(name));
                json!({"configured": false, "waiting": waiting})
            }
            (true, None) => json!({"configured": true, "deliveries": "ok"}),
            (true, Some(f)) => json!({"configured": true, "deliveries": "failing", "since": f.since,
                "failed_attempts": f.failed_attempts, "dead_letters": f.dead_letters, "cause": f.cause}),
        };
        match &d.duty {
            Some(DutyState::Held) | None => {}
            Some(DutyState::Standby { owner }) => entry["delivered_by"] = json!(owner),
            Some(DutyState::Unreachable(why)) => entry["delivered_by"] = json!(format!("nobody here: {why}")),
        }
        destinations.insert(name.to_string(), entry);
    }
    json!({"pending": watch.outbox_pending(), "destinations": destinations})
}

/// Prometheus text. Source gauges are set from the health snapshot at scrape
/// time, so "age of the last event" is current when read; the outbox depth
/// and pending approvals from the store's live counts.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let now = chrono::Utc::now();
    for (name, source) in state.health.snapshot() {
        let up = f64::from(u8::from(source.status == Status::Up));
        metrics::gauge!("fanin_source_up", "source" => name.clone()).set(up);
        metrics::gauge!("fanin_source_reconnects", "source" => name.clone()).set(source.reconnects as f64);
        if let Some(at) = source.last_event_at {
            let age = (now - at).num_milliseconds() as f64 / 1000.0;
            metrics::gauge!("fanin_source_last_event_age_seconds", "source" => name.clone()).set(age);
        }
        if let Some(at) = source.last_poll_at {
            let age = (now - at).num_milliseconds() as f64 / 1000.0;
            metrics::gauge!("fanin_source_last_poll_age_seconds", "source" => name).set(age);
        }
    }
    let watch = state.store.watch();
    metrics::gauge!("fanin_outbox_depth").set(watch.outbox_pending() as f64);
    metrics::gauge!("fanin_runs_pending_approval").set(watch.pending_approvals() as f64);
    let failing = f64::from(u8::from(watch.write_state() != WriteState::Ok));
    metrics::gauge!("fanin_store_writes_failing").set(failing);
    let body = state.metrics.as_ref().map(|m| m.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
