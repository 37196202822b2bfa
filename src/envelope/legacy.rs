//! The legacy envelope the Agent understands: `context.memory` (always
//! present, so the agent can loop through clarification), `input.event`,
//! optional `input.steps`, `output`, `error` (both null: the agent fills them).
//!
//! Two builders: [`build`] for a bare event that matched no SOP (the
//! `/webhook` fallback; the session is the event) and [`build_for_run`] for a
//! run whose destination is the agent (the session is the run). A step in
//! `input.steps` is the SOP step as written: `number`, `title`, `body`,
//! `tools`, `requires_confirmation`, plus `type`, `ref`, `params` and `id`
//! when the SOP gives them.

use serde_json::{json, Value};

use super::{memory, trigger_json, Run};
use crate::event::Event;
use crate::sop::Step;

/// The trigger event as envelopes carry it: id, source, time, the path
/// (webhooks) or topic (everything else), and the body.
pub fn event_json(event: &Event) -> Value {
    trigger_json(&event.id, event.source, &event.topic, event.received_at, event.payload.to_value())
}

/// A legacy envelope for `event` alone; `steps` only when a SOP supplies them.
pub fn build(event: &Event, steps: Option<&[Step]>) -> Value {
    let event = event_json(event);
    let memory = json!({"session_id": event["id"], "state": {"trigger": event}, "stack": []});
    envelope(memory, event, steps)
}

/// A legacy envelope for a run: the run is the session, and `input.steps`
/// appears only when the SOP has steps (without them the agent decides).
pub fn build_for_run(run: &Run<'_>, steps: &[Step]) -> Value {
    let steps = if steps.is_empty() { None } else { Some(steps) };
    envelope(memory(run), run.trigger.clone(), steps)
}

