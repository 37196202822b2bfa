//! `POST /pair`: trades a one-time pairing code for a bearer token.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};

use super::limits::{client_ip, retry_after_secs};
use super::{auth, ApiError, AppState};

pub async fn pair(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let client = format!("ip:{}", client_ip(peer, &headers, &state.forwarding));
    let now = Utc::now();
    state.pair_limit.check(&client).map_err(|wait| ApiError::rate_limited(retry_after_secs(wait)))?;
    state
        .lockouts
        .check(&client, now)
        .map_err(|left| ApiError::rate_limited(retry_after_secs(left)).with("error", "locked_out"))?;
    let code = headers.get("x-pairing-code").and_then(|v| v.to_str().ok()).unwrap_or("");
    let token = match code.is_empty() {
        true => None,
        false => {
            auth::pair(state.dispatcher.store().as_ref(), code, now).await.map_err(|_| ApiError::store_unavailable())?
        }
    };
    match token {
        Some(token) => {
            state.lockouts.succeed(&client);
            tracing::info!(client, "paired a new token");
            Ok(Json(json!({"paired": true, "token": token})))
        }
        None => {
            if state.lockouts.fail(&client, now).is_some() {
                tracing::warn!(client, "locked out after repeated wrong pairing codes");
            }
            Err(ApiError::new(StatusCode::FORBIDDEN, "invalid_pairing_code"))
        }
    }
}
