//! The HTTP source: `POST /sop/{*rest}`, `POST /webhook`, and the
//! peripheral bridge `POST /peripheral/{board}/{signal}`. Like every source
//! it receives and normalizes: who is calling, what they sent, the event;
//! matching, admission and the audit are the dispatcher's. The gateway's
//! listener serves its routes ([`routes`]) beside the admin API.
//!
//! Checks run in this order — rate limit, bearer, secret, body size and
//! JSON, idempotency key — then the event goes to the dispatcher, and the
//! reply is written only after its commit.

pub mod request;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};

use crate::config::GatewayConfig;
use crate::dispatch::{DispatchReport, Dispatcher};
use crate::envelope::legacy;
use crate::envelope::session::Continuation;
use crate::event::{self, Event, IdempotencyKey, Request, Source};
use crate::http::auth::Callers;
use crate::http::body::{json_body, read_body, refused_as_too_deep};
use crate::http::extract::Path;
use crate::http::limits::validate_idempotency_key;
use crate::http::ApiError;
use crate::sources::health::SourcesHealth;

/// The name `/ready` gives the listener of `/webhook` and `/sop/*`.
pub const SOURCE: &str = "webhook";

/// Where `/webhook` sends events no SOP matched.
pub struct AgentTarget {
    pub url: String,
    pub bearer_token: String,
    pub client: reqwest::Client,
}

/// What the HTTP source's handlers share.
pub struct HttpSource {
    pub config: GatewayConfig,
    pub dispatcher: Arc<Dispatcher>,
    /// Who is calling, and whether they may.
    pub callers: Arc<Callers>,
    pub agent: Option<AgentTarget>,
    /// The boards `/peripheral/{board}/…` accepts: those in `[peripherals]`.
    pub boards: BTreeSet<String>,
    /// Where the `webhook` source's last event is kept (`/ready`, the
    /// console's overview).
    pub health: Arc<SourcesHealth>,
}

type SourceState = Arc<HttpSource>;

/// The source's routes, its state applied, for the gateway to serve.
pub fn routes(source: SourceState) -> Router {
    Router::new()
        .route("/webhook", post(webhook))
        .route("/sop/{*rest}", post(sop))
        .route("/peripheral/{board}/{signal}", post(peripheral))
        .with_state(source)
}

