//! The legacy envelope the Agent understands: `context.memory` (always
//! present, so the agent can loop through clarification), `input.event`,
//! optional `input.steps`, `output`, `error`.

use serde_json::{json, Value};

use crate::event::{Event, Source};
use crate::sop::Step;

/// The trigger event as envelopes carry it: source, time, the path (webhooks)
/// or topic (everything else), and the body.
pub fn event_json(event: &Event) -> Value {
    let mut e = json!({
        "id": event.id,
        "source": event.source,
        "time": event.received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "body": event.payload.to_value(),
    });
    let place = match event.source {
        Source::Webhook | Source::SopWebhook => "path",
        _ => "topic",
    };
    e[place] = Value::String(event.topic.clone());
    e
}

/// A legacy envelope for `event`; `steps` only when a SOP supplies them.
pub fn build(event: &Event, steps: Option<&[Step]>) -> Value {
    let event = event_json(event);
    let mut input = json!({ "event": event });
    if let Some(steps) = steps {
        input["steps"] = json!(steps);
    }
    json!({
        "context": {"memory": {"session_id": event["id"], "state": {"trigger": event}, "stack": []}},
        "input": input,
        "output": null,
        "error": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Payload;

    #[test]
    fn memory_is_always_present_and_carries_the_trigger() {
        let e = Event::new(Source::Webhook, "/webhook", Payload::Json(json!({"msg": "hi"})), chrono::Utc::now());
        let env = build(&e, None);
        assert_eq!(env["context"]["memory"]["state"]["trigger"]["path"], json!("/webhook"));
        assert_eq!(env["context"]["memory"]["stack"], json!([]));
        assert_eq!(env["input"]["event"]["body"], json!({"msg": "hi"}));
        assert_eq!(env["input"]["event"]["source"], json!("webhook"));
        assert!(env["input"].get("steps").is_none());
        assert!(env["output"].is_null() && env["error"].is_null());
    }

    #[test]
    fn non_webhook_events_name_their_topic() {
        let e = Event::new(Source::Mqtt, "sensors/a/alert", Payload::Text("raw".into()), chrono::Utc::now());
        let env = build(&e, Some(&[]));
        assert_eq!(env["input"]["event"]["topic"], json!("sensors/a/alert"));
        assert_eq!(env["input"]["event"]["body"], json!("raw"));
        assert_eq!(env["input"]["steps"], json!([]));
    }
}
