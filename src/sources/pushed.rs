//! What the routes a chat service posts its events to share (Slack's Events
//! API, Telegram's webhook): the request's body within the gateway's limits,
//! a refusal that stores nothing and is counted, and the dispatch whose 200
//! is written only after its commit, so the service retries anything fanin
//! did not keep.
//!
//! These routes carry no bearer token: the service proves itself with its
//! own credential (Slack's signature, Telegram's secret token), checked by
//! each route before anything else.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};

use super::health::{SourcesHealth, Status};
use super::SourceContext;
use crate::dispatch::{DispatchReport, Dispatcher};
use crate::event::{Event, IdempotencyKey, Payload, Source};
use crate::http::body::{json_body, read_body};
use crate::http::ApiError;

/// What a pushed route needs of the daemon.
#[derive(Clone)]
pub struct Pushed {
    dispatcher: Arc<Dispatcher>,
    health: Arc<SourcesHealth>,
    max_body_bytes: usize,
    max_payload_depth: usize,
}

impl Pushed {
    pub fn new(ctx: &SourceContext) -> Pushed {
        Pushed {
            dispatcher: ctx.dispatcher.clone(),
            health: ctx.health.clone(),
            max_body_bytes: ctx.config.gateway.max_body_bytes,
            max_payload_depth: ctx.config.gateway.max_payload_depth,
        }
    }

    /// An instance served by the gateway's listener hears as long as the
    /// gateway serves.
    pub fn serving(&self, instance: &str) {
        self.health.set_status(instance, Status::Up, None);
    }

    /// The raw body, within `max_body_bytes` (413): a signature covers the
    /// bytes as sent.
    pub async fn body(&self, headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, ApiError> {
        read_body(body, headers, self.max_body_bytes).await
    }

    /// The body as JSON nested at most `max_payload_depth` deep (400).
    pub fn json(&self, bytes: &[u8]) -> Result<Value, ApiError> {
        match json_body(bytes, self.max_payload_depth)? {
            Payload::Json(value) => Ok(value),
            Payload::Text(_) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_json")),
        }
    }

    /// Dispatches `payload` as an event of `instance` (`slack:team`) on
    /// topic `<kind>/<alias>`, deduplicated by the service's own id `key`.
    /// 200 once the outcome is durable (a repeat of `key` is 200 with
    /// nothing new); 503 when the store fails, so the service retries.
    pub async fn deliver(
        &self,
        source: Source,
        instance: &str,
        payload: Value,
        key: &str,
    ) -> Result<Response, ApiError> {
        let topic = instance.replacen(':', "/", 1);
        let mut event = Event::new(crate::ids::fresh(), source, topic, Payload::Json(payload), Utc::now());
        event.client = Some(instance.to_string());
        event.idempotency = Some(IdempotencyKey::of_source(instance, key));
        let at = event.received_at;
        let report = self.dispatcher.dispatch(event).await.map_err(|e| {
            tracing::error!(source = %instance, error = %e, "dispatch failed; event not acknowledged");
            ApiError::store_unavailable()
        })?;
        self.health.event_seen(instance, at);
        metrics::counter!("fanin_source_events_total", "source" => instance.to_string()).increment(1);
        let reply = match report {
            DispatchReport::Accepted { event_id, outcomes } => {
                let mut reply = crate::dispatch::dispatcher::summary(&outcomes);
                reply["status"] = json!("accepted");
                reply["event_id"] = json!(event_id);
                reply
            }
            DispatchReport::Duplicate { .. } => json!({"status": "duplicate"}),
        };
        Ok(Json(reply).into_response())
    }

    /// A 200 for what the service sent that starts nothing by design.
    pub fn ignored(&self, what: &str) -> Response {
        Json(json!({"status": "ignored", "type": what})).into_response()
    }
}

/// A request that did not prove it comes from the service: 401, nothing
/// read further, counted by `why` (`bad_signature`, `stale_timestamp`, …)
/// so an operator sees a misconfigured secret or a probe.
pub fn refused(instance: &str, why: &'static str) -> ApiError {
    metrics::counter!("fanin_source_requests_refused_total", "source" => instance.to_string(), "reason" => why)
        .increment(1);
    tracing::debug!(source = %instance, reason = why, "request refused");
    ApiError::unauthorized()
}

/// An alias no enabled instance of this kind has (or one in the other
/// Telegram mode): 404, so a wrong Request URL is told apart from a wrong
/// secret.
pub fn unknown(kind: &str, alias: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unknown_channel").with("channel", kind).with("alias", alias)
}