pub async fn sop(
    State(state): State<SourceState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Matching, the idempotency scope and the reply see the path as text.
    let path = crate::http::path::text(uri.path());
    let request = request::of(&uri, &headers);
    ingest(&state, Source::SopWebhook, &path, &path, Some(request), peer, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn webhook(
    State(state): State<SourceState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = request::of(&uri, &headers);
    ingest(&state, Source::Webhook, "/webhook", "/webhook", Some(request), peer, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The `X-Idempotency-Key`, scoped by `caller` and the endpoint `path`, with
/// the fingerprint of `body`.
pub fn idempotency_key(
    headers: &HeaderMap,
    caller: &str,
    path: &str,
    body: &[u8],
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("x-idempotency-key") else {
        return Ok(None);
    };
    let invalid =
        |reason: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key").with("detail", reason);
    let key = value.to_str().map_err(|_| invalid("X-Idempotency-Key is not visible ASCII"))?;
    validate_idempotency_key(key).map_err(invalid)?;
    Ok(Some(IdempotencyKey::new(caller, path, key, body)))
}

/// `POST /peripheral/{board}/{signal}`: a bridge reports a board's signal.
/// The body is the value: JSON when it parses, else text. A signal no SOP
/// listens to is accepted with no runs (boards report everything; that is
/// not an error worth a retry).
pub async fn peripheral(
    State(state): State<SourceState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((board, signal)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = crate::http::path::text(uri.path());
    ingest(&state, Source::Peripheral, &path, &format!("{board}/{signal}"), None, peer, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// One ingest path for every HTTP source. `path` is the request path (the
/// idempotency scope and what the reply names); `topic` is what matching
/// sees (the path itself for webhooks, `board/signal` for peripherals);
/// `request` what of a webhook's request travels with its event.
#[allow(clippy::too_many_arguments)]
async fn ingest(
    state: &HttpSource,
    source: Source,
    path: &str,
    topic: &str,
    request: Option<Request>,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = state.callers.admit(peer, headers).await?;
    if source != Source::Webhook && !state.callers.auth_configured() {
        return Err(ApiError::unauthorized());
    }
    if source == Source::Peripheral {
        let board = topic.split('/').next().unwrap_or_default();
        if !state.boards.contains(board) {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_board").with("board", board));
        }
        let signal = &topic[board.len() + 1..];
        if !crate::sop::is_signal_name(signal) {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_signal").with("signal", signal));
        }
    }
    let bytes = read_body(body, headers, state.config.max_body_bytes).await?;
    let max_depth = state.config.max_payload_depth;
    let payload = match source {
        // A board's value: JSON when it is JSON, else its text.
        Source::Peripheral => event::parse_payload(bytes.trim_ascii(), max_depth).map_err(refused_as_too_deep)?,
        _ => json_body(&bytes, max_depth)?,
    };
    let idempotency = idempotency_key(headers, &caller, path, &bytes)?;
    let received_at = Utc::now();
    let mut event = Event::new(crate::ids::fresh(), source, topic, payload, received_at);
    event.client = Some(caller);
    event.idempotency = idempotency.clone();
    event.request = request;

    if source == Source::Webhook && !state.callers.auth_configured() {
        // Starting a run authorizes side effects: with no way to
        // authenticate, a request that would start one is refused.
        let mut matched = Vec::new();
        state.dispatcher.catalog().matching(&event, &mut matched);
        if !matched.is_empty() {
            return Err(ApiError::unauthorized());
        }
    }
    // Only `/webhook` hands an event nothing matched to the Agent; the other
    // routes need no copy of it after the dispatch.
    let for_agent = (source == Source::Webhook).then(|| event.clone());
    let report = state.dispatcher.dispatch(event).await.map_err(|e| {
        tracing::error!(error = %e, path, "dispatch failed; request not acknowledged");
        ApiError::store_unavailable()
    })?;
    if source != Source::Peripheral {
        state.health.event_seen(SOURCE, received_at);
    }
    match report {
        DispatchReport::Accepted { outcomes, event_id } if outcomes.is_empty() => match for_agent {
            Some(event) => route_to_agent(state, &event).await,
            None if source == Source::Peripheral => Ok(Json(accepted(&[], source, path, &event_id)).into_response()),
            None => Err(ApiError::new(StatusCode::NOT_FOUND, "no_matching_sop").with("path", path)),
        },
        DispatchReport::Accepted { event_id, outcomes } => {
            Ok(Json(accepted(&outcomes, source, path, &event_id)).into_response())
        }
        DispatchReport::Duplicate { mut response } => {
            if let Some(key) = idempotency.as_ref().filter(|key| !key.same_request(&response)) {
                return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
                    .with("idempotency_key", key.key.as_str())
                    .with("detail", "this key was already used for a request with a different body"));
            }
            if let Some(fields) = response.as_object_mut() {
                fields.remove(IdempotencyKey::FINGERPRINT_FIELD);
            }
            response["status"] = json!("duplicate");
            response["source"] = json!(source);
            response["path"] = json!(path);
            response["idempotency_key"] = json!(idempotency.map(|key| key.key));
            Ok(Json(response).into_response())
        }
    }
}

/// The 200 reply for a committed event.
fn accepted(outcomes: &[crate::dispatch::RunOutcome], source: Source, path: &str, event_id: &str) -> Value {
    let mut reply = crate::dispatch::dispatcher::summary(outcomes);
    reply["status"] = json!("accepted");
    reply["source"] = json!(source);
    reply["path"] = json!(path);
    reply["event_id"] = json!(event_id);
    reply
}

/// `/webhook` with no matching SOP: the event goes to the Agent as a legacy
/// envelope and its answer comes back.
async fn route_to_agent(state: &HttpSource, event: &Event) -> Result<Response, ApiError> {
    let Some(agent) = &state.agent else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no_matching_sop").with("path", "/webhook"));
    };
    let unavailable = || ApiError::new(StatusCode::BAD_GATEWAY, "agent_unavailable");
    // Nothing of the fallback is stored, so no storage cap bounds its session.
    let continuation = match event.payload.json() {
        Some(body) => Continuation::of_body(body, usize::MAX),
        None => Continuation::New,
    };
    let mut request = agent.client.post(&agent.url).json(&legacy::build(event, continuation.session()));
    if !agent.bearer_token.is_empty() {
        request = request.bearer_auth(&agent.bearer_token);
    }
    let response = request.send().await.map_err(|e| {
        tracing::warn!(error = %e, "agent unreachable");
        unavailable()
    })?;
    if !response.status().is_success() {
        tracing::warn!(status = %response.status(), "agent refused the event");
        return Err(unavailable().with("agent_status", response.status().as_u16()));
    }
    let text = response.text().await.map_err(|_| unavailable())?;
    let answer = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Json(json!({"status": "routed", "destination": "agent", "response": answer})).into_response())
}
