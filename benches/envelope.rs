//! Envelope building plus schema validation: what every run
//! that leaves through the outbox pays once, at its start. Uses the example
//! SOPs and registries of the repository, so the envelopes are realistic.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use fanin::envelope::execution::{self, ExecutionInput, Header};
use fanin::envelope::registry::{Category, CategoryRegistry, RegistrySnapshot};
use fanin::envelope::{legacy, schema, Run};
use fanin::event::{Event, Payload, Source};
use fanin::sop::{load_dir, Destination, ExecutionMode, Sop};
use serde_json::{json, Value};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn example_sop(name: &str) -> Sop {
    let report = load_dir(&examples().join("sops"), ExecutionMode::Supervised);
    assert!(report.errors.is_empty(), "example SOPs load: {:?}", report.errors);
    report.sops.into_iter().find(|s| s.name == name).expect("example SOP exists")
}

/// The example registries as a snapshot, local copies only (no Drive).
fn registries() -> RegistrySnapshot {
    let categories = Category::ALL
        .into_iter()
        .map(|category| {
            let local_path = examples().join("registries").join(category.file_name());
            let text = std::fs::read_to_string(&local_path).expect("example registry reads");
            CategoryRegistry {
                category,
                local: serde_json::from_str(&text).expect("example registry is JSON"),
                local_path,
                local_error: None,
                file_id: None,
                drive: None,
                drive_error: None,
            }
        })
        .collect();
    RegistrySnapshot { categories }
}

fn event(source: Source, topic: &str) -> Event {
    let at = Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap();
    Event::new(
        fanin::ids::fresh(),
        source,
        topic,
        Payload::Json(json!({"branch": "main", "build": 812, "commit": "9f2c1e0"})),
        at,
    )
}

fn run<'a>(sop: &'a Sop, event: &Event, trigger: &'a Value) -> Run<'a> {
    Run {
        run_id: "0195a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        sop_name: &sop.name,
        sop_version: &sop.version,
        source: event.source,
        trigger,
        session: None,
    }
}

fn bench_legacy(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope_legacy");
    let sop = example_sop("sensor-alert");
    let ev = event(Source::Mqtt, "sensors/t-17/alert");
    let trigger = legacy::event_json(&ev);
    let r = run(&sop, &ev, &trigger);
    // An agent run leaves as one legacy envelope only when its SOP has no
    // steps (with steps it goes through the agent loop).
    let steps = &[];
    schema::validate(&legacy::build_for_run(&r, steps)).expect("legacy envelope is valid");
    group.bench_function("fallback_build", |b| b.iter(|| black_box(legacy::build(black_box(&ev), None))));
    group.bench_function("run_build", |b| b.iter(|| black_box(legacy::build_for_run(black_box(&r), steps))));
    let envelope = legacy::build_for_run(&r, steps);
    group.bench_function("validate", |b| b.iter(|| black_box(schema::validate(black_box(&envelope)).is_ok())));
    group.bench_function("run_build_and_validate", |b| {
        b.iter(|| {
            let envelope = legacy::build_for_run(black_box(&r), steps);
            black_box(schema::validate(&envelope).is_ok())
        })
    });
    group.finish();
}

fn bench_execution(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope_execution");
    let sop = example_sop("deploy-pipeline");
    let registries = registries();
    let ev = event(Source::SopWebhook, "/sop/deploy");
    let trigger = legacy::event_json(&ev);
    let input = ExecutionInput {
        header: Header {
            id: "0195a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c",
            timestamp: ev.received_at,
            destination: Destination::Executor,
            trace_id: None,
        },
        run: run(&sop, &ev, &trigger),
        steps: &sop.steps,
        registries: &registries,
    };
    let envelope = execution::build(&input);
    schema::validate(&envelope).expect("execution envelope is valid");
    group.bench_function("build", |b| b.iter(|| black_box(execution::build(black_box(&input)))));
    group.bench_function("validate", |b| b.iter(|| black_box(schema::validate(black_box(&envelope)).is_ok())));
    group.bench_function("build_and_validate", |b| {
        b.iter(|| {
            let envelope = execution::build(black_box(&input));
            black_box(schema::validate(&envelope).is_ok())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_legacy, bench_execution);
criterion_main!(benches);
