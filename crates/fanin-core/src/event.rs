//! The normalized event every source hands to the dispatcher.
//!
//! Sources only receive and normalize (ARCHITECTURE.md): whatever arrived — an HTTP
//! body, an MQTT publish, a cron fire, a serial line — becomes one `Event`
//! with a source, a topic and a payload. Matching never looks at anything
//! else, which is what keeps matching identical across sources.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
    /// An inbox (IMAP): one event per new message.
    Email,
    /// The Slack Events API: one event per event callback.
    Slack,
    /// The Telegram Bot API: one event per update.
    Telegram,
    /// The Google Drive v3 changes feed: one event per change.
    GoogleDrive,
    /// A watched directory tree: one event per file change.
    Filesystem,
    /// An AMQP queue: one event per delivery.
    Amqp,
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
    /// ZeroClaw's `channel` trigger: email, slack, telegram.
    Channel,
    Drive,
    Filesystem,
    Amqp,
}

impl Source {
    pub fn trigger_type(self) -> TriggerType {
        match self {
            Source::Webhook | Source::SopWebhook => TriggerType::Webhook,
            Source::Mqtt => TriggerType::Mqtt,
            Source::Cron => TriggerType::Cron,
            Source::Peripheral => TriggerType::Peripheral,
            Source::Manual => TriggerType::Manual,
            Source::Email | Source::Slack | Source::Telegram => TriggerType::Channel,
            Source::GoogleDrive => TriggerType::Drive,
            Source::Filesystem => TriggerType::Filesystem,
            Source::Amqp => TriggerType::Amqp,
        }
    }

    /// Every source, for tables that must cover them all.
    pub const ALL: [Source; 12] = [
        Source::Webhook,
        Source::SopWebhook,
        Source::Mqtt,
        Source::Cron,
        Source::Peripheral,
        Source::Manual,
        Source::Email,
        Source::Slack,
        Source::Telegram,
        Source::GoogleDrive,
        Source::Filesystem,
        Source::Amqp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::SopWebhook => "sop_webhook",
            Source::Mqtt => "mqtt",
            Source::Cron => "cron",
            Source::Peripheral => "peripheral",
            Source::Manual => "manual",
            Source::Email => "email",
            Source::Slack => "slack",
            Source::Telegram => "telegram",
            Source::GoogleDrive => "google_drive",
            Source::Filesystem => "filesystem",
            Source::Amqp => "amqp",
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
            "email" => Source::Email,
            "slack" => Source::Slack,
            "telegram" => Source::Telegram,
            "google_drive" => Source::GoogleDrive,
            "filesystem" => Source::Filesystem,
            "amqp" => Source::Amqp,
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
            TriggerType::Channel => "channel",
            TriggerType::Drive => "drive",
            TriggerType::Filesystem => "filesystem",
            TriggerType::Amqp => "amqp",
        }
    }
}

/// An event's body: parsed JSON when it was JSON, else the text as received.
/// Conditions with a `$` path are false on `Text` (docs/configuration.md#trigger-conditions).
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    Json(Value),
    Text(String),
}

/// The nesting a payload may have when `[gateway] max_payload_depth` is not
/// set: arrays and objects inside each other, a scalar being depth 0.
pub const DEFAULT_MAX_PAYLOAD_DEPTH: usize = 64;

/// The highest `max_payload_depth` accepted. serde_json refuses to read back
/// JSON nested 128 deep, and fanin stores a payload inside envelopes and
/// audit records a few levels deeper than it arrived; this leaves that room
/// with a wide margin, so nothing a source accepted is unreadable later.
pub const MAX_PAYLOAD_DEPTH_LIMIT: usize = 100;

/// A payload whose arrays and objects nest deeper than the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the payload nests arrays and objects deeper than {limit} levels (max_payload_depth)")]
pub struct TooDeep {
    pub limit: usize,
}

impl TooDeep {
    /// The error code every source reports it under.
    pub const CODE: &'static str = "payload_too_deep";
}

