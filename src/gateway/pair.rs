//! `POST /pair`: trades a one-time pairing code for a bearer token. The
//! rules (a live code always pairs; wrong codes are charged to every live
//! code's budget, and a client's repeated wrong codes get 429) are
//! [`crate::operations::pairing::Pairing`]'s.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::http::limits::{client_ip, retry_after_secs};
use crate::operations::pairing::PairingOutcome;

pub async fn pair(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let client = format!("ip:{}", client_ip(peer, &headers, state.callers.forwarding()));
    let code = headers.get("x-pairing-code").and_then(|v| v.to_str().ok()).unwrap_or("");
    let outcome = state
        .pairing
        .attempt(state.store.as_ref(), &client, code, Utc::now())
        .await
        .map_err(|_| ApiError::store_unavailable())?;
    match outcome {
        PairingOutcome::Paired(token) => {
            tracing::info!(client, "paired a new token");
            Ok(Json(json!({"paired": true, "token": token})))
        }
        PairingOutcome::Refused { locked_out: Some(left) } => {
            Err(ApiError::rate_limited(retry_after_secs(left)).with("error", "locked_out"))
        }
        PairingOutcome::Refused { locked_out: None } => {
            // The rate counts wrong codes only: a live code is never held up.
            state.pair_limit.check(&client).map_err(|wait| ApiError::rate_limited(retry_after_secs(wait)))?;
            Err(ApiError::new(StatusCode::FORBIDDEN, "invalid_pairing_code"))
        }
    }
}
