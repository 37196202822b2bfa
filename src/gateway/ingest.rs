//! The HTTP sources: `POST /sop/{*rest}`, `POST /webhook`, and the
//! peripheral bridge `POST /peripheral/{board}/{signal}`.
//!
//! Checks run in this order — rate limit, bearer, secret, body
//! size and JSON, idempotency key — then the event goes to the dispatcher,
//! and the reply is written only after its commit.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};

use super::extract::Path;
use super::limits::{client_ip, retry_after_secs, validate_idempotency_key};
use super::{auth, ApiError, AppState};
use crate::config::GatewayConfig;
use crate::dispatch::DispatchReport;
use crate::envelope::legacy;
use crate::envelope::session::Continuation;
use crate::event::{self, Event, IdempotencyKey, JsonError, Payload, Request, Source, TooDeep};

pub async fn sop(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Matching, the idempotency scope and the reply see the path as text.
    let path = super::path::text(uri.path());
    let request = super::request::of(&uri, &headers);
    ingest(&state, Source::SopWebhook, &path, &path, Some(request), peer, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn webhook(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = super::request::of(&uri, &headers);
    ingest(&state, Source::Webhook, "/webhook", "/webhook", Some(request), peer, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Rate limit, then bearer and secret, as every authenticated ingest route
/// checks them. Returns the caller's key: `token:<prefix>` for a valid
/// bearer, else `ip:<address>`; rate limits count per key.
pub async fn admit_caller(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<String, ApiError> {
    let token = match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        Some(value) => {
            auth::verify_bearer(state.store.as_ref(), value).await.map_err(|_| ApiError::store_unavailable())?
        }
        None => None,
    };
    let authenticated = token.is_some();
    let key = match token {
        Some(t) => t.subject,
        None => format!("ip:{}", client_ip(peer, headers, &state.forwarding)),
    };
    state.webhook_limit.check(&key).map_err(|wait| ApiError::rate_limited(retry_after_secs(wait)))?;
    if state.config.require_pairing && !authenticated {
        return Err(ApiError::unauthorized());
    }
    if !state.config.webhook_secret.is_empty() {
        let presented = headers.get("x-webhook-secret").and_then(|v| v.to_str().ok()).unwrap_or("");
        if !auth::secret_matches(presented, &state.config.webhook_secret) {
            return Err(ApiError::unauthorized());
        }
    }
    Ok(key)
}

/// Reads the body within `max_body_bytes` (413) and parses it as JSON
/// (400 `invalid_json`) nested at most `max_payload_depth` deep (400
/// `payload_too_deep`). An empty body is JSON `null`.
pub async fn read_json(body: Body, headers: &HeaderMap, config: &GatewayConfig) -> Result<Payload, ApiError> {
    let bytes = read_body(body, headers, config.max_body_bytes).await?;
    json_body(&bytes, config.max_payload_depth)
}

/// A body that must be JSON, as [`read_json`] takes it.
fn json_body(bytes: &[u8], max_depth: usize) -> Result<Payload, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Payload::Json(Value::Null));
    }
    event::parse_json(bytes, max_depth).map(Payload::Json).map_err(|e| match e {
        JsonError::TooDeep(too_deep) => refused_as_too_deep(too_deep),
        JsonError::Invalid(e) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_json").with("detail", e.to_string()),
    })
}

fn refused_as_too_deep(too_deep: TooDeep) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, TooDeep::CODE)
        .with("max_payload_depth", too_deep.limit)
        .with("detail", too_deep.to_string())
}

/// Reads the body within `max_body_bytes` (413).
async fn read_body(body: Body, headers: &HeaderMap, max: usize) -> Result<axum::body::Bytes, ApiError> {
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").with("max_body_bytes", max);
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, max).await.map_err(|_| too_large())
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
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((board, signal)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = super::path::text(uri.path());
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
    state: &AppState,
    source: Source,
    path: &str,
    topic: &str,
    request: Option<Request>,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = admit_caller(state, peer, headers).await?;
    if source != Source::Webhook && !state.auth_configured() {
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
    let mut event = Event::new(crate::ids::fresh(), source, topic, payload, Utc::now());
    event.client = Some(caller);
    event.idempotency = idempotency.clone();
    event.request = request;

    if source == Source::Webhook && !state.auth_configured() {
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
async fn route_to_agent(state: &AppState, event: &Event) -> Result<Response, ApiError> {
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

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;
    use crate::proptest_support::{config, hostile_text, json_value};

    /// `read_json` on `bytes`, with `Content-Length` when given: the payload,
    /// or the status and `error` code of the refusal.
    fn read(bytes: Vec<u8>, declared: Option<u64>, max: usize) -> Result<Payload, (StatusCode, String)> {
        let mut headers = HeaderMap::new();
        if let Some(length) = declared {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let config = GatewayConfig { max_body_bytes: max, ..GatewayConfig::default() };
            match read_json(Body::from(bytes), &headers, &config).await {
                Ok(payload) => Ok(payload),
                Err(error) => {
                    let response = error.into_response();
                    let status = response.status();
                    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
                    let body: Value = serde_json::from_slice(&body).unwrap();
                    Err((status, body["error"].as_str().unwrap().to_string()))
                }
            }
        })
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            json_value(4, 24).prop_map(|v| serde_json::to_vec(&v).unwrap()),
            json_value(4, 24).prop_map(|v| serde_json::to_vec_pretty(&v).unwrap()),
            hostile_text(40).prop_map(String::into_bytes),
            prop::collection::vec(prop::sample::select(vec![b' ', b'\t', b'\n', b'\r', 0x0c]), 0..8),
            prop::collection::vec(any::<u8>(), 0..64),
        ]
    }

    proptest! {
        #![proptest_config(config(256))]

        /// A webhook body is JSON (blank is `null`), or 413 past the limit
        /// (declared or actual), or 400 `invalid_json`; never anything else.
        #[test]
        fn a_body_is_json_or_refused_with_the_right_code(
            bytes in body(),
            max in 0usize..400,
            declared in prop::option::of(prop_oneof![Just(None), (0u64..500).prop_map(Some)]),
        ) {
            let declared = declared.flatten();
            let got = read(bytes.clone(), declared, max);
            let too_large = bytes.len() > max || declared.is_some_and(|n| n > max as u64);
            let want = if too_large {
                Err((StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".to_string()))
            } else if bytes.iter().all(u8::is_ascii_whitespace) {
                Ok(Payload::Json(Value::Null))
            } else {
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(value) => Ok(Payload::Json(value)),
                    Err(_) => Err((StatusCode::BAD_REQUEST, "invalid_json".to_string())),
                }
            };
            prop_assert_eq!(got, want);
        }

        #[test]
        fn a_json_body_arrives_as_sent(value in json_value(5, 48)) {
            let bytes = serde_json::to_vec(&value).unwrap();
            prop_assert_eq!(read(bytes, None, 1 << 20), Ok(Payload::Json(value)));
        }
    }
}
