//! The legacy envelope the Agent understands: `context.memory` (always
//! present, so the agent can loop through clarification), `input.event`,
//! optional `input.steps`, `output` (`{}`: nothing ran yet) and `error`
//! (`null`), as Smart Office's triggers build it.
//!
//! Two builders: [`build`] for a bare event that matched no SOP (the
//! `/webhook` fallback; the session is the event, or the one its body
//! continues) and [`build_for_run`] for a run whose destination is the agent
//! (the session is the run, or the one its body continued). `input.steps`
//! holds steps in the contract's form (`type`, `ref`, `params`, `id`), so
//! only steps the Executor could run; an agent SOP with steps never comes
//! here, it goes step by step through the agent loop.

use serde_json::{json, Map, Value};

use super::{memory, memory_of, step_json, trigger_json, Run};
use crate::event::Event;
use crate::sop::Step;

/// The trigger event as envelopes carry it (see [`super::trigger_name`] for
/// its `source`): id, source, timestamp, and the request's path, body, query
/// and headers (webhooks) or the topic or rule and the payload (everything
/// else).
pub fn event_json(event: &Event) -> Value {
    trigger_json(
        &event.id,
        event.source,
        &event.topic,
        event.received_at,
        event.payload.to_value(),
        event.request.as_ref(),
    )
}

/// A legacy envelope for `event` alone, in the session the event's body
/// continues (`session`, see [`super::session`]) or else a new one named
/// by the event id.
pub fn build(event: &Event, session: Option<&Value>) -> Value {
    let event = event_json(event);
    let ours = Map::from_iter([("trigger".to_string(), event.clone())]);
    let id = event["id"].as_str().unwrap_or_default();
    envelope(memory_of(session, id, ours), event, &[])
}

/// A legacy envelope for a run: `input.steps` appears only when there are
/// steps.
pub fn build_for_run(run: &Run<'_>, steps: &[Step]) -> Value {
    envelope(memory(run), run.trigger.clone(), steps)
}

