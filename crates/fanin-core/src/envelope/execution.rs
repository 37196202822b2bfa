//! The execution envelope: a run handed to a destination with its
//! steps to the Executor, with the registries it resolves step refs against.
//!
//! Pure: the envelope id and timestamp come in as arguments, so the caller
//! decides them once and a retried delivery sends the same envelope.
//!
//! - `header.version` is [`ENVELOPE_VERSION`], the version of this envelope
//!   contract (the SOP's version travels in `memory.state.sop`).
//! - `header.type` is [`ENVELOPE_TYPE`], `sop.run`: the envelope carries a
//!   SOP run started by a trigger.
//! - `header.source` names the trigger workflow, `so.trigger.<name>`
//!   ([`trigger_workflow`]).
//! - `payload.steps` is left out when there are none: the contract takes a
//!   list of steps only with at least one, and an envelope with only its
//!   registries otherwise.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::registry::RegistrySnapshot;
use super::{memory, rfc3339, step_json, trigger_name, Run};
use crate::event::Source;
use crate::sop::{Destination, Step};

/// The version of the envelope contract fanin emits.
pub const ENVELOPE_VERSION: &str = "1.0";
/// What an execution envelope from fanin carries: a run of a SOP.
pub const ENVELOPE_TYPE: &str = "sop.run";

/// What the header says beyond the run.
#[derive(Clone, Copy, Debug)]
pub struct Header<'a> {
    /// Unique per envelope; also its delivery's `Idempotency-Key`.
    pub id: &'a str,
    pub timestamp: DateTime<Utc>,
    pub destination: Destination,
    pub trace_id: Option<&'a str>,
}

#[derive(Clone, Copy, Debug)]
pub struct ExecutionInput<'a> {
    pub header: Header<'a>,
    pub run: Run<'a>,
    /// The SOP's steps. For the executor each must have `type` and `ref`
    /// (SOP validation sees to it); a step without them fails the schema.
    pub steps: &'a [Step],
    pub registries: &'a RegistrySnapshot,
}

/// The workflow name of a source (`so.<layer>.<name>`): both webhook routes
/// are the webhook trigger, and cron is the schedule trigger.
pub fn trigger_workflow(source: Source) -> String {
    format!("so.trigger.{}", trigger_name(source))
}

