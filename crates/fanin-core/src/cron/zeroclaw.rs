//! Cron expressions as ZeroClaw's own tests expect them to fire, against
//! fanin's schedules.
//!
//! The expectations come from zeroclaw-labs/zeroclaw: the tests of its
//! normaliser and scheduler (`crates/zeroclaw-runtime/src/cron/schedule.rs`)
//! and of its SOP cron triggers (`crates/zeroclaw-runtime/src/sop/
//! dispatch.rs`). A weekday-field test there says what ZeroClaw's parser
//! receives; here that is written as the days it fires on. Rows where fanin
//! differs on purpose say why, and whether `fanin validate` warns;
//! `docs/operations.md` ("Coming from ZeroClaw") lists the same.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc, Weekday};

use super::{next_fire_after, parse_schedule};

/// What an expression does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fires {
    /// At the expression's time (UTC) on exactly these weekdays of a week,
    /// Monday first.
    On(&'static str),
    /// After the first instant, next at the second (RFC 3339).
    Next(&'static str, &'static str),
    /// At the expression's time in the zone of the host it runs on.
    InHostZone,
    /// Not a schedule: ZeroClaw skips the trigger, fanin refuses the SOP.
    Never,
}

use Fires::{InHostZone, Never, Next, On};

/// (ZeroClaw test, expression, timezone, what ZeroClaw expects, what fanin
/// does, why they differ — empty when they do not —, whether fanin warns).
type Row = (&'static str, &'static str, Option<&'static str>, Fires, Fires, &'static str, bool);

const ALL: &str = "MON,TUE,WED,THU,FRI,SAT,SUN";

