//! fanin's HTTP error replies: a precise status and a JSON body
//! `{"error": "<code>", …}`; 429 carries `Retry-After`. The HTTP source and
//! the gateway answer every refusal with one.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) body: Map<String, Value>,
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str) -> ApiError {
        let mut body = Map::new();
        body.insert("error".into(), json!(code));
        ApiError { status, body, retry_after: None }
    }

    /// Adds a field to the body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.body.insert(key.into(), value.into());
        self
    }

    /// Every authentication failure looks the same, whichever check failed.
    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized")
    }

    pub fn rate_limited(retry_after_secs: u64) -> ApiError {
        let mut e =
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited").with("retry_after_secs", retry_after_secs);
        e.retry_after = Some(retry_after_secs);
        e
    }

    pub fn store_unavailable() -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The fields of the refusal (`error` and the rest), for an answer
    /// other than JSON.
    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(Value::Object(self.body))).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
