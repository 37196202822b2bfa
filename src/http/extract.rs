//! The extractors HTTP handlers use where axum's would answer a bad request
//! in plain text: the same extraction, but a refusal is an [`ApiError`] like
//! every other error fanin produces.
//!
//! - [`Query`]: `400 invalid_query` (`?limit=-1`, a repeated `wait`), with
//!   axum's reason as `detail`.
//! - [`Path`]: `400 invalid_path` for a segment that does not decode or
//!   parse.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::FromRequestParts;
use axum::http::StatusCode;

use super::ApiError;

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
