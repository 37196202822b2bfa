//! Envelopes: how a run or an event leaves fanin. Building them is
//! pure (ids and times come in as arguments); delivery is elsewhere.
//!
//! - [`legacy`]: the `context/input/output/error` form the Agent reads.
//! - [`execution`]: the `header/payload` form the Executor reads.
//! - [`schema`]: the shipped JSON Schemas: the envelope contract (what Smart
//!   Office's Agent and Executor accept) and what fanin emits within it.
//! - [`registry`]: the tools, capabilities and usecases registries an
//!   execution envelope carries, kept fresh in the background.
//! - [`session`]: a webhook body that continues a session.
//!
//! Both forms share one `memory`: `{session_id, state: {trigger: <event>,
//! sop: {name, version}}, stack}`, where the session is the one the webhook
//! body continued, else a new one named by the run id, so whoever receives
//! a run can loop back for clarification with the same session. The trigger
//! event is named as Smart Office's triggers name theirs ([`trigger_name`]).

pub mod execution;
pub mod legacy;
pub mod registry;
pub mod schema;
pub mod session;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::event::{Request, Source};
use crate::runs::RunRecord;
use crate::sop::Step;

/// What every envelope of a run says about the run.
#[derive(Clone, Copy, Debug)]
pub struct Run<'a> {
    pub run_id: &'a str,
    pub sop_name: &'a str,
    pub sop_version: &'a str,
    pub source: Source,
    /// The trigger event as envelopes carry it: [`legacy::event_json`] for a
    /// live event, [`trigger_from_run`] for a run read back from the store.
    pub trigger: &'a Value,
    /// The session the webhook body continued ([`session::Continuation`]);
    /// `None` starts a new one, named by the run id.
    pub session: Option<&'a Value>,
}

/// The memory both forms carry for a run.
pub fn memory(run: &Run<'_>) -> Value {
    let mut ours = Map::new();
    ours.insert("trigger".into(), run.trigger.clone());
    ours.insert("sop".into(), json!({"name": run.sop_name, "version": run.sop_version}));
    memory_of(run.session, run.run_id, ours)
}

/// `{session_id, state, stack}`: the continued session's id, state and
/// stack when there is one (its state keeps its members; fanin's `ours`
/// replace any of the same name), else a new session `new_id` with `ours`
/// as its state and an empty stack.
fn memory_of(session: Option<&Value>, new_id: &str, ours: Map<String, Value>) -> Value {
    let Some(session) = session else {
        return json!({"session_id": new_id, "state": ours, "stack": []});
    };
    let mut state = session.get("state").and_then(Value::as_object).cloned().unwrap_or_default();
    state.extend(ours);
    json!({
        "session_id": session.get("session_id").cloned().unwrap_or_else(|| Value::String(new_id.into())),
        "state": state,
        "stack": session.get("stack").cloned().unwrap_or_else(|| json!([])),
    })
}

/// The trigger event of a stored run, in the shape of [`legacy::event_json`]
/// (the time is when the trigger was accepted; the body is the stored, capped
/// payload). Lets a deferred run that starts later build the same envelope.
pub fn trigger_from_run(run: &RunRecord) -> Value {
    trigger_json(&run.event_id, run.source, &run.topic, run.started_at, run.payload.clone(), run.request.as_ref())
}

/// A source as Smart Office names its triggers (`so.trigger.<name>`, and
/// the event's `source`): both webhook routes are the webhook trigger, and
/// a cron run is the schedule trigger.
pub fn trigger_name(source: Source) -> &'static str {
    match source {
        Source::Webhook | Source::SopWebhook => "webhook",
        Source::Mqtt => "mqtt",
        Source::Cron => "schedule",
        Source::Peripheral => "peripheral",
        Source::Manual => "manual",
        Source::Email => "email",
        Source::Slack => "slack",
        Source::Telegram => "telegram",
        Source::GoogleDrive => "google-drive",
        Source::Filesystem => "filesystem",
        Source::Amqp => "amqp",
    }
}

