//! Request bodies as every HTTP route reads them: within `max_body_bytes`
//! (413, before reading when `Content-Length` says so), and JSON nested at
//! most `max_payload_depth` deep (400 `invalid_json` / `payload_too_deep`).

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use serde_json::Value;

use super::ApiError;
use crate::config::GatewayConfig;
use crate::event::{self, JsonError, Payload, TooDeep};

/// Reads the body within `max_body_bytes` (413) and parses it as JSON
/// (400 `invalid_json`) nested at most `max_payload_depth` deep (400
/// `payload_too_deep`). An empty body is JSON `null`.
pub async fn read_json(body: Body, headers: &HeaderMap, config: &GatewayConfig) -> Result<Payload, ApiError> {
    let bytes = read_body(body, headers, config.max_body_bytes).await?;
    json_body(&bytes, config.max_payload_depth)
}

/// A body that must be JSON, as [`read_json`] takes it.
pub fn json_body(bytes: &[u8], max_depth: usize) -> Result<Payload, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Payload::Json(Value::Null));
    }
    event::parse_json(bytes, max_depth).map(Payload::Json).map_err(|e| match e {
        JsonError::TooDeep(too_deep) => refused_as_too_deep(too_deep),
        JsonError::Invalid(e) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_json").with("detail", e.to_string()),
    })
}

pub fn refused_as_too_deep(too_deep: TooDeep) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, TooDeep::CODE)
        .with("max_payload_depth", too_deep.limit)
        .with("detail", too_deep.to_string())
}

/// Reads the body within `max_body_bytes` (413).
pub async fn read_body(body: Body, headers: &HeaderMap, max: usize) -> Result<axum::body::Bytes, ApiError> {
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").with("max_body_bytes", max);
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, max).await.map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use axum::response::IntoResponse;

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