const ROWS: &[Row] = &[
    // schedule.rs: the weekday field of a 5-field expression, in the
    // standard numbering (0 and 7 = Sunday) both read alike.
    ("normalize_weekday_field_translates_standard_crontab_values", "0 0 * * 0", None, On("SUN"), On("SUN"), "", false),
    ("normalize_weekday_field_translates_standard_crontab_values", "0 0 * * 1", None, On("MON"), On("MON"), "", false),
    ("normalize_weekday_field_translates_standard_crontab_values", "0 0 * * 5", None, On("FRI"), On("FRI"), "", false),
    ("normalize_weekday_field_translates_standard_crontab_values", "0 0 * * 6", None, On("SAT"), On("SAT"), "", false),
    ("normalize_weekday_field_translates_standard_crontab_values", "0 0 * * 7", None, On("SUN"), On("SUN"), "", false),
    (
        "normalize_weekday_field_translates_ranges",
        "0 0 * * 1-5",
        None,
        On("MON,TUE,WED,THU,FRI"),
        On("MON,TUE,WED,THU,FRI"),
        "",
        false,
    ),
    ("normalize_weekday_field_translates_ranges", "0 0 * * 0-6", None, On(ALL), On(ALL), "", false),
    ("normalize_weekday_field_handles_sunday_alias_in_range", "0 0 * * 0-7", None, On(ALL), On(ALL), "", false),
    (
        "normalize_weekday_field_handles_sunday_alias_in_range",
        "0 0 * * 6-7",
        None,
        On("SAT,SUN"),
        On("SAT,SUN"),
        "",
        false,
    ),
    (
        "normalize_weekday_field_handles_sunday_alias_in_range",
        "0 0 * * 5-7",
        None,
        On("FRI,SAT,SUN"),
        On("FRI,SAT,SUN"),
        "",
        false,
    ),
    (
        "normalize_weekday_field_handles_sunday_alias_in_range",
        "0 0 * * 5-0",
        None,
        On("FRI,SAT,SUN"),
        On("FRI,SAT,SUN"),
        "",
        false,
    ),
    (
        "normalize_weekday_field_applies_steps_to_expanded_sunday_alias_ranges",
        "0 0 * * 0-7/2",
        None,
        On("TUE,THU,SAT,SUN"),
        On("TUE,THU,SAT,SUN"),
        "",
        false,
    ),
    (
        "normalize_weekday_field_applies_steps_to_expanded_sunday_alias_ranges",
        "0 0 * * 6-7/2",
        None,
        On("SAT"),
        On("SAT"),
        "",
        false,
    ),
    (
        "normalize_weekday_field_applies_steps_to_expanded_sunday_alias_ranges",
        "0 0 * * 5-7/2",
        None,
        On("FRI,SUN"),
        On("FRI,SUN"),
        "",
        false,
    ),
    (
        "normalize_weekday_field_applies_steps_to_expanded_sunday_alias_ranges",
        "0 0 * * 1-5/2",
        None,
        On("MON,WED,FRI"),
        On("MON,WED,FRI"),
        "",
        false,
    ),
    (
        "normalize_weekday_field_applies_steps_to_expanded_sunday_alias_ranges",
        "0 0 * * 0-6/2",
        None,
        On("TUE,THU,SAT,SUN"),
        On("TUE,THU,SAT,SUN"),
        "",
        false,
    ),
    (
        "normalize_weekday_field_applies_steps_to_expanded_sunday_alias_ranges",
        "0 0 * * 6-7/0",
        None,
        Never,
        Never,
        "",
        false,
    ),
    ("normalize_weekday_field_translates_lists", "0 0 * * 0,6", None, On("SAT,SUN"), On("SAT,SUN"), "", false),
    (
        "normalize_weekday_field_translates_lists",
        "0 0 * * 1,3,5",
        None,
        On("MON,WED,FRI"),
        On("MON,WED,FRI"),
        "",
        false,
    ),
    (
        "normalize_weekday_field_translates_steps",
        "0 0 * * */2",
        None,
        On("TUE,THU,SAT,SUN"),
        On("TUE,THU,SAT,SUN"),
        "",
        false,
    ),
    ("normalize_weekday_field_passes_through_wildcards_and_names", "0 0 * * *", None, On(ALL), On(ALL), "", false),
    ("normalize_weekday_field_passes_through_wildcards_and_names", "0 0 * * ?", None, On(ALL), On(ALL), "", false),
    (
        "normalize_weekday_field_passes_through_wildcards_and_names",
        "0 0 * * MON-FRI",
        None,
        On("MON,TUE,WED,THU,FRI"),
        On("MON,TUE,WED,THU,FRI"),
        "",
        false,
    ),
    (
        "normalize_weekday_field_passes_through_wildcards_and_names",
        "0 0 * * MON,WED,FRI",
        None,
        On("MON,WED,FRI"),
        On("MON,WED,FRI"),
        "",
        false,
    ),
    // schedule.rs: whole expressions.
    (
        "normalize_expression_applies_weekday_fix_to_5_field",
        "0 9 * * 1-5",
        None,
        On("MON,TUE,WED,THU,FRI"),
        On("MON,TUE,WED,THU,FRI"),
        "",
        false,
    ),
    (
        "normalize_expression_does_not_modify_6_field",
        "0 0 9 * * 1-5",
        None,
        On("MON,TUE,WED,THU,SUN"),
        On("MON,TUE,WED,THU,FRI"),
        "weekdays are numbered alike in every form: 1 is Monday in 6 fields too",
        true,
    ),
    (
        "weekday_1_5_schedules_monday_through_friday",
        "0 9 * * 1-5",
        Some("UTC"),
        Next("2026-02-15T00:00:00Z", "2026-02-16T09:00:00Z"),
        Next("2026-02-15T00:00:00Z", "2026-02-16T09:00:00Z"),
        "",
        false,
    ),
    (
        "weekday_1_5_does_not_fire_on_saturday_or_sunday",
        "0 9 * * 1-5",
        Some("UTC"),
        Next("2026-02-20T18:00:00Z", "2026-02-23T09:00:00Z"),
        Next("2026-02-20T18:00:00Z", "2026-02-23T09:00:00Z"),
        "",
        false,
    ),
    (
        "weekday_0_means_sunday",
        "0 10 * * 0",
        Some("UTC"),
        Next("2026-02-16T00:00:00Z", "2026-02-22T10:00:00Z"),
        Next("2026-02-16T00:00:00Z", "2026-02-22T10:00:00Z"),
        "",
        false,
    ),
    (
        "weekday_7_means_sunday",
        "0 10 * * 7",
        Some("UTC"),
        Next("2026-02-16T00:00:00Z", "2026-02-22T10:00:00Z"),
        Next("2026-02-16T00:00:00Z", "2026-02-22T10:00:00Z"),
        "",
        false,
    ),
    (
        "weekend_range_6_7_fires_sat_and_sun",
        "0 10 * * 6-7",
        Some("UTC"),
        Next("2026-02-16T00:00:00Z", "2026-02-21T10:00:00Z"),
        Next("2026-02-16T00:00:00Z", "2026-02-21T10:00:00Z"),
        "",
        false,
    ),
    (
        "weekend_range_6_7_fires_sat_and_sun",
        "0 10 * * 6-7",
        Some("UTC"),
        Next("2026-02-21T10:00:00Z", "2026-02-22T10:00:00Z"),
        Next("2026-02-21T10:00:00Z", "2026-02-22T10:00:00Z"),
        "",
        false,
    ),
    (
        "stepped_full_week_sunday_alias_range_fires_every_other_day",
        "0 10 * * 0-7/2",
        Some("UTC"),
        Next("2026-02-16T00:00:00Z", "2026-02-17T10:00:00Z"),
        Next("2026-02-16T00:00:00Z", "2026-02-17T10:00:00Z"),
        "",
        false,
    ),
    (
        "next_run_for_schedule_supports_timezone",
        "0 9 * * *",
        Some("America/Los_Angeles"),
        Next("2026-02-16T00:00:00Z", "2026-02-16T17:00:00Z"),
        Next("2026-02-16T00:00:00Z", "2026-02-16T17:00:00Z"),
        "",
        false,
    ),
    (
        "no_tz_defaults_to_local_timezone",
        "0 9 * * *",
        None,
        InHostZone,
        Next("2026-06-15T12:00:00Z", "2026-06-16T09:00:00Z"),
        "this test is of ZeroClaw's agent jobs; its SOP cron triggers, like fanin's without a timezone, are UTC",
        false,
    ),
    // sop/dispatch.rs: SOP cron triggers.
    ("cron_cache_skips_invalid_expression", "not a valid cron", None, Never, Never, "", false),
    (
        "cron_cache_parses_valid_expression",
        "0 */5 * * *",
        None,
        Next("2026-02-16T00:01:00Z", "2026-02-16T05:00:00Z"),
        Next("2026-02-16T00:01:00Z", "2026-02-16T05:00:00Z"),
        "",
        false,
    ),
    (
        "cron_sop_only_matching_expression_fires",
        "0 0 1 1 *",
        None,
        Next("2026-02-16T00:00:00Z", "2027-01-01T00:00:00Z"),
        Next("2026-02-16T00:00:00Z", "2027-01-01T00:00:00Z"),
        "",
        false,
    ),
    // Not ZeroClaw tests: what its parser does with SOPs written for it.
    (
        "6-field weekdays",
        "0 0 9 * * 2-6",
        None,
        On("MON,TUE,WED,THU,FRI"),
        On("TUE,WED,THU,FRI,SAT"),
        "weekdays are numbered alike in every form: 2-6 is Tuesday to Saturday",
        true,
    ),
    (
        "6-field weekday names",
        "0 0 9 * * MON-FRI",
        None,
        On("MON,TUE,WED,THU,FRI"),
        On("MON,TUE,WED,THU,FRI"),
        "",
        false,
    ),
    (
        "day of month and weekday",
        "0 0 9 1 * MON",
        None,
        Next("2026-02-16T10:00:00Z", "2026-06-01T09:00:00Z"),
        Next("2026-02-16T10:00:00Z", "2026-02-23T09:00:00Z"),
        "a day fires when its day of month or its weekday matches, as in cron",
        true,
    ),
    (
        "day of month and weekday, both required",
        "0 0 9 1 * +MON",
        None,
        Next("2026-02-16T10:00:00Z", "2026-06-01T09:00:00Z"),
        Next("2026-02-16T10:00:00Z", "2026-06-01T09:00:00Z"),
        "",
        false,
    ),
];

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("RFC 3339 in the table").to_utc()
}

