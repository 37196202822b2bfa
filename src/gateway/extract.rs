//! [`AdminAccess`], the `/admin` access rule as an extractor, so every
//! admin handler states the rule by taking it, and none can forget it.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use super::AppState;
pub use crate::http::extract::{Path, Query};
use crate::http::limits::client_ip;
use crate::http::{auth, ApiError};

/// The `/admin` access rule, checked by extracting it: the client (see
/// [`client_ip`]) is a loopback address, or, with `allow_remote_admin`, a
/// remote caller with a live bearer token. Its value is who is calling
/// (`admin:<address>`, or the token subject), which operations record as
/// who acted. Refusals: `403 forbidden` (remote, not allowed), `401
/// unauthorized` (remote without a live token), `503 store_unavailable`.
#[derive(Clone, Debug)]
pub struct AdminAccess {
    pub by: String,
}

impl FromRequestParts<AppState> for AdminAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<AdminAccess, ApiError> {
        // The accept loop puts the peer on every request; without it the
        // route is not served through it (ours).
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied() else {
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error"));
        };
        let ip = client_ip(peer, &parts.headers, state.callers.forwarding());
        if ip.is_loopback() {
            return Ok(AdminAccess { by: format!("admin:{ip}") });
        }
        if !state.config.allow_remote_admin {
            return Err(
                ApiError::new(StatusCode::FORBIDDEN, "forbidden").with("detail", "/admin is served to loopback only")
            );
        }
        let bearer = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        match auth::verify_bearer(state.store.as_ref(), bearer).await {
            Ok(Some(token)) => Ok(AdminAccess { by: token.subject }),
            Ok(None) => Err(ApiError::unauthorized()),
            Err(_) => Err(ApiError::store_unavailable()),
        }
    }
}
