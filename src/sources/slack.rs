//! The Slack source: Slack's Events API posts to
//! `POST /channels/slack/<alias>/events` (docs/operations.md, "Slack").
//!
//! Every request is proven before anything else is read into an event:
//! `X-Slack-Request-Timestamp` within five minutes of now (a captured
//! request cannot be replayed later) and `X-Slack-Signature`, the HMAC of
//! the timestamp and the raw body under the app's signing secret, compared
//! in constant time. Then `url_verification` answers its challenge and an
//! `event_callback` dispatches its `event`, deduplicated by `event_id`, so
//! Slack's retries (it retries whatever was not answered 200 within 3 s)
//! start nothing twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::pushed::{self, Pushed};
use super::SourceContext;
use crate::event::Source;
use crate::http::extract::Path;
use crate::http::ApiError;

/// How far a request's timestamp may be from now, either way, as Slack
/// advises.
pub const MAX_SKEW_SECS: i64 = 300;

struct Slack {
    pushed: Pushed,
    /// Signing secrets of the enabled instances, by alias.
    secrets: BTreeMap<String, String>,
}

/// The route for every enabled instance, their signing secrets read now: an
/// unset variable stops the daemon before it serves, naming the key.
pub fn routes(ctx: &SourceContext) -> Result<Router, String> {
    let pushed = Pushed::new(ctx);
    let mut secrets = BTreeMap::new();
    for (alias, c) in ctx.config.channels_config.slack.iter().filter(|(_, c)| c.enabled) {
        let key = format!("channels_config.slack.{alias}.signing_secret");
        secrets.insert(alias.clone(), crate::config::secret(c.signing_secret(), &key)?);
        pushed.serving(&format!("slack:{alias}"));
    }
    let state = Arc::new(Slack { pushed, secrets });
    Ok(Router::new().route("/channels/slack/{alias}/events", post(events)).with_state(state))
}

async fn events(
    State(slack): State<Arc<Slack>>,
    Path(alias): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(secret) = slack.secrets.get(&alias) else {
        return Err(pushed::unknown("slack", &alias));
    };
    let instance = format!("slack:{alias}");
    let bytes = slack.pushed.body(&headers, body).await?;
    verify(secret.as_bytes(), &headers, &bytes, chrono::Utc::now().timestamp())
        .map_err(|why| pushed::refused(&instance, why))?;
    let request = slack.pushed.json(&bytes)?;
    match request["type"].as_str().unwrap_or_default() {
        "url_verification" => {
            let challenge = request["challenge"].as_str().unwrap_or_default();
            Ok(Json(json!({"challenge": challenge})).into_response())
        }
        "event_callback" => {
            let Some(event_id) = request["event_id"].as_str().filter(|id| !id.is_empty()) else {
                return Err(invalid("an event_callback without event_id"));
            };
            let Some(event) = request.get("event").filter(|event| event.is_object()) else {
                return Err(invalid("an event_callback without its event object"));
            };
            slack.pushed.deliver(Source::Slack, &instance, event.clone(), event_id).await
        }
        // app_rate_limited and any type added later: acknowledged, as
        // Slack expects, with nothing to start.
        other => Ok(slack.pushed.ignored(other)),
    }
}

fn invalid(detail: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_slack_request").with("detail", detail)
}

/// Whether the request is Slack's, signed with `secret` at most
/// [`MAX_SKEW_SECS`] from `now` (Unix seconds); else why not, as the
/// refusal metric counts it.
pub fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), &'static str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let timestamp = header("x-slack-request-timestamp").ok_or("missing_timestamp")?;
    let signature = header("x-slack-signature").ok_or("missing_signature")?;
    let at: i64 = timestamp.trim().parse().map_err(|_| "bad_timestamp")?;
    if now.abs_diff(at) > MAX_SKEW_SECS as u64 {
        return Err("stale_timestamp");
    }
    let presented = signature.strip_prefix("v0=").and_then(|hex| hex::decode(hex).ok()).ok_or("bad_signature")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&presented).map_err(|_| "bad_signature")
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    /// Slack's own worked example (api.slack.com, "Verifying requests").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn headers(timestamp: Option<&str>, signature: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(t) = timestamp {
            headers.insert("x-slack-request-timestamp", HeaderValue::from_str(t).unwrap());
        }
        if let Some(s) = signature {
            headers.insert("x-slack-signature", HeaderValue::from_str(s).unwrap());
        }
        headers
    }

    #[test]
    fn slacks_worked_example_verifies() {
        let now = TIMESTAMP.parse::<i64>().unwrap() + 10;
        assert_eq!(verify(SECRET.as_bytes(), &headers(Some(TIMESTAMP), Some(SIGNATURE)), BODY.as_bytes(), now), Ok(()));
    }

    #[test]
    fn every_way_of_failing_is_named() {
        let at: i64 = TIMESTAMP.parse().unwrap();
        let body = BODY.as_bytes();
        let secret = SECRET.as_bytes();
        let tampered = format!("{BODY}x");
        let rows = [
            (secret, headers(None, Some(SIGNATURE)), body, at, "missing_timestamp"),
            (secret, headers(Some(TIMESTAMP), None), body, at, "missing_signature"),
            (secret, headers(Some("soon"), Some(SIGNATURE)), body, at, "bad_timestamp"),
            (secret, headers(Some(TIMESTAMP), Some(SIGNATURE)), body, at + MAX_SKEW_SECS + 1, "stale_timestamp"),
            (secret, headers(Some(TIMESTAMP), Some(SIGNATURE)), body, at - MAX_SKEW_SECS - 1, "stale_timestamp"),
            (secret, headers(Some(TIMESTAMP), Some(SIGNATURE)), tampered.as_bytes(), at, "bad_signature"),
            (b"another secret".as_slice(), headers(Some(TIMESTAMP), Some(SIGNATURE)), body, at, "bad_signature"),
            (secret, headers(Some(TIMESTAMP), Some(&SIGNATURE.replace("v0=", "v1="))), body, at, "bad_signature"),
            (secret, headers(Some(TIMESTAMP), Some("v0=not hex")), body, at, "bad_signature"),
        ];
        for (secret, headers, body, now, want) in rows {
            assert_eq!(verify(secret, &headers, body, now), Err(want), "{want}");
        }
        let edge = headers(Some(TIMESTAMP), Some(SIGNATURE));
        assert_eq!(verify(secret, &edge, body, at + MAX_SKEW_SECS), Ok(()));
        assert_eq!(verify(secret, &edge, body, at - MAX_SKEW_SECS), Ok(()));
    }
}