/// `fires` in words, to compare what the table says with what fanin does.
fn described(fires: Fires) -> String {
    match fires {
        On(days) => format!("on {days}"),
        Next(after, next) => format!("after {after}, next at {next}"),
        InHostZone => "in the host's zone".to_string(),
        Never => "never".to_string(),
    }
}

/// What fanin does with `expression`, described as `like` is, and whether
/// it warns.
fn fanin(expression: &str, timezone: Option<&str>, like: Fires) -> (String, bool) {
    let Ok(schedule) = parse_schedule(expression, timezone) else { return (described(Never), false) };
    let warned = !schedule.warnings().is_empty();
    let compiled = schedule.compile();
    let fires = match like {
        Next(after, _) => {
            let next = next_fire_after(&compiled, instant(after));
            let next = next.map_or("none".to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            format!("after {after}, next at {next}")
        }
        On(_) | InHostZone | Never => {
            // Every fire point of the week of Monday 2026-02-16.
            let monday = Utc.with_ymd_and_hms(2026, 2, 16, 0, 0, 0).unwrap();
            let mut days = BTreeSet::new();
            let mut cursor = monday - Duration::seconds(1);
            while let Some(next) = next_fire_after(&compiled, cursor).filter(|t| *t < monday + Duration::days(7)) {
                days.insert(next.weekday().num_days_from_monday());
                cursor = next;
            }
            let names: Vec<String> = days
                .into_iter()
                .map(|d| Weekday::try_from(d as u8).expect("0 to 6").to_string().to_uppercase())
                .collect();
            format!("on {}", names.join(","))
        }
    };
    (fires, warned)
}

#[test]
fn zeroclaw_cron_expectations_hold_except_where_fanin_differs_on_purpose() {
    for &(source, expression, timezone, zeroclaw, expected, why, warns) in ROWS {
        let row = format!("{source}: `{expression}` ({timezone:?})");
        assert_eq!(why.is_empty(), zeroclaw == expected, "{row}: a difference, and only a difference, says why");
        let (got, warned) = fanin(expression, timezone, expected);
        assert_eq!(got, described(expected), "{row}");
        assert_eq!(warned, warns, "{row}: warnings {:?}", parse_schedule(expression, timezone).map(|s| s.warnings()));
    }
}

/// The warnings name what an operator needs: the days fanin fires on, what
/// ZeroClaw meant, and the spelling that keeps either.
#[test]
fn the_warnings_say_which_days_and_how_to_keep_either() {
    let warnings = parse_schedule("0 0 9 * * 2-6", None).unwrap().warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let warning = &warnings[0];
    for phrase in [
        "fires on TUE-SAT",
        "ZeroClaw read 1 as Sunday in the 6-field form and fired on MON-FRI",
        "`0 0 9 * * MON-FRI` for ZeroClaw's days",
        "`0 0 9 * * TUE-SAT` for the days fanin fires on now",
    ] {
        assert!(warning.contains(phrase), "{phrase:?} not in {warning}");
    }
    let warnings = parse_schedule("0 0 9 1 * MON", None).unwrap().warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("either matches"), "{}", warnings[0]);
    assert!(warnings[0].contains("`0 0 9 1 * +MON`"), "{}", warnings[0]);
    // Both at once, in a 7-field expression; a weekday 0 ZeroClaw's parser refused.
    let warnings = parse_schedule("0 0 9 15 * 0 2030", None).unwrap().warnings();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("7-field form") && warnings[0].contains("fires on SUN"), "{}", warnings[0]);
    assert!(!warnings[0].contains("fired on"), "ZeroClaw had no weekday 0: {}", warnings[0]);
    // Modifiers: the days cannot be listed, the advice still stands.
    let warnings = parse_schedule("0 0 9 * * 5#2", None).unwrap().warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("Name the days"), "{}", warnings[0]);
    // Nothing to say about names, 5-field numbers, steps alone, or nicknames.
    for quiet in ["0 0 9 * * MON-FRI", "0 9 * * 2-6", "0 0 9 * * */2", "@weekly", "0 0 9 1 * *", "0 0 9 * * 1-7"] {
        let warnings = parse_schedule(quiet, None).unwrap().warnings();
        assert!(warnings.is_empty(), "{quiet}: {warnings:?}");
    }
}
