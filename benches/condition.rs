//! Condition evaluation: the cost a candidate trigger adds to a
//! match, for the common shapes, when it holds and when it fails closed.
//! Parsing happens once per SOP load; it is measured too, for reloads.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fanin::event::Payload;
use fanin::sop::condition::Condition;
use serde_json::json;

/// (name, condition, payload, verdict)
fn cases() -> Vec<(&'static str, &'static str, Payload, bool)> {
    let sensor = json!({"sensor": "t-17", "severity": 3, "reading": {"celsius": 81.5, "history": [79.0, 80.2]}});
    vec![
        ("number_ge_holds", "$.severity >= 2", Payload::Json(sensor.clone()), true),
        ("number_ge_fails", "$.severity >= 5", Payload::Json(sensor.clone()), false),
        ("missing_path", "$.missing.deeper >= 2", Payload::Json(sensor.clone()), false),
        ("nested_index", "$.reading.history[1] > 80", Payload::Json(sensor.clone()), true),
        ("string_eq", "$.branch == \"main\"", Payload::Json(json!({"branch": "main", "build": 812})), true),
        ("numeric_string", "$.level >= 2", Payload::Json(json!({"level": "3"})), true),
        (
            "compound",
            "($.severity >= 2 && $.sensor != \"test\") || !($.reading.celsius < 90)",
            Payload::Json(sensor),
            true,
        ),
        ("direct_number", "> 0", Payload::Json(json!(1)), true),
        ("text_payload_with_path", "$.severity >= 2", Payload::Text("severity=3".into()), false),
    ]
}

fn bench_evaluate(c: &mut Criterion) {
    let mut group = c.benchmark_group("condition_eval");
    for (name, text, payload, verdict) in cases() {
        let condition = Condition::parse(text).expect("benchmark condition parses");
        assert_eq!(condition.matches(&payload), verdict, "{name}: {text}");
        group.bench_with_input(BenchmarkId::from_parameter(name), &payload, |b, payload| {
            b.iter(|| black_box(condition.matches(black_box(payload))))
        });
    }
    group.finish();
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("condition_parse");
    for (name, text) in [
        ("simple", "$.severity >= 2"),
        ("compound", "($.severity >= 2 && $.sensor != \"test\") || !($.reading.celsius < 90)"),
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(name), text, |b, text| {
            b.iter(|| black_box(Condition::parse(black_box(text)).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_evaluate, bench_parse);
criterion_main!(benches);