pub fn build(input: &ExecutionInput<'_>) -> Value {
    let header = &input.header;
    let mut head = json!({
        "id": header.id,
        "version": ENVELOPE_VERSION,
        "timestamp": rfc3339(header.timestamp),
        "source": trigger_workflow(input.run.source),
        "destination": header.destination,
        "type": ENVELOPE_TYPE,
    });
    if let Some(trace_id) = header.trace_id {
        head["trace_id"] = Value::String(trace_id.to_string());
    }
    let mut payload = json!({
        "memory": memory(&input.run),
        "registryFiles": input.registries.registry_files(),
        "options": {"fallbackRegistry": input.registries.fallback_registry()},
    });
    if !input.steps.is_empty() {
        payload["steps"] = input.steps.iter().map(step_json).collect();
    }
    json!({"header": head, "payload": payload})
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::envelope::test_support::{self as fixtures, deploy_envelope, example_registries};
    use crate::envelope::{legacy, schema};

    #[test]
    fn sources_name_their_trigger_workflow() {
        let table = [
            (Source::Webhook, "so.trigger.webhook"),
            (Source::SopWebhook, "so.trigger.webhook"),
            (Source::Mqtt, "so.trigger.mqtt"),
            (Source::Cron, "so.trigger.schedule"),
            (Source::Peripheral, "so.trigger.peripheral"),
            (Source::Manual, "so.trigger.manual"),
            (Source::Email, "so.trigger.email"),
            (Source::Slack, "so.trigger.slack"),
            (Source::Telegram, "so.trigger.telegram"),
            (Source::GoogleDrive, "so.trigger.google-drive"),
            (Source::Filesystem, "so.trigger.filesystem"),
            (Source::Amqp, "so.trigger.amqp"),
        ];
        assert_eq!(table.len(), Source::ALL.len());
        for (source, workflow) in table {
            assert_eq!(trigger_workflow(source), workflow, "{source:?}");
        }
    }

    #[test]
    fn every_source_builds_a_valid_envelope_for_the_executor() {
        let steps = fixtures::deploy_steps();
        for source in Source::ALL {
            let envelope = deploy_envelope(source, Destination::Executor, &steps, None);
            if let Err(errors) = schema::validate(&envelope) {
                panic!("{source:?}: {errors:#?}\n{envelope:#}");
            }
            schema::validate_contract(&envelope).unwrap();
            assert_eq!(envelope["header"]["source"], json!(trigger_workflow(source)));
        }
    }

    #[test]
    fn the_envelope_carries_the_run_steps_and_registries() {
        let envelope =
            deploy_envelope(Source::SopWebhook, Destination::Executor, &fixtures::deploy_steps(), Some("trace-1"));
        assert_eq!(
            envelope["header"],
            json!({
                "id": "0195a1b2-0000-7000-8000-000000000001", "version": "1.0",
                "timestamp": "2025-03-01T08:00:01.000Z", "source": "so.trigger.webhook",
                "destination": "executor", "type": "sop.run", "trace_id": "trace-1",
            })
        );
        let payload = &envelope["payload"];
        assert_eq!(payload["memory"]["session_id"], json!("run-9"));
        assert_eq!(payload["memory"]["state"]["trigger"]["path"], json!("/sop/deploy"));
        assert_eq!(payload["memory"]["state"]["trigger"]["body"]["branch"], json!("main"));
        assert_eq!(payload["memory"]["state"]["sop"], json!({"name": "deploy-pipeline", "version": "1.2.0"}));
        assert_eq!(payload["memory"]["stack"], json!([]));
        assert_eq!(
            payload["steps"],
            json!([
                {"type": "tool", "ref": "ci_status", "params": {"pipeline": "service-a"}, "id": "verify"},
                {"type": "usecase", "ref": "rolling_deploy", "params": {"service": "service-a", "zones": ["eu-west-1a", "eu-west-1b"]}},
                {"type": "capability", "ref": "health_watch", "params": {}},
            ])
        );
        let files = payload["registryFiles"].as_array().unwrap();
        let refs: Vec<&str> = files.iter().map(|f| f["ref"].as_str().unwrap()).collect();
        assert_eq!(refs, ["tools", "capabilities", "usecases"], "the Executor files each registry under its category");
        assert_eq!(files[0]["content"], json!({"tools": [{"ref": "ci_status"}]}));
        let text = envelope.to_string();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/registries");
        assert!(!text.contains(dir.to_str().unwrap()), "no server path leaves fanin: {text}");
        assert!(!text.contains(".json\""), "{text}");
        let fallback = &payload["options"]["fallbackRegistry"];
        assert_eq!(fallback.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["capabilities", "tools", "usecases"]);
        assert_ne!(fallback["tools"], files[0]["content"], "the fallback is the local copy, not the Drive one");
    }

    #[test]
    fn a_run_for_the_agent_may_come_without_steps() {
        let envelope = deploy_envelope(Source::Mqtt, Destination::Agent, &[], None);
        schema::validate(&envelope).unwrap();
        schema::validate_contract(&envelope).unwrap();
        assert!(envelope["payload"].get("steps").is_none(), "the contract takes no empty list of steps");
    }

    #[test]
    fn the_executor_refuses_what_it_cannot_run() {
        let envelope = deploy_envelope(Source::Manual, Destination::Executor, &[], None);
        let errors = schema::validate(&envelope).unwrap_err();
        assert!(errors.iter().any(|e| e.starts_with("/payload: \"steps\" is a required property")), "{errors:?}");

        // An agent-only step (no type, no ref) is named by the schema check.
        let envelope = deploy_envelope(Source::Manual, Destination::Executor, &fixtures::agent_steps(), None);
        let errors = schema::validate(&envelope).unwrap_err();
        assert!(
            errors.iter().any(|e| e.starts_with("/payload/steps/0: \"type\" is a required property")),
            "{errors:?}"
        );
    }

    mod props {
        use chrono::TimeZone;
        use proptest::prelude::*;

        use super::*;
        use crate::proptest_support::{config, hostile_text};

        fn id() -> impl Strategy<Value = String> {
            hostile_text(12).prop_filter("ids are never empty", |s| !s.is_empty())
        }

        proptest! {
            #![proptest_config(config(64))]

            /// For any event, steps and header, the envelope passes the
            /// shipped schema and reads back from its text unchanged.
            #[test]
            fn any_run_gives_a_valid_envelope_that_reads_back(
                (destination, steps) in prop::sample::select(vec![Destination::Agent, Destination::Executor])
                    .prop_flat_map(|d| (Just(d), fixtures::any_steps(d == Destination::Executor)
                        .prop_map(|steps| steps.into_iter().filter(|s| s.kind.is_some()).collect::<Vec<_>>())
                        .prop_filter("the executor gets steps", move |s| d == Destination::Agent || !s.is_empty()))),
                event in fixtures::any_event(),
                (envelope_id, run_id, trace_id) in (id(), id(), prop::option::of(id())),
                millis in 0i64..253_402_300_799_999,
                sop_version in hostile_text(8),
                with_registries in any::<bool>(),
            ) {
                let trigger = legacy::event_json(&event);
                let registries =
                    if with_registries { example_registries() } else { RegistrySnapshot { categories: Vec::new() } };
                let input = ExecutionInput {
                    header: Header {
                        id: &envelope_id,
                        timestamp: Utc.timestamp_millis_opt(millis).unwrap(),
                        destination,
                        trace_id: trace_id.as_deref(),
                    },
                    run: Run {
                        run_id: &run_id,
                        sop_name: "s",
                        sop_version: &sop_version,
                        source: event.source,
                        trigger: &trigger,
                        session: None,
                    },
                    steps: &steps,
                    registries: &registries,
                };
                let envelope = build(&input);
                prop_assert!(schema::validate(&envelope).is_ok(), "{:?}", schema::validate(&envelope));
                prop_assert!(schema::validate_contract(&envelope).is_ok(), "{:?}", schema::validate_contract(&envelope));
                let text = serde_json::to_string(&envelope).unwrap();
                prop_assert_eq!(&serde_json::from_str::<Value>(&text).unwrap(), &envelope);
                let trigger = &envelope["payload"]["memory"]["state"]["trigger"];
                prop_assert_eq!(trigger.get("body").unwrap_or(&trigger["payload"]), &event.payload.to_value());
                prop_assert_eq!(envelope["payload"].get("steps").and_then(Value::as_array).map_or(0, Vec::len), steps.len());
            }
        }
    }
}