/// Why bytes that had to be JSON were not taken.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error(transparent)]
    TooDeep(#[from] TooDeep),
    #[error("{0}")]
    Invalid(#[from] serde_json::Error),
}

/// Bytes that must be JSON (webhook bodies): the value, or why not. The
/// nesting is checked before parsing, so the parser never recurses deeper
/// than `max_depth`.
pub fn parse_json(bytes: &[u8], max_depth: usize) -> Result<Value, JsonError> {
    if nests_deeper_than(bytes, max_depth) {
        return Err(TooDeep { limit: max_depth }.into());
    }
    Ok(serde_json::from_slice(bytes)?)
}

/// Bytes that may be JSON (MQTT messages, peripheral values): JSON when
/// they parse as JSON, else the (lossy) text. Bytes nesting brackets deeper
/// than `max_depth` are refused even when they would not parse: telling
/// would take the very recursion the limit exists to avoid.
pub fn parse_payload(bytes: &[u8], max_depth: usize) -> Result<Payload, TooDeep> {
    match parse_json(bytes, max_depth) {
        Ok(value) => Ok(Payload::Json(value)),
        Err(JsonError::TooDeep(too_deep)) => Err(too_deep),
        Err(JsonError::Invalid(_)) => Ok(Payload::Text(String::from_utf8_lossy(bytes).into_owned())),
    }
}

/// Whether `[` and `{` outside JSON strings nest deeper than `limit`. One
/// pass in constant memory, stopping at the first level too many; for JSON
/// it is exactly the nesting of its arrays and objects.
pub fn nests_deeper_than(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in bytes {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

impl Payload {
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
    /// expression; peripheral: `board/signal`; manual: the SOP name;
    /// channels and Drive: `<kind>/<alias>`; filesystem: the file's
    /// absolute path; amqp: the delivery's routing key.
    pub topic: String,
    /// Cron only: the IANA timezone the expression fired in. `None` on a cron
    /// event matches the expression in every timezone (used by `explain`).
    pub timezone: Option<String>,
    pub payload: Payload,
    pub received_at: DateTime<Utc>,
    /// Who sent it: a token subject, a peer address, `cli`, a broker client.
    pub client: Option<String>,
    /// `X-Idempotency-Key`, scoped by caller and endpoint path.
    pub idempotency: Option<IdempotencyKey>,
    /// What travels beside the body: a webhook's query and headers; an
    /// AMQP delivery's properties, as `headers` (the envelope calls them
    /// `properties`). Matching never looks at it.
    pub request: Option<Request>,
}

/// What of a webhook's request travels with its event beside the body, as
/// Smart Office's webhook trigger passes it on: the query and the headers,
/// credentials withheld (`gateway::request` decides which). Matching never
/// looks at it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Decoded: name to value, a repeated name to the list of its values.
    pub query: Map<String, Value>,
    /// Lower-case names; a repeated header's values joined with `", "`.
    pub headers: Map<String, Value>,
}

impl Request {
    /// Each part capped as payloads are ([`cap_value`]): a part larger than
    /// `cap` bytes of JSON is the marker with its size and a preview.
    pub fn capped(self, cap: usize) -> Request {
        let cap_map = |map: Map<String, Value>| match cap_value(Value::Object(map), cap) {
            Value::Object(map) => map,
            _ => unreachable!("an object is capped to itself or to the marker, an object too"),
        };
        Request { query: cap_map(self.query), headers: cap_map(self.headers) }
    }
}

/// An `X-Idempotency-Key` as the dispatcher claims it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Who sent it and where: the caller (token subject, else client
    /// address) and the endpoint path. A key is only ever a retry of the
    /// same caller's request to the same endpoint, so one caller can never
    /// learn or suppress another's runs by guessing its keys.
    pub scope: String,
    pub key: String,
    /// SHA-256 (hex) of the raw request body: a retry sends the same bytes,
    /// and the same key on other bytes is a client bug to report, not a
    /// duplicate to swallow.
    pub fingerprint: String,
    /// How long the key is remembered when not the gateway's
    /// `idempotency_ttl_secs`: a source's own dedupe keys outlive HTTP retries.
    pub ttl: Option<chrono::Duration>,
}

/// How long a source's dedupe key (a Message-ID, a Slack `event_id`, a
/// Telegram `update_id`) is remembered: longer than any retry schedule of
/// the services that resend, and than a mailbox rebuilt under a new
/// UIDVALIDITY is usually re-read.
pub const SOURCE_DEDUPE_TTL_SECS: i64 = 7 * 24 * 3600;

impl IdempotencyKey {
    /// The field of a claim's stored response that keeps its fingerprint.
    pub const FINGERPRINT_FIELD: &'static str = "request_sha256";

    pub fn new(caller: &str, path: &str, key: &str, body: &[u8]) -> IdempotencyKey {
        use sha2::{Digest, Sha256};
        IdempotencyKey {
            scope: format!("{caller} {path}"),
            key: key.to_string(),
            fingerprint: hex::encode(Sha256::digest(body)),
            ttl: None,
        }
    }

    /// A source's own dedupe key, scoped to the source instance
    /// (`email:ops`): the same key is the same event, whatever bytes carried
    /// it the second time (a redelivered mail, a retried Slack callback).
    pub fn of_source(instance: &str, key: &str) -> IdempotencyKey {
        use sha2::{Digest, Sha256};
        IdempotencyKey {
            scope: format!("source {instance}"),
            key: key.to_string(),
            fingerprint: hex::encode(Sha256::digest(key.as_bytes())),
            ttl: Some(chrono::Duration::seconds(SOURCE_DEDUPE_TTL_SECS)),
        }
    }

    /// Whether `stored`, the response of an earlier claim on this key, was
    /// given to this same request. A response without a fingerprint (one
    /// stored before fingerprints were) counts as the same.
    pub fn same_request(&self, stored: &Value) -> bool {
        match stored.get(Self::FINGERPRINT_FIELD).and_then(Value::as_str) {
            Some(fingerprint) => fingerprint == self.fingerprint,
            None => true,
        }
    }
}

impl Event {
    /// An event as a source hands it over; `id` is fresh (the runtime
    /// makes ids, see the crate's front page).
    pub fn new(
        id: impl Into<String>,
        source: Source,
        topic: impl Into<String>,
        payload: Payload,
        received_at: DateTime<Utc>,
    ) -> Event {
        Event {
            id: id.into(),
            source,
            topic: topic.into(),
            timezone: None,
            payload,
            received_at,
            client: None,
            idempotency: None,
            request: None,
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
pub fn fits_as_json(value: &Value, cap: usize) -> bool {
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

    fn payload(bytes: &[u8]) -> Result<Payload, TooDeep> {
        parse_payload(bytes, DEFAULT_MAX_PAYLOAD_DEPTH)
    }

    #[test]
    fn payloads_parse_as_json_or_stay_text() {
        assert_eq!(payload(br#"{"a":1}"#), Ok(Payload::Json(json!({"a": 1}))));
        assert_eq!(payload(b"42"), Ok(Payload::Json(json!(42))));
        assert_eq!(payload(b"on"), Ok(Payload::Text("on".into())));
        assert_eq!(payload(&[0xff, b'a']), Ok(Payload::Text("\u{fffd}a".into())));
        assert_eq!(payload(b"[warning] disk"), Ok(Payload::Text("[warning] disk".into())));
    }

    #[test]
    fn depth_counts_arrays_and_objects_but_not_brackets_in_strings() {
        assert!(parse_json(b"1", 0).is_ok(), "a scalar has depth 0");
        assert!(matches!(parse_json(b"[]", 0), Err(JsonError::TooDeep(TooDeep { limit: 0 }))));
        assert_eq!(parse_json(br#"{"a":[1]}"#, 2).unwrap(), json!({"a": [1]}));
        assert!(matches!(parse_json(br#"{"a":[[1]]}"#, 2), Err(JsonError::TooDeep(_))));
        // Siblings do not add up; only nesting does.
        assert!(parse_json(b"[[1],[2],{\"a\":3}]", 2).is_ok());
        assert_eq!(parse_json(br#"["[[[[{{{{"]"#, 1).unwrap(), json!(["[[[[{{{{"]));
        assert_eq!(parse_json(br#"["\"[[[[", "\\"]"#, 1).unwrap(), json!(["\"[[[[", "\\"]));
        assert!(matches!(parse_json(br#"["\\", [[1]]]"#, 2), Err(JsonError::TooDeep(_))));
        // Refused before parsing, even far beyond what the parser could read.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(payload(deep.as_bytes()), Err(TooDeep { limit: DEFAULT_MAX_PAYLOAD_DEPTH }));
        assert!(matches!(parse_json(b"{not json", 64), Err(JsonError::Invalid(_))));
    }

    #[test]
    fn a_key_is_the_same_request_only_with_the_same_body() {
        let key = IdempotencyKey::new("token:abcd1234", "/sop/deploy", "k", b"{\"n\":1}");
        assert_eq!(key.scope, "token:abcd1234 /sop/deploy");
        assert_eq!(key.fingerprint.len(), 64);
        let stored = json!({"runs": [], IdempotencyKey::FINGERPRINT_FIELD: key.fingerprint});
        assert!(key.same_request(&stored));
        let other = IdempotencyKey::new("token:abcd1234", "/sop/deploy", "k", b"{\"n\":2}");
        assert!(!other.same_request(&stored));
        assert!(other.same_request(&json!({"runs": []})), "a response stored without a fingerprint");
        let elsewhere = IdempotencyKey::new("ip:10.0.0.1", "/sop/deploy", "k", b"{\"n\":1}");
        assert_ne!(elsewhere.scope, key.scope);
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

    /// The nesting of a parsed value (recursive: only for values this
    /// module let through, so bounded by the limits tested).
    fn depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// JSON that round-trips exactly: no floats (their text form need
        /// not come back bit for bit), strings full of brackets and quotes.
        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                any::<u64>().prop_map(|n| json!(n)),
                "[\\[\\]{}\"\\\\a-zé ]{0,12}".prop_map(Value::String),
                any::<String>().prop_map(Value::String),
            ];
            leaf.prop_recursive(8, 64, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map("[\\[{\"a-z]{0,6}", inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// Text nested exactly `depth` levels: a random container at each
        /// level, with strings full of brackets beside the nesting.
        fn nested(kinds: &[bool], noise: &str) -> String {
            let noise = serde_json::to_string(noise).unwrap();
            let mut text = String::from("0");
            for &object in kinds.iter().rev() {
                text = if object { format!("{{\"k\":{text},\"n\":{noise}}}") } else { format!("[{noise},{text}]") };
            }
            text
        }

        /// Bytes that are mostly structure: brackets, quotes and escapes
        /// nest and unbalance far more often than in uniform bytes.
        fn structural_bytes() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(prop::sample::select(b"[]{}\"\\,:a1 \xff".to_vec()), 0..700)
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic_and_never_reach_the_parsers_limit(
                bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..512), structural_bytes()],
                limit in 0usize..=MAX_PAYLOAD_DEPTH_LIMIT,
            ) {
                match parse_json(&bytes, limit) {
                    Ok(value) => prop_assert!(depth(&value) <= limit),
                    Err(JsonError::TooDeep(TooDeep { limit: l })) => prop_assert_eq!(l, limit),
                    Err(JsonError::Invalid(e)) => {
                        prop_assert!(!e.to_string().contains("recursion limit"), "{}", e)
                    }
                }
                match parse_payload(&bytes, limit) {
                    Ok(Payload::Json(value)) => prop_assert!(depth(&value) <= limit),
                    Ok(Payload::Text(text)) => prop_assert_eq!(text, String::from_utf8_lossy(&bytes)),
                    Err(TooDeep { limit: l }) => prop_assert_eq!(l, limit),
                }
            }

            #[test]
            fn nesting_exactly_at_the_limit_is_accepted_and_one_more_refused(
                kinds in prop::collection::vec(any::<bool>(), 1..=MAX_PAYLOAD_DEPTH_LIMIT + 1),
                noise in "[\\[\\]{}\"\\\\ ]{0,8}",
            ) {
                let text = nested(&kinds, &noise);
                let at = kinds.len();
                let value = parse_json(text.as_bytes(), at).expect("at the limit");
                prop_assert_eq!(depth(&value), at);
                prop_assert_eq!(parse_payload(text.as_bytes(), at), Ok(Payload::Json(value)));
                let below = at - 1;
                prop_assert!(matches!(parse_json(text.as_bytes(), below), Err(JsonError::TooDeep(_))));
                prop_assert_eq!(parse_payload(text.as_bytes(), below), Err(TooDeep { limit: below }));
            }

            #[test]
            fn json_round_trips(value in json_value(), pretty in any::<bool>()) {
                let text = if pretty {
                    serde_json::to_string_pretty(&value).unwrap()
                } else {
                    serde_json::to_string(&value).unwrap()
                };
                let limit = depth(&value);
                prop_assert_eq!(&parse_json(text.as_bytes(), limit).unwrap(), &value);
                prop_assert_eq!(parse_payload(text.as_bytes(), limit), Ok(Payload::Json(value)));
            }
        }
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
                match parse_payload(&bytes, DEFAULT_MAX_PAYLOAD_DEPTH).expect("generated bodies nest shallowly") {
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
