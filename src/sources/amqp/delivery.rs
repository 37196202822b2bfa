//! One AMQP delivery turned into what the dispatcher takes: an event
//! (topic = routing key, payload = the body, the properties beside it,
//! `message_id` as the dedupe key) or the refusal of a body fanin will not
//! read (too large, nested too deep). Pure but for the fresh event id, so
//! the whole mapping is tested without a broker.

use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde_json::{json, Map, Value};

use super::SOURCE;
use crate::dispatch::Refusal;
use crate::event::{self, Event, IdempotencyKey, Request, Source, TooDeep};

/// What arrived, as the broker framed it.
pub struct Received<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub redelivered: bool,
    pub properties: &'a BasicProperties,
    pub body: &'a [u8],
    pub received_at: DateTime<Utc>,
}

/// The limits a body is read within.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_payload_depth: usize,
}

/// What to do with a delivery.
#[derive(Debug)]
pub enum Outcome {
    Dispatch(Box<Event>),
    Refuse(Refusal),
}

/// The error code of a body over `max_message_bytes`.
pub const TOO_LARGE: &str = "message_too_large";

/// Reads a delivery: a body over the size limit is refused before it is
/// parsed, one nested too deep while parsing; anything else is an event,
/// JSON when the body parses, else its (lossy UTF-8) text.
pub fn read(received: &Received<'_>, limits: Limits, client: &str) -> Outcome {
    let message_id = received.properties.message_id().as_ref().map(|id| id.as_str().to_string());
    let refusal = |reason: &'static str, why: String| {
        let id = message_id.as_deref().unwrap_or("(none)");
        Outcome::Refuse(Refusal {
            source: Source::Amqp,
            topic: received.routing_key.to_string(),
            client: Some(client.to_string()),
            reason,
            detail: format!("message {id} from exchange {:?}: {why}", received.exchange),
            bytes: received.body.len(),
            received_at: received.received_at,
        })
    };
    if received.body.len() > limits.max_message_bytes {
        let why = format!("{} bytes, over max_message_bytes ({})", received.body.len(), limits.max_message_bytes);
        return refusal(TOO_LARGE, why);
    }
    let payload = match event::parse_payload(received.body, limits.max_payload_depth) {
        Ok(payload) => payload,
        Err(too_deep) => return refusal(TooDeep::CODE, too_deep.to_string()),
    };
    let mut event = Event::new(crate::ids::fresh(), Source::Amqp, received.routing_key, payload, received.received_at);
    event.client = Some(client.to_string());
    event.idempotency = message_id.as_deref().map(|id| IdempotencyKey::of_source(SOURCE, id));
    event.request = Some(Request { query: Map::new(), headers: properties(received) });
    Outcome::Dispatch(Box::new(event))
}

/// The delivery's properties as JSON: where it came from (`exchange`,
/// `routing_key`, `redelivered`) and each basic property the publisher set,
/// under AMQP's names (`type` for the message type).
pub fn properties(received: &Received<'_>) -> Map<String, Value> {
    let p = received.properties;
    let mut out = Map::new();
    out.insert("exchange".into(), json!(received.exchange));
    out.insert("routing_key".into(), json!(received.routing_key));
    out.insert("redelivered".into(), json!(received.redelivered));
    let texts = [
        ("message_id", p.message_id()),
        ("content_type", p.content_type()),
        ("content_encoding", p.content_encoding()),
        ("correlation_id", p.correlation_id()),
        ("reply_to", p.reply_to()),
        ("expiration", p.expiration()),
        ("type", p.kind()),
        ("user_id", p.user_id()),
        ("app_id", p.app_id()),
    ];
    for (name, value) in texts {
        if let Some(value) = value {
            out.insert(name.into(), json!(value.as_str()));
        }
    }
    if let Some(mode) = p.delivery_mode() {
        out.insert("delivery_mode".into(), json!(mode));
    }
    if let Some(priority) = p.priority() {
        out.insert("priority".into(), json!(priority));
    }
    if let Some(at) = p.timestamp() {
        out.insert("timestamp".into(), json!(at));
    }
    if let Some(headers) = p.headers() {
        out.insert("headers".into(), Value::Object(table(headers)));
    }
    out
}

fn table(table: &FieldTable) -> Map<String, Value> {
    table.inner().iter().map(|(name, value)| (name.as_str().to_string(), value_json(value))).collect()
}

