//! The extractors gateway handlers use where axum's would answer a bad
//! request in plain text: the same extraction, but a refusal is an
//! [`ApiError`] like every other error fanin produces.
//!
//! - [`Query`]: `400 invalid_query` (`?limit=-1`, a repeated `wait`), with
//!   axum's reason as `detail`.
//! - [`Path`]: `400 invalid_path` for a segment that does not decode or
//!   parse.
//!
//! And [`AdminAccess`], the `/admin` access rule as an extractor, so every
//! admin handler states the rule by taking it, and none can forget it.

use std::net::SocketAddr;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use super::limits::client_ip;
use super::{auth, ApiError, AppState};

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query").with("detail", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        match rejection {
            // A route declared a parameter its handler does not take: ours.
            PathRejection::MissingPathParams(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            other => ApiError::new(StatusCode::BAD_REQUEST, "invalid_path").with("detail", other.body_text()),
        }
    }
}

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
        let ip = client_ip(peer, &parts.headers, &state.forwarding);
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
