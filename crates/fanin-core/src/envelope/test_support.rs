//! Fixtures for envelope tests, here and in the runtime crate: a deploy
//! event and its steps, generators of events and steps, the example
//! registries shipped with the repository, and a deploy envelope built from
//! them.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use std::path::PathBuf;

use super::execution::{build, ExecutionInput, Header};
use super::registry::{Category, CategoryRegistry, RegistrySnapshot};
use super::{legacy, Run};
use crate::event::{Event, Payload, Request, Source};
use crate::proptest_support::{hostile_text, json_object, json_value};
use crate::sop::{Destination, Step, StepKind};

pub fn deploy_event(source: Source) -> Event {
    let at = Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap();
    let topic = match source {
        Source::Webhook => "/webhook",
        Source::SopWebhook => "/sop/deploy",
        Source::Mqtt => "ops/deploy/service-a",
        Source::Cron => "0 0 8 * * *",
        Source::Peripheral => "nucleo-f401re/pin_3",
        Source::Manual => "deploy-pipeline",
        Source::Email => "email/ops",
        Source::Slack => "slack/team",
        Source::Telegram => "telegram/bot",
        Source::GoogleDrive => "google_drive/shared",
        Source::Filesystem => "/srv/drop/deploy.json",
        Source::Amqp => "ops.deploy.service-a",
    };
    let payload = Payload::Json(json!({"branch": "main", "build": 812, "commit": "9f2c1e0"}));
    let mut event = Event::new("0195a1b2-0000-7000-8000-0000000000e1", source, topic, payload, at);
    if matches!(source, Source::Webhook | Source::SopWebhook) {
        event.request = Some(Request {
            query: json!({"env": "prod"}).as_object().cloned().unwrap(),
            headers: json!({"content-type": "application/json", "user-agent": "ci/2.1"}).as_object().cloned().unwrap(),
        });
    }
    if source == Source::Amqp {
        let properties = json!({"exchange": "ops", "routing_key": topic, "redelivered": false, "message_id": "m-1"});
        event.request = Some(Request { query: Default::default(), headers: properties.as_object().cloned().unwrap() });
    }
    event
}

fn params(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

/// The steps of examples/sops/deploy-pipeline.
pub fn deploy_steps() -> Vec<Step> {
    vec![
        Step {
            number: 1,
            title: "Verify build".into(),
            body: "Check that the CI build named in the payload is green.".into(),
            tools: vec![],
            requires_confirmation: false,
            kind: Some(StepKind::Tool),
            reference: Some("ci_status".into()),
            params: params(json!({"pipeline": "service-a"})),
            id: Some("verify".into()),
        },
        Step {
            number: 2,
            title: "Roll out".into(),
            body: "Roll the new image out to production, one zone at a time.".into(),
            tools: vec![],
            requires_confirmation: true,
            kind: Some(StepKind::Usecase),
            reference: Some("rolling_deploy".into()),
            params: params(json!({"service": "service-a", "zones": ["eu-west-1a", "eu-west-1b"]})),
            id: None,
        },
        Step {
            number: 3,
            title: "Check health".into(),
            body: "Watch error rate and latency for ten minutes; roll back on regression.".into(),
            tools: vec!["http_request".into()],
            requires_confirmation: false,
            kind: Some(StepKind::Capability),
            reference: Some("health_watch".into()),
            params: Map::new(),
            id: None,
        },
    ]
}

/// Any event a source can hand over: any source, topic and payload, at
/// any millisecond from 1970 to 9999.
pub fn any_event() -> impl Strategy<Value = Event> {
    let source = prop::sample::select(Source::ALL.to_vec());
    let payload = prop_oneof![
        3 => json_value(5, 40).prop_map(Payload::Json),
        1 => hostile_text(30).prop_map(Payload::Text),
    ];
    let request = prop::option::of((json_object(2, 6), json_object(1, 6)))
        .prop_map(|parts| parts.map(|(query, headers)| Request { query, headers }));
    (source, hostile_text(20), payload, 0i64..253_402_300_799_999, request).prop_map(
        |(source, topic, payload, millis, request)| {
            let mut event =
                Event::new(format!("e-{millis}"), source, topic, payload, Utc.timestamp_millis_opt(millis).unwrap());
            if matches!(source, Source::Webhook | Source::SopWebhook) {
                event.request = request;
            }
            event
        },
    )
}

/// Steps as the loaders can produce them: any text, and for the
/// executor always a `type` and a non-empty `ref`.
pub fn any_steps(for_executor: bool) -> impl Strategy<Value = Vec<Step>> {
    let kind = prop::sample::select(vec![StepKind::Tool, StepKind::Capability, StepKind::Usecase]);
    let target = (kind, hostile_text(10).prop_filter("a ref is never blank", |r| !r.trim().is_empty()));
    let target = if for_executor { target.prop_map(Some).boxed() } else { prop::option::of(target).boxed() };
    let step = (
        (hostile_text(12), hostile_text(40), prop::collection::vec(hostile_text(8), 0..3), any::<bool>()),
        target,
        json_object(2, 8),
        prop::option::of(hostile_text(8).prop_filter("an id is never blank", |id| !id.trim().is_empty())),
    );
    let min = usize::from(for_executor);
    prop::collection::vec(step, min..4).prop_map(|steps| {
        steps
            .into_iter()
            .enumerate()
            .map(|(i, ((title, body, tools, requires_confirmation), target, params, id))| Step {
                number: i as u32 + 1,
                title,
                body,
                tools,
                requires_confirmation,
                kind: target.as_ref().map(|(kind, _)| *kind),
                reference: target.map(|(_, reference)| reference),
                params,
                id,
            })
            .collect()
    })
}

/// Agent steps without executor fields (examples/sops/sensor-alert).
pub fn agent_steps() -> Vec<Step> {
    vec![Step {
        number: 1,
        title: "Look at history".into(),
        body: "Compare with the last hour of readings.".into(),
        tools: vec!["sensor_history".into()],
        requires_confirmation: false,
        kind: None,
        reference: None,
        params: Map::new(),
        id: None,
    }]
}

/// The example registries shipped with the repository, as local copies;
/// tools also has a Drive copy.
pub fn example_registries() -> RegistrySnapshot {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/registries");
    let categories = Category::ALL
        .into_iter()
        .map(|category| {
            let local_path = dir.join(category.file_name());
            let text = std::fs::read_to_string(&local_path).unwrap();
            let local: Value = serde_json::from_str(&text).unwrap();
            let from_drive = category == Category::Tools;
            CategoryRegistry {
                category,
                local_path,
                drive: from_drive.then(|| json!({"tools": [{"ref": "ci_status"}]})),
                file_id: from_drive.then(|| "1DriveToolsId".to_string()),
                local,
                local_error: None,
                drive_error: None,
            }
        })
        .collect();
    RegistrySnapshot { categories }
}

pub fn deploy_envelope(source: Source, destination: Destination, steps: &[Step], trace_id: Option<&str>) -> Value {
    let event = deploy_event(source);
    let trigger = legacy::event_json(&event);
    let registries = example_registries();
    let input = ExecutionInput {
        header: Header {
            id: "0195a1b2-0000-7000-8000-000000000001",
            timestamp: Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 1).unwrap(),
            destination,
            trace_id,
        },
        run: Run {
            run_id: "run-9",
            sop_name: "deploy-pipeline",
            sop_version: "1.2.0",
            source,
            trigger: &trigger,
            session: None,
        },
        steps,
        registries: &registries,
    };
    build(&input)
}
