//! The normalized event every source hands to the dispatcher.
//!
//! Sources only receive and normalize (DESIGN §1): whatever arrived — an HTTP
//! body, an MQTT publish, a cron fire, a serial line — becomes one `Event`
//! with a source, a topic and a payload. Matching never looks at anything
//! else, which is what keeps matching identical across sources.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where an event entered. `Webhook` and `SopWebhook` both match webhook
/// triggers; they differ only in the reply contract of their routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Webhook,
    SopWebhook,
    Mqtt,
    Cron,
    Peripheral,
    Manual,
}

/// The trigger `type` of SOP.toml an event of a source can match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerType {
    Webhook,
    Mqtt,
    Cron,
    Peripheral,
    Manual,
}

impl Source {
    pub fn trigger_type(self) -> TriggerType {
        match self {
            Source::Webhook | Source::SopWebhook => TriggerType::Webhook,
            Source::Mqtt => TriggerType::Mqtt,
            Source::Cron => TriggerType::Cron,
            Source::Peripheral => TriggerType::Peripheral,
            Source::Manual => TriggerType::Manual,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::SopWebhook => "sop_webhook",
            Source::Mqtt => "mqtt",
            Source::Cron => "cron",
            Source::Peripheral => "peripheral",
            Source::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Some(match s {
            "webhook" => Source::Webhook,
            "sop_webhook" => Source::SopWebhook,
            "mqtt" => Source::Mqtt,
            "cron" => Source::Cron,
            "peripheral" => Source::Peripheral,
            "manual" => Source::Manual,
            _ => return None,
        })
    }
}

impl TriggerType {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerType::Webhook => "webhook",
            TriggerType::Mqtt => "mqtt",
            TriggerType::Cron => "cron",
            TriggerType::Peripheral => "peripheral",
            TriggerType::Manual => "manual",
        }
    }
}

/// An event's body: parsed JSON when it was JSON, else the text as received.
/// Conditions with a `$` path are false on `Text` (DESIGN §3).
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    Json(Value),
    Text(String),
}

impl Payload {
    /// Parses bytes as JSON when they are JSON, else keeps them as (lossy) text.
    pub fn from_bytes(bytes: &[u8]) -> Payload {
        match serde_json::from_slice(bytes) {
            Ok(v) => Payload::Json(v),
            Err(_) => Payload::Text(String::from_utf8_lossy(bytes).into_owned()),
        }
    }

    pub fn json(&self) -> Option<&Value> {
        match self {
            Payload::Json(v) => Some(v),
            Payload::Text(_) => None,
        }
    }

    /// The payload as a JSON value for storage and envelopes: text becomes a
    /// JSON string.
    pub fn to_value(&self) -> Value {
        match self {
            Payload::Json(v) => v.clone(),
            Payload::Text(t) => Value::String(t.clone()),
        }
    }
}

/// One normalized event.
#[derive(Clone, Debug)]
pub struct Event {
    pub id: String,
    pub source: Source,
    /// webhook: the request path; mqtt: the message topic; cron: the
    /// expression; peripheral: `board/signal`; manual: the SOP name.
    pub topic: String,
    /// Cron only: the IANA timezone the expression fired in. `None` on a cron
    /// event matches the expression in every timezone (used by `explain`).
    pub timezone: Option<String>,
    pub payload: Payload,
    pub received_at: DateTime<Utc>,
    /// Who sent it: a token subject, a peer address, `cli`, a broker client.
    pub client: Option<String>,
    /// `X-Idempotency-Key` with the endpoint path it is namespaced by.
    pub idempotency: Option<IdempotencyKey>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The endpoint path the key is namespaced by (`/webhook`, `/sop/deploy`).
    pub scope: String,
    pub key: String,
}

impl Event {
    pub fn new(source: Source, topic: impl Into<String>, payload: Payload, received_at: DateTime<Utc>) -> Event {
        Event {
            id: uuid::Uuid::now_v7().to_string(),
            source,
            topic: topic.into(),
            timezone: None,
            payload,
            received_at,
            client: None,
            idempotency: None,
        }
    }
}

/// A payload as stored and audited: unchanged up to `cap` bytes of JSON,
/// else a marker with its size and a preview cut at a character boundary.
/// Conditions always saw the whole payload before this.
pub fn cap_value(value: Value, cap: usize) -> Value {
    let text = match &value {
        Value::String(s) if s.len() <= cap => return value,
        Value::String(s) => s.clone(),
        _ if fits_as_json(&value, cap) => return value,
        _ => value.to_string(),
    };
    let mut end = cap.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    serde_json::json!({"truncated": true, "bytes": text.len(), "preview": &text[..end]})
}

