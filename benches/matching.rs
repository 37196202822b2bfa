//! Matching one event against 10, 1 000 and 10 000 SOPs through the real
//! `Catalog` (index lookup, then conditions on the candidates). The target
//! (issue 5): p50 ≤ 2 µs at 10 000 SOPs, and ≤ 2× the figure at 10 SOPs.
//!
//! The SOP sets are generated here, never committed: SOP `i` has one trigger
//! whose type turns with `i` (MQTT, webhook, peripheral, cron), and MQTT
//! filters turn between a `+` in the middle, a trailing `#` and a leading
//! `+`, so a topic walks several trie branches. Every measured event matches
//! exactly one SOP (checked before measuring), or none for the miss case.

use std::hint::black_box;
use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fanin::cron::parse_schedule;
use fanin::dispatch::index::TriggerRef;
use fanin::dispatch::Catalog;
use fanin::event::{Event, Payload, Source};
use fanin::sop::condition::Condition;
use fanin::sop::{AdmissionPolicy, Destination, ExecutionMode, Priority, Sop, Trigger, TriggerSpec};
use serde_json::json;

const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// The trigger type SOP `i` gets.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    MqttMiddlePlus,
    Webhook,
    Peripheral,
    Cron,
    MqttTrailingHash,
    MqttLeadingPlus,
}

/// Four trigger types in turn; the MQTT turn itself turns between three
/// filter shapes.
fn kind(i: usize) -> Kind {
    match i % 4 {
        0 => [Kind::MqttMiddlePlus, Kind::MqttTrailingHash, Kind::MqttLeadingPlus][(i / 4) % 3],
        1 => Kind::Webhook,
        2 => Kind::Peripheral,
        _ => Kind::Cron,
    }
}

fn cron_expression(i: usize) -> String {
    format!("{} {} {} * * *", i % 60, (i / 60) % 60, (i / 3600) % 24)
}

fn cron_timezone(i: usize) -> &'static str {
    if i % 8 == 3 {
        "UTC"
    } else {
        "Europe/Paris"
    }
}

fn trigger(i: usize) -> Trigger {
    let condition = |text: &str| Some(Condition::parse(text).expect("benchmark condition parses"));
    match kind(i) {
        Kind::MqttMiddlePlus => Trigger {
            spec: TriggerSpec::Mqtt { topic: format!("site/{i}/+/alert") },
            condition: condition("$.severity >= 2"),
        },
        Kind::MqttTrailingHash => {
            Trigger { spec: TriggerSpec::Mqtt { topic: format!("fleet/{i}/#") }, condition: None }
        }
        Kind::MqttLeadingPlus => Trigger {
            spec: TriggerSpec::Mqtt { topic: format!("+/{i}/status") },
            condition: condition("$.state == \"down\" || $.errors > 10"),
        },
        Kind::Webhook => Trigger { spec: TriggerSpec::Webhook { path: format!("/sop/hook-{i}") }, condition: None },
        Kind::Peripheral => Trigger {
            spec: TriggerSpec::Peripheral { board: format!("board-{}", i % 32), signal: format!("pin_{i}") },
            condition: condition("> 0"),
        },
        Kind::Cron => {
            let schedule = parse_schedule(&cron_expression(i), Some(cron_timezone(i))).expect("benchmark cron parses");
            Trigger { spec: TriggerSpec::Cron(Box::new(schedule)), condition: None }
        }
    }
}

fn sop(i: usize) -> Sop {
    Sop {
        name: format!("bench-{i:05}"),
        description: "generated for the matching benchmark".into(),
        version: "1.0.0".into(),
        priority: Priority::Normal,
        execution_mode: ExecutionMode::Auto,
        cooldown_secs: 0,
        max_concurrent: 1,
        admission_policy: AdmissionPolicy::Parallel,
        destination: Destination::Agent,
        triggers: vec![trigger(i)],
        steps: Vec::new(),
        file: PathBuf::from(format!("generated/bench-{i:05}/SOP.toml")),
    }
}

fn catalog(n: usize) -> Catalog {
    Catalog::new((0..n).map(sop).collect())
}

/// The last SOP of a set that has trigger kind `k`: the event aimed at it
/// exists at every size, and at 10 000 it is deep in the set.
fn last_of(n: usize, k: Kind) -> usize {
    (0..n).rev().find(|&i| kind(i) == k).expect("every kind occurs in every set")
}

/// The events measured at size `n`, each with how many SOPs it must match.
fn events(n: usize) -> Vec<(&'static str, Event, usize)> {
    let at = Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap();
    let json = |v: serde_json::Value| Payload::Json(v);
    let mqtt_mid = last_of(n, Kind::MqttMiddlePlus);
    let mqtt_hash = last_of(n, Kind::MqttTrailingHash);
    let mqtt_lead = last_of(n, Kind::MqttLeadingPlus);
    let webhook = last_of(n, Kind::Webhook);
    let peripheral = last_of(n, Kind::Peripheral);
    let cron = last_of(n, Kind::Cron);
    let mut cron_event =
        Event::new(fanin::ids::fresh(), Source::Cron, cron_expression(cron), Payload::Json(json!({})), at);
    cron_event.timezone = Some(cron_timezone(cron).to_string());
    vec![
        (
            "mqtt_plus_condition",
            Event::new(
                fanin::ids::fresh(),
                Source::Mqtt,
                format!("site/{mqtt_mid}/dev-7/alert"),
                json(json!({"severity": 3})),
                at,
            ),
            1,
        ),
        (
            "mqtt_hash",
            Event::new(
                fanin::ids::fresh(),
                Source::Mqtt,
                format!("fleet/{mqtt_hash}/a/b/c"),
                json(json!({"v": 1})),
                at,
            ),
            1,
        ),
        (
            "mqtt_leading_plus",
            Event::new(
                fanin::ids::fresh(),
                Source::Mqtt,
                format!("dc1/{mqtt_lead}/status"),
                json(json!({"state": "down"})),
                at,
            ),
            1,
        ),
        (
            "mqtt_miss",
            Event::new(fanin::ids::fresh(), Source::Mqtt, "site/none/dev-7/alert", json(json!({"severity": 3})), at),
            0,
        ),
        (
            "webhook",
            Event::new(
                fanin::ids::fresh(),
                Source::SopWebhook,
                format!("/sop/hook-{webhook}"),
                json(json!({"a": 1})),
                at,
            ),
            1,
        ),
        (
            "peripheral",
            Event::new(
                fanin::ids::fresh(),
                Source::Peripheral,
                format!("board-{}/pin_{peripheral}", peripheral % 32),
                json(json!(1)),
                at,
            ),
            1,
        ),
        ("cron", cron_event, 1),
    ]
}

fn bench_matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    for n in SIZES {
        let catalog = catalog(n);
        let mut out: Vec<TriggerRef> = Vec::with_capacity(16);
        for (name, event, expected) in events(n) {
            out.clear();
            catalog.matching(&event, &mut out);
            assert_eq!(out.len(), expected, "{name} at {n} SOPs must match {expected} SOP(s), matched {out:?}");
            group.bench_with_input(BenchmarkId::new(name, n), &event, |b, event| {
                b.iter(|| {
                    out.clear();
                    catalog.matching(black_box(event), &mut out);
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

/// Building the catalog (index included) is what a start or a reload pays.
fn bench_catalog_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("catalog_build");
    group.sample_size(10);
    for n in SIZES {
        let sops: Vec<Sop> = (0..n).map(sop).collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &sops, |b, sops| {
            b.iter(|| black_box(Catalog::new(sops.clone())))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_matching, bench_catalog_build);
criterion_main!(benches);