fn envelope(memory: Value, event: Value, steps: &[Step]) -> Value {
    let mut input = json!({ "event": event });
    if !steps.is_empty() {
        input["steps"] = steps.iter().map(step_json).collect();
    }
    json!({
        "context": {"memory": memory},
        "input": input,
        "output": {},
        "error": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::test_support as fixtures;
    use crate::envelope::{schema, session::Continuation};
    use crate::event::{Payload, Request, Source};

    fn valid(envelope: &Value) {
        if let Err(errors) = schema::validate(envelope) {
            panic!("{errors:#?}\n{envelope:#}");
        }
        schema::validate_contract(envelope).unwrap();
    }

    #[test]
    fn a_webhook_event_carries_its_body_query_and_headers() {
        let mut e =
            Event::new("e-1", Source::Webhook, "/webhook", Payload::Json(json!({"msg": "hi"})), chrono::Utc::now());
        e.request = Some(Request {
            query: json!({"campaign": "spring"}).as_object().cloned().unwrap(),
            headers: json!({"user-agent": "curl/8.5.0"}).as_object().cloned().unwrap(),
        });
        let env = build(&e, None);
        valid(&env);
        let event = &env["input"]["event"];
        assert_eq!(event["source"], json!("webhook"));
        assert_eq!(event["path"], json!("/webhook"));
        assert_eq!(event["body"], json!({"msg": "hi"}));
        assert_eq!(event["query"], json!({"campaign": "spring"}));
        assert_eq!(event["headers"], json!({"user-agent": "curl/8.5.0"}));
        assert!(event["timestamp"].is_string() && event.get("time").is_none() && event.get("payload").is_none());
        assert_eq!(env["context"]["memory"]["state"]["trigger"], *event);
        assert_eq!(env["context"]["memory"]["session_id"], json!(e.id));
        assert_eq!(env["context"]["memory"]["stack"], json!([]));
        assert!(env["input"].get("steps").is_none());
        assert_eq!((&env["output"], &env["error"]), (&json!({}), &Value::Null));
    }

    #[test]
    fn every_source_is_named_as_smart_offices_triggers_name_theirs() {
        let table = [
            (Source::Webhook, "webhook", "path", "body"),
            (Source::SopWebhook, "webhook", "path", "body"),
            (Source::Cron, "schedule", "rule", "payload"),
            (Source::Mqtt, "mqtt", "topic", "payload"),
            (Source::Peripheral, "peripheral", "topic", "payload"),
            (Source::Manual, "manual", "topic", "payload"),
            (Source::Email, "email", "topic", "payload"),
            (Source::Slack, "slack", "topic", "payload"),
            (Source::Telegram, "telegram", "topic", "payload"),
            (Source::GoogleDrive, "google-drive", "topic", "payload"),
            (Source::Filesystem, "filesystem", "topic", "payload"),
            (Source::Amqp, "amqp", "topic", "payload"),
        ];
        assert_eq!(table.len(), Source::ALL.len());
        for (source, name, place, content) in table {
            let e = fixtures::deploy_event(source);
            let env = build(&e, None);
            valid(&env);
            let event = &env["input"]["event"];
            assert_eq!(event["source"], json!(name), "{source:?}");
            assert_eq!(event[place], json!(e.topic), "{source:?}");
            assert_eq!(event[content], e.payload.to_value(), "{source:?}");
            let keys: Vec<&str> = event.as_object().unwrap().keys().map(String::as_str).collect();
            let webhook = content == "body";
            assert_eq!(keys.contains(&"query") && keys.contains(&"headers"), webhook, "{source:?}: {keys:?}");
            let amqp = source == Source::Amqp;
            assert_eq!(keys.contains(&"properties"), amqp, "{source:?}: {keys:?}");
            if amqp {
                assert_eq!(event["properties"]["message_id"], json!("m-1"));
            }
        }
    }

    #[test]
    fn text_payloads_travel_as_strings() {
        let e = Event::new("e-1", Source::Mqtt, "sensors/a/alert", Payload::Text("raw".into()), chrono::Utc::now());
        let env = build(&e, None);
        valid(&env);
        assert_eq!(env["input"]["event"]["topic"], json!("sensors/a/alert"));
        assert_eq!(env["input"]["event"]["payload"], json!("raw"));
    }

    #[test]
    fn a_bare_event_continues_the_session_its_body_names() {
        let body = json!({"context": {"memory": {"session_id": "sess_7", "state": {"round": 2}, "stack": ["agent"]}}});
        let e = Event::new("e-1", Source::Webhook, "/webhook", Payload::Json(body.clone()), chrono::Utc::now());
        let continuation = Continuation::of_body(&body, 1 << 16);
        let env = build(&e, continuation.session());
        valid(&env);
        let memory = &env["context"]["memory"];
        assert_eq!(memory["session_id"], json!("sess_7"));
        assert_eq!(memory["state"]["round"], json!(2));
        assert_eq!(memory["state"]["trigger"], env["input"]["event"]);
        assert_eq!(memory["stack"], json!(["agent"]));
    }

    #[test]
    fn a_run_is_the_session_and_its_steps_travel_in_the_contracts_form() {
        let event = fixtures::deploy_event(Source::Mqtt);
        let trigger = event_json(&event);
        let run = Run {
            run_id: "run-42",
            sop_name: "deploy-pipeline",
            sop_version: "1.2.0",
            source: event.source,
            trigger: &trigger,
            session: None,
        };
        let env = build_for_run(&run, &fixtures::deploy_steps());
        valid(&env);
        let memory = &env["context"]["memory"];
        assert_eq!(memory["session_id"], json!("run-42"));
        assert_eq!(memory["state"]["trigger"], trigger);
        assert_eq!(memory["state"]["sop"], json!({"name": "deploy-pipeline", "version": "1.2.0"}));
        assert_eq!(env["input"]["event"], trigger);
        assert_eq!(
            env["input"]["steps"][0],
            json!({"type": "tool", "ref": "ci_status", "params": {"pipeline": "service-a"}, "id": "verify"})
        );
        assert_eq!(env["input"]["steps"][2], json!({"type": "capability", "ref": "health_watch", "params": {}}));
    }

    /// Steps only an agent can follow have no place in the contract's
    /// steps; the agent loop hands them out one by one instead.
    #[test]
    fn agent_steps_do_not_fit_a_legacy_envelope() {
        let trigger = event_json(&fixtures::deploy_event(Source::Mqtt));
        let run = Run {
            run_id: "r",
            sop_name: "s",
            sop_version: "1",
            source: Source::Mqtt,
            trigger: &trigger,
            session: None,
        };
        let errors = schema::validate(&build_for_run(&run, &fixtures::agent_steps())).unwrap_err();
        assert!(errors.iter().any(|e| e.contains("/input/steps/0")), "{errors:?}");
    }

    #[test]
    fn a_run_continues_the_session_its_webhook_named() {
        let trigger = event_json(&fixtures::deploy_event(Source::SopWebhook));
        let session = json!({"session_id": "sess_9", "state": {"trigger": "old", "lead": "c-1"}, "stack": []});
        let run = Run {
            run_id: "run-44",
            sop_name: "follow-up",
            sop_version: "0.1.0",
            source: Source::SopWebhook,
            trigger: &trigger,
            session: Some(&session),
        };
        let env = build_for_run(&run, &[]);
        valid(&env);
        let memory = &env["context"]["memory"];
        assert_eq!(memory["session_id"], json!("sess_9"));
        assert_eq!(memory["state"]["trigger"], trigger, "the new trigger replaces the old one");
        assert_eq!(memory["state"]["lead"], json!("c-1"));
        assert_eq!(memory["state"]["sop"]["name"], json!("follow-up"));
        assert!(env["input"].get("steps").is_none());
    }

    /// Written JSON is read back with a nesting limit (serde_json's 128):
    /// the envelope's own levels must leave room for the payload.
    #[test]
    fn a_payload_64_levels_deep_still_reads_back_inside_its_envelope() {
        let payload = (0..64).fold(json!(1), |inner, _| json!([inner]));
        let e = Event::new("e-1", Source::Mqtt, "t", Payload::Json(payload), chrono::Utc::now());
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
            prop_assert!(schema::validate_contract(envelope).is_ok(), "{:?}", schema::validate_contract(envelope));
            let text = serde_json::to_string(envelope).unwrap();
            prop_assert_eq!(&serde_json::from_str::<Value>(&text).unwrap(), envelope);
            Ok(())
        }

        fn content(envelope: &Value) -> &Value {
            let event = &envelope["input"]["event"];
            event.get("body").unwrap_or(&event["payload"])
        }

        proptest! {
            #![proptest_config(config(128))]

            #[test]
            fn an_event_alone_gives_a_valid_envelope_that_reads_back(event in fixtures::any_event()) {
                let continuation = Continuation::of_body(&event.payload.to_value(), 1 << 16);
                let envelope = build(&event, continuation.session());
                check(&envelope)?;
                prop_assert_eq!(content(&envelope), &event.payload.to_value());
                prop_assert_eq!(&envelope["context"]["memory"]["state"]["trigger"], &envelope["input"]["event"]);
            }

            #[test]
            fn a_run_gives_a_valid_envelope_that_reads_back(
                event in fixtures::any_event(),
                steps in fixtures::any_steps(true),
                with_steps in any::<bool>(),
                run_id in hostile_text(12).prop_filter("ids are never empty", |s| !s.is_empty()),
                sop_name in "[a-z0-9][a-z0-9._-]{0,12}",
                sop_version in hostile_text(8),
            ) {
                let steps = if with_steps { steps } else { Vec::new() };
                let trigger = event_json(&event);
                let continuation = Continuation::of_body(&event.payload.to_value(), 1 << 16);
                let run = Run {
                    run_id: &run_id,
                    sop_name: &sop_name,
                    sop_version: &sop_version,
                    source: event.source,
                    trigger: &trigger,
                    session: continuation.session(),
                };
                let envelope = build_for_run(&run, &steps);
                check(&envelope)?;
                prop_assert_eq!(content(&envelope), &event.payload.to_value());
                prop_assert_eq!(envelope["input"].get("steps").is_some(), !steps.is_empty());
            }
        }
    }
}