/// Whether `value` written as JSON takes at most `cap` bytes. Counts
/// instead of writing the text out, and stops at the first byte past `cap`:
/// every event that matches pays this, almost always for a small payload.
fn fits_as_json(value: &Value, cap: usize) -> bool {
    struct Budget(usize);
    impl std::io::Write for Budget {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.checked_sub(bytes.len()).ok_or(std::io::ErrorKind::FileTooLarge)?;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Budget(cap), value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_parse_as_json_or_stay_text() {
        assert_eq!(Payload::from_bytes(br#"{"a":1}"#), Payload::Json(json!({"a": 1})));
        assert_eq!(Payload::from_bytes(b"42"), Payload::Json(json!(42)));
        assert_eq!(Payload::from_bytes(b"on"), Payload::Text("on".into()));
        assert_eq!(Payload::from_bytes(&[0xff, b'a']), Payload::Text("\u{fffd}a".into()));
    }

    #[test]
    fn capping_keeps_small_payloads_and_marks_large_ones() {
        assert_eq!(cap_value(json!({"a": 1}), 100), json!({"a": 1}));
        let capped = cap_value(json!({"text": "x".repeat(50)}), 10);
        assert_eq!(capped["truncated"], json!(true));
        assert_eq!(capped["preview"].as_str().unwrap().len(), 10);
        // The cap is on the JSON text: exactly at it is kept, a byte more is not.
        let value = json!({"a": "bc"});
        let len = value.to_string().len();
        assert_eq!(cap_value(value.clone(), len), value);
        assert_eq!(cap_value(value.clone(), len - 1)["truncated"], json!(true));
        // Never cut inside a character.
        let capped = cap_value(json!("ééééé"), 3);
        assert_eq!(capped["preview"], json!("é"));
    }

    mod props {
        use proptest::prelude::*;

        use super::*;
        use crate::proptest_support::{config, hostile_text, json_value};

        /// Bytes as sources receive them: JSON, nearly JSON, text, garbage.
        fn body() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                json_value(4, 24).prop_map(|v| serde_json::to_vec(&v).unwrap()),
                json_value(3, 12).prop_map(|v| {
                    let mut text = serde_json::to_vec(&v).unwrap();
                    text.truncate(text.len() / 2);
                    text
                }),
                hostile_text(40).prop_map(String::into_bytes),
                prop::collection::vec(any::<u8>(), 0..64),
            ]
        }

        proptest! {
            #![proptest_config(config(512))]

            /// Every body is a payload: JSON exactly when it parses, else its
            /// text; and a payload stored as JSON reads back the same.
            #[test]
            fn any_bytes_are_json_or_their_text(bytes in body()) {
                match Payload::from_bytes(&bytes) {
                    Payload::Json(value) => {
                        prop_assert_eq!(Some(value.clone()), serde_json::from_slice::<Value>(&bytes).ok());
                        let stored = serde_json::to_vec(&value).unwrap();
                        prop_assert_eq!(serde_json::from_slice::<Value>(&stored).unwrap(), value);
                    }
                    Payload::Text(text) => {
                        prop_assert!(serde_json::from_slice::<Value>(&bytes).is_err());
                        prop_assert_eq!(text, String::from_utf8_lossy(&bytes).into_owned());
                    }
                }
            }

            #[test]
            fn json_payloads_round_trip_through_their_bytes(value in json_value(5, 48)) {
                let payload = Payload::from_bytes(&serde_json::to_vec(&value).unwrap());
                prop_assert_eq!(payload.to_value(), value.clone());
                prop_assert_eq!(payload, Payload::Json(value));
            }

            /// Capping keeps what fits and otherwise says how big it was,
            /// with the longest preview that fits, cut between characters.
            #[test]
            fn capping_keeps_what_fits_and_previews_the_rest(value in json_value(4, 24), cap in 0usize..300) {
                let text = match &value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let capped = cap_value(value.clone(), cap);
                if text.len() <= cap {
                    prop_assert_eq!(capped, value);
                } else {
                    prop_assert_eq!(&capped["truncated"], &json!(true));
                    prop_assert_eq!(&capped["bytes"], &json!(text.len()));
                    let preview = capped["preview"].as_str().unwrap();
                    prop_assert!(text.starts_with(preview) && preview.len() <= cap);
                    prop_assert!(cap - preview.len() < text[preview.len()..].chars().next().map_or(1, char::len_utf8));
                }
            }
        }
    }
}