/// A header value as JSON: numbers as numbers, strings (and byte arrays)
/// as lossy UTF-8 text, a decimal as its `{scale, value}`.
fn value_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Timestamp(n) => json!(n),
        AMQPValue::Float(x) => json!(x),
        AMQPValue::Double(x) => json!(x),
        AMQPValue::DecimalValue(d) => json!({"scale": d.scale, "value": d.value}),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::FieldArray(items) => items.as_slice().iter().map(value_json).collect(),
        AMQPValue::FieldTable(t) => Value::Object(table(t)),
        AMQPValue::Void => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Payload;

    const LIMITS: Limits = Limits { max_message_bytes: 64, max_payload_depth: 3 };

    fn received<'a>(properties: &'a BasicProperties, body: &'a [u8]) -> Received<'a> {
        Received {
            exchange: "events",
            routing_key: "sensors.a.alert",
            redelivered: true,
            properties,
            body,
            received_at: Utc::now(),
        }
    }

    fn event(outcome: Outcome) -> Event {
        match outcome {
            Outcome::Dispatch(event) => *event,
            Outcome::Refuse(refusal) => panic!("refused: {refusal:?}"),
        }
    }

    fn refusal(outcome: Outcome) -> Refusal {
        match outcome {
            Outcome::Refuse(refusal) => refusal,
            Outcome::Dispatch(event) => panic!("dispatched: {event:?}"),
        }
    }

    #[test]
    fn the_body_is_the_payload_and_the_properties_travel_beside_it() {
        let mut headers = FieldTable::default();
        headers.insert("site".into(), AMQPValue::LongString("north".into()));
        headers.insert("attempt".into(), AMQPValue::LongInt(2));
        headers.insert("tags".into(), AMQPValue::FieldArray(vec![AMQPValue::Boolean(true)].into()));
        let props = BasicProperties::default()
            .with_message_id("m-7".into())
            .with_content_type("application/json".into())
            .with_headers(headers);
        let e = event(read(&received(&props, br#"{"severity": 3}"#), LIMITS, "amqp:q"));
        assert_eq!((e.source, e.topic.as_str()), (Source::Amqp, "sensors.a.alert"));
        assert_eq!(e.payload, Payload::Json(json!({"severity": 3})), "conditions read the body itself");
        assert_eq!(e.client.as_deref(), Some("amqp:q"));
        let key = e.idempotency.expect("message_id is the dedupe key");
        assert_eq!((key.scope.as_str(), key.key.as_str()), ("source amqp", "m-7"));
        let properties = Value::Object(e.request.expect("properties").headers);
        assert_eq!(
            properties,
            json!({
                "exchange": "events", "routing_key": "sensors.a.alert", "redelivered": true,
                "message_id": "m-7", "content_type": "application/json",
                "headers": {"site": "north", "attempt": 2, "tags": [true]},
            })
        );
    }

    #[test]
    fn text_and_binary_bodies_arrive_as_text_without_a_dedupe_key() {
        let props = BasicProperties::default();
        let e = event(read(&received(&props, b"disk full"), LIMITS, "amqp:q"));
        assert_eq!(e.payload, Payload::Text("disk full".into()));
        assert!(e.idempotency.is_none(), "no message_id: every delivery is its own event");
        let e = event(read(&received(&props, &[0xff, 0xfe, b'x']), LIMITS, "amqp:q"));
        assert_eq!(e.payload, Payload::Text("\u{fffd}\u{fffd}x".into()));
    }

    #[test]
    fn too_large_and_too_deep_bodies_are_refused_naming_the_message() {
        let props = BasicProperties::default().with_message_id("big".into());
        let r = refusal(read(&received(&props, &[b'a'; 65]), LIMITS, "amqp:q"));
        assert_eq!((r.reason, r.bytes, r.topic.as_str()), (TOO_LARGE, 65, "sensors.a.alert"));
        assert!(r.detail.contains("message big") && r.detail.contains("max_message_bytes (64)"), "{}", r.detail);
        let r = refusal(read(&received(&props, b"[[[[1]]]]"), LIMITS, "amqp:q"));
        assert_eq!(r.reason, TooDeep::CODE);
        let fits = event(read(&received(&props, b"[[[1]]]"), LIMITS, "amqp:q"));
        assert_eq!(fits.payload, Payload::Json(json!([[[1]]])));
    }
}
