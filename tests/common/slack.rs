//! Slack's side of the Events API for whole-daemon tests: requests signed
//! exactly as Slack signs them (`v0=` + hex HMAC-SHA256 of
//! `v0:<timestamp>:<body>` under the app's signing secret), with the
//! headers Slack sends, so a test can also send them wrong on purpose.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `X-Slack-Signature` for `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// The headers of a request Slack sends now.
pub fn signed(secret: &str, body: &str) -> Vec<(String, String)> {
    signed_at(secret, chrono::Utc::now().timestamp(), body)
}

/// The headers of a request Slack sent at `timestamp`.
pub fn signed_at(secret: &str, timestamp: i64, body: &str) -> Vec<(String, String)> {
    vec![
        ("x-slack-request-timestamp".into(), timestamp.to_string()),
        ("x-slack-signature".into(), signature(secret, timestamp, body)),
    ]
}

/// An `event_callback` body carrying a message `event`, as Slack posts it.
pub fn message_callback(event_id: &str, text: &str) -> String {
    serde_json::json!({
        "token": "verification-token-unused",
        "team_id": "T0001",
        "api_app_id": "A0001",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1_700_000_000,
        "event": {
            "type": "message",
            "user": "U0001",
            "text": text,
            "ts": "1700000000.000100",
            "channel": "C0001",
            "team": "T0001",
            "channel_type": "channel"
        }
    })
    .to_string()
}