/// `{id, source, timestamp, ...}` as Smart Office's triggers shape their
/// events: a webhook has its `path`, `body`, `query` and `headers` (empty
/// for a run stored before fanin kept them); a schedule its expression as
/// `rule`; every other source its `topic` (a channel's or Drive's is
/// `<kind>/<alias>`); both of those carry what arrived as `payload`. An
/// AMQP delivery's body is its payload, so conditions read the body as they
/// do for MQTT, and its properties (kept in the request's `headers`) travel
/// beside it as `properties`.
fn trigger_json(
    id: &str,
    source: Source,
    topic: &str,
    time: DateTime<Utc>,
    content: Value,
    request: Option<&Request>,
) -> Value {
    let mut event = Map::new();
    event.insert("id".into(), Value::String(id.to_string()));
    event.insert("source".into(), Value::String(trigger_name(source).to_string()));
    event.insert("timestamp".into(), Value::String(rfc3339(time)));
    let topic = Value::String(topic.to_string());
    match source {
        Source::Webhook | Source::SopWebhook => {
            let request = request.cloned().unwrap_or_default();
            event.insert("path".into(), topic);
            event.insert("body".into(), content);
            event.insert("query".into(), Value::Object(request.query));
            event.insert("headers".into(), Value::Object(request.headers));
        }
        Source::Cron => {
            event.insert("rule".into(), topic);
            event.insert("payload".into(), content);
        }
        Source::Mqtt
        | Source::Peripheral
        | Source::Manual
        | Source::Email
        | Source::Slack
        | Source::Telegram
        | Source::GoogleDrive
        | Source::Filesystem => {
            event.insert("topic".into(), topic);
            event.insert("payload".into(), content);
        }
        Source::Amqp => {
            event.insert("topic".into(), topic);
            event.insert("payload".into(), content);
            let properties = request.map(|r| r.headers.clone()).unwrap_or_default();
            event.insert("properties".into(), Value::Object(properties));
        }
    }
    Value::Object(event)
}

/// A step as the contract has it, `{type, ref, params, id?}`; `params` is
/// always an object. A missing `type` or `ref` is left out for the schema
/// check to name.
fn step_json(step: &Step) -> Value {
    let mut out = Map::new();
    if let Some(kind) = step.kind {
        out.insert("type".into(), json!(kind));
    }
    if let Some(reference) = &step.reference {
        out.insert("ref".into(), Value::String(reference.clone()));
    }
    out.insert("params".into(), Value::Object(step.params.clone()));
    if let Some(id) = &step.id {
        out.insert("id".into(), Value::String(id.clone()));
    }
    Value::Object(out)
}

/// Times in envelopes: RFC 3339, UTC, milliseconds.
fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Realistic inputs shared by the builders' tests.
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::test_support as fixtures;
    use super::*;
    use crate::runs::RunStatus;

    #[test]
    fn a_stored_run_gives_the_same_trigger_shape_as_a_live_event() {
        let event = fixtures::deploy_event(Source::SopWebhook);
        let record = RunRecord {
            run_id: "run-1".into(),
            sop: "deploy-pipeline".into(),
            sop_version: "1.2.0".into(),
            status: RunStatus::Running,
            trigger_index: 0,
            trigger: "webhook /sop/deploy".into(),
            source: event.source,
            topic: event.topic.clone(),
            event_id: event.id.clone(),
            payload: event.payload.to_value(),
            request: event.request.clone(),
            session: None,
            client: None,
            idempotency_key: None,
            started_at: event.received_at,
            updated_at: event.received_at,
            finished_at: None,
            coalesced: 0,
            step: 0,
        };
        assert_eq!(trigger_from_run(&record), legacy::event_json(&event));
    }

    #[test]
    fn memory_names_the_session_the_trigger_and_the_sop() {
        let trigger = json!({"id": "e1"});
        let mut run = Run {
            run_id: "run-7",
            sop_name: "s",
            sop_version: "2",
            source: Source::Manual,
            trigger: &trigger,
            session: None,
        };
        assert_eq!(
            memory(&run),
            json!({"session_id": "run-7", "state": {"trigger": {"id": "e1"}, "sop": {"name": "s", "version": "2"}}, "stack": []})
        );
        let session = json!({"session_id": "sess_7", "state": {"sop": "old", "lead": "c-1"}, "stack": ["agent"]});
        run.session = Some(&session);
        assert_eq!(
            memory(&run),
            json!({"session_id": "sess_7",
                   "state": {"trigger": {"id": "e1"}, "sop": {"name": "s", "version": "2"}, "lead": "c-1"},
                   "stack": ["agent"]})
        );
    }

    #[test]
    fn sources_are_named_as_smart_offices_triggers() {
        let table = [
            (Source::Webhook, "webhook"),
            (Source::SopWebhook, "webhook"),
            (Source::Mqtt, "mqtt"),
            (Source::Cron, "schedule"),
            (Source::Peripheral, "peripheral"),
            (Source::Manual, "manual"),
            (Source::Email, "email"),
            (Source::Slack, "slack"),
            (Source::Telegram, "telegram"),
            (Source::GoogleDrive, "google-drive"),
            (Source::Filesystem, "filesystem"),
            (Source::Amqp, "amqp"),
        ];
        assert_eq!(table.len(), Source::ALL.len());
        for (source, name) in table {
            assert_eq!(trigger_name(source), name, "{source:?}");
            assert_eq!(legacy::event_json(&fixtures::deploy_event(source))["source"], json!(name), "{source:?}");
        }
    }

    #[test]
    fn times_are_utc_with_milliseconds() {
        let t = Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap();
        assert_eq!(rfc3339(t), "2025-03-01T08:00:00.000Z");
    }
}
