//! Cron arithmetic: the next fire point, the fire points of a
//! window (what every scheduler look computes), and the next fire of
//! 10 000 schedules (what the scheduler plans at start and on reload), with
//! and without compiling each schedule first (a look compiles its schedule:
//! compiled forms are not kept, see `src/sources/cron.rs`).

use std::hint::black_box;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fanin::cron::{fires_in_window, next_fire_after, parse_schedule, Compiled};
use fanin::sop::Schedule;

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

/// (name, expression, timezone, the instant searched from)
fn schedules() -> Vec<(&'static str, &'static str, &'static str, DateTime<Utc>)> {
    vec![
        ("daily_paris", "0 0 8 * * *", "Europe/Paris", at(2025, 3, 1, 9, 0, 0)),
        ("every_15_min", "*/15 * * * *", "UTC", at(2025, 3, 1, 9, 7, 0)),
        ("weekdays_5_fields", "30 9 * * 1-5", "America/New_York", at(2025, 3, 1, 9, 0, 0)),
        // From the day before the spring-forward gap: the 02:30 of that night
        // does not exist, so the search rejects croner's moved instant.
        ("dst_gap", "0 30 2 * * *", "Europe/Paris", at(2025, 3, 29, 12, 0, 0)),
        ("seven_fields_year", "0 0 12 1 1 * 2030", "UTC", at(2025, 3, 1, 9, 0, 0)),
    ]
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("cron_parse");
    for (name, expression, tz, _) in schedules() {
        group.bench_with_input(BenchmarkId::from_parameter(name), &(expression, tz), |b, (e, tz)| {
            b.iter(|| black_box(parse_schedule(black_box(e), Some(tz)).unwrap()))
        });
    }
    group.finish();
}

fn bench_next_fire(c: &mut Criterion) {
    let mut group = c.benchmark_group("cron_next_fire");
    for (name, expression, tz, from) in schedules() {
        let schedule = parse_schedule(expression, Some(tz)).unwrap().compile();
        assert!(next_fire_after(&schedule, from).is_some(), "{name} has a next fire");
        group.bench_with_input(BenchmarkId::from_parameter(name), &from, |b, from| {
            b.iter(|| black_box(next_fire_after(&schedule, black_box(*from))))
        });
    }
    group.finish();
}

/// A scheduler look: the window since the last check. Short windows are the
/// steady state; the day-long one is a catch-up after downtime.
fn bench_window(c: &mut Criterion) {
    let mut group = c.benchmark_group("cron_window");
    let from = at(2025, 3, 1, 9, 0, 0);
    let cases = [
        ("every_15_min_1h", "*/15 * * * *", TimeDelta::hours(1)),
        ("daily_1s_empty", "0 0 8 * * *", TimeDelta::seconds(1)),
        ("every_second_1min", "* * * * * *", TimeDelta::minutes(1)),
        ("every_minute_1day", "* * * * *", TimeDelta::days(1)),
    ];
    for (name, expression, span) in cases {
        let schedule = parse_schedule(expression, Some("Europe/Paris")).unwrap().compile();
        group.bench_with_input(BenchmarkId::from_parameter(name), &span, |b, span| {
            b.iter(|| black_box(fires_in_window(&schedule, black_box(from), from + *span)))
        });
    }
    group.finish();
}

/// 10 000 distinct daily schedules, half in UTC and half in Paris.
fn ten_thousand() -> Vec<Schedule> {
    (0..10_000)
        .map(|i| {
            let expression = format!("{} {} {} * * *", i % 60, (i / 60) % 60, (i / 3600) % 24);
            let tz = if i % 2 == 0 { "UTC" } else { "Europe/Paris" };
            parse_schedule(&expression, Some(tz)).unwrap()
        })
        .collect()
}

fn bench_many(c: &mut Criterion) {
    let mut group = c.benchmark_group("cron_10000_schedules");
    group.sample_size(10);
    let schedules = ten_thousand();
    let compiled: Vec<Compiled> = schedules.iter().map(Schedule::compile).collect();
    let from = at(2025, 3, 1, 9, 0, 0);
    group.bench_function("next_fire_of_each", |b| {
        b.iter(|| compiled.iter().filter_map(|s| next_fire_after(s, black_box(from))).min())
    });
    group.bench_function("compile_and_next_fire_of_each", |b| {
        b.iter(|| schedules.iter().filter_map(|s| next_fire_after(&s.compile(), black_box(from))).min())
    });
    group.finish();
}

criterion_group!(benches, bench_parse, bench_next_fire, bench_window, bench_many);
criterion_main!(benches);