fn envelope(memory: Value, event: Value, steps: Option<&[Step]>) -> Value {
    let mut input = json!({ "event": event });
    if let Some(steps) = steps {
        input["steps"] = json!(steps);
    }
    json!({
        "context": {"memory": memory},
        "input": input,
        "output": null,
        "error": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{fixtures, schema};
    use crate::event::{Payload, Source};

    #[test]
    fn memory_is_always_present_and_carries_the_trigger() {
        let e = Event::new(Source::Webhook, "/webhook", Payload::Json(json!({"msg": "hi"})), chrono::Utc::now());
        let env = build(&e, None);
        assert_eq!(env["context"]["memory"]["state"]["trigger"]["path"], json!("/webhook"));
        assert_eq!(env["context"]["memory"]["session_id"], json!(e.id));
        assert_eq!(env["context"]["memory"]["stack"], json!([]));
        assert_eq!(env["input"]["event"]["body"], json!({"msg": "hi"}));
        assert_eq!(env["input"]["event"]["source"], json!("webhook"));
        assert!(env["input"].get("steps").is_none());
        assert!(env["output"].is_null() && env["error"].is_null());
        schema::validate(&env).unwrap();
    }

    #[test]
    fn non_webhook_events_name_their_topic() {
        let e = Event::new(Source::Mqtt, "sensors/a/alert", Payload::Text("raw".into()), chrono::Utc::now());
        let env = build(&e, Some(&[]));
        assert_eq!(env["input"]["event"]["topic"], json!("sensors/a/alert"));
        assert_eq!(env["input"]["event"]["body"], json!("raw"));
        assert_eq!(env["input"]["steps"], json!([]));
        schema::validate(&env).unwrap();
    }

    #[test]
    fn a_run_is_the_session_and_its_steps_travel_as_written() {
        let event = fixtures::deploy_event(Source::Mqtt);
        let trigger = event_json(&event);
        let run = Run {
            run_id: "run-42",
            sop_name: "sensor-alert",
            sop_version: "1.0.0",
            source: event.source,
            trigger: &trigger,
        };
        let env = build_for_run(&run, &fixtures::agent_steps());
        schema::validate(&env).unwrap();
        let memory = &env["context"]["memory"];
        assert_eq!(memory["session_id"], json!("run-42"));
        assert_eq!(memory["state"]["trigger"], trigger);
        assert_eq!(memory["state"]["sop"], json!({"name": "sensor-alert", "version": "1.0.0"}));
        assert_eq!(env["input"]["event"], trigger);
        assert_eq!(
            env["input"]["steps"],
            json!([{"number": 1, "title": "Look at history", "body": "Compare with the last hour of readings.",
                    "tools": ["sensor_history"], "requires_confirmation": false}])
        );
    }

    #[test]
    fn executor_fields_of_a_step_travel_too() {
        let event = fixtures::deploy_event(Source::SopWebhook);
        let trigger = event_json(&event);
        let run = Run {
            run_id: "run-43",
            sop_name: "deploy-pipeline",
            sop_version: "1.2.0",
            source: event.source,
            trigger: &trigger,
        };
        let env = build_for_run(&run, &fixtures::deploy_steps());
        schema::validate(&env).unwrap();
        assert_eq!(env["input"]["steps"][0]["type"], json!("tool"));
        assert_eq!(env["input"]["steps"][0]["ref"], json!("ci_status"));
        assert_eq!(env["input"]["steps"][1]["requires_confirmation"], json!(true));
    }

    #[test]
    fn a_run_without_steps_leaves_the_agent_to_decide() {
        let event = fixtures::deploy_event(Source::Cron);
        let trigger = event_json(&event);
        let run = Run {
            run_id: "run-44",
            sop_name: "morning-report",
            sop_version: "0.1.0",
            source: event.source,
            trigger: &trigger,
        };
        let env = build_for_run(&run, &[]);
        schema::validate(&env).unwrap();
        assert!(env["input"].get("steps").is_none());
        assert_eq!(env["input"]["event"]["topic"], json!("0 0 8 * * *"));
    }

    /// Written JSON is read back with a nesting limit (serde_json's 128):
    /// the envelope's own levels must leave room for the payload.
    #[test]
    fn a_payload_64_levels_deep_still_reads_back_inside_its_envelope() {
        let payload = (0..64).fold(json!(1), |inner, _| json!([inner]));
        let e = Event::new(Source::Mqtt, "t", Payload::Json(payload), chrono::Utc::now());
        let env = build(&e, None);
        let text = serde_json::to_string(&env).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), env);
    }

    mod props {
        use proptest::prelude::*;

        use super::*;
        use crate::proptest_support::{config, hostile_text};

        /// Valid, and read back from its text as the same value.
        fn check(envelope: &Value) -> Result<(), TestCaseError> {
            prop_assert!(schema::validate(envelope).is_ok(), "{:?}", schema::validate(envelope));
            let text = serde_json::to_string(envelope).unwrap();
            prop_assert_eq!(&serde_json::from_str::<Value>(&text).unwrap(), envelope);
            Ok(())
        }

        proptest! {
            #![proptest_config(config(128))]

            #[test]
            fn an_event_alone_gives_a_valid_envelope_that_reads_back(
                event in fixtures::any_event(),
                steps in prop::option::of(fixtures::any_steps(false)),
            ) {
                let envelope = build(&event, steps.as_deref());
                check(&envelope)?;
                prop_assert_eq!(&envelope["input"]["event"]["body"], &event.payload.to_value());
                prop_assert_eq!(&envelope["context"]["memory"]["state"]["trigger"], &envelope["input"]["event"]);
            }

            #[test]
            fn a_run_gives_a_valid_envelope_that_reads_back(
                event in fixtures::any_event(),
                steps in fixtures::any_steps(false),
                run_id in hostile_text(12).prop_filter("ids are never empty", |s| !s.is_empty()),
                sop_name in "[a-z0-9][a-z0-9._-]{0,12}",
                sop_version in hostile_text(8),
            ) {
                let trigger = event_json(&event);
                let run = Run {
                    run_id: &run_id,
                    sop_name: &sop_name,
                    sop_version: &sop_version,
                    source: event.source,
                    trigger: &trigger,
                };
                let envelope = build_for_run(&run, &steps);
                check(&envelope)?;
                prop_assert_eq!(&envelope["input"]["event"]["body"], &event.payload.to_value());
                prop_assert_eq!(envelope["input"].get("steps").is_some(), !steps.is_empty());
            }
        }
    }
}
