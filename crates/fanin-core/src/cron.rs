//! Cron expressions for cron triggers: checking an expression and its
//! timezone into a [`Schedule`] once, at SOP load, so a bad expression or
//! timezone rejects the SOP instead of silently never firing; and the window
//! arithmetic the scheduler is built on (which fire points fall in a window,
//! which comes next).
//!
//! A [`Schedule`] keeps only the expression and the zone. croner's compiled
//! form ([`Compiled`]) is rebuilt for each scheduler look, because it holds a
//! byte for every year up to 5000: kept per trigger (twice, in the SOP and in
//! the scheduler's key) it would make memory grow with the number of cron
//! SOPs far more than compiling again costs in time (BENCHMARKS.md, "The
//! performance pass"). A `Schedule` is
//! only ever built by [`parse_schedule`] after its expression compiled, so
//! compiling it again cannot fail.
//!
//! Accepted forms (all through croner's default parser, which is POSIX/Vixie
//! flavoured):
//! - 5 fields: `min hour dom mon dow` (seconds are 0);
//! - 6 fields: `sec min hour dom mon dow`;
//! - 7 fields: `sec min hour dom mon dow year`.
//!
//! Weekdays are 0–7 with both 0 and 7 meaning Sunday in every form. croner's
//! Quartz ("alternative weekdays", 1 = Sunday) mode is deliberately never
//! enabled: it would silently shift every weekday by one. `L`, `W`, `#`,
//! month and weekday names and `@daily`-style nicknames are croner's. A
//! weekday range may wrap past Saturday (`5-0` = Friday to Sunday), as in
//! ZeroClaw. Where a SOP written for ZeroClaw means other days than fanin
//! reads (numeric weekdays in 6/7 fields, day of month with weekday),
//! [`Schedule::warnings`] says so; `weekdays` holds those rules.
//!
//! # Fire points
//!
//! A fire point is a whole-second UTC instant whose wall clock time in the
//! schedule's timezone matches the expression. Daylight-saving changes follow
//! one rule for every expression: each matching local time fires at most
//! once, and only if it exists.
//! - Spring forward: a local time inside the gap does not exist and is
//!   skipped. croner (Vixie-style) moves a fixed-time job such as
//!   `0 30 2 * * *` to the first second after the gap; we drop that moved
//!   instant because its wall clock no longer matches the expression.
//! - Fall back: a local time inside the repeated range exists twice; it
//!   fires at its first (earlier) instant only. croner already does this
//!   for fixed-time jobs but repeats interval jobs (`*/15 * * * *`) in the
//!   second pass; we drop those second-pass instants, so an interval job
//!   pauses while the wall clock replays times it has already fired.
//!
//! Windows are half-open, `(after, upto]`, with both ends cut to whole
//! seconds, so consecutive windows `(a, b]`, `(b, c]` see every fire point
//! exactly once. Counting is bounded: at most [`FIRE_COUNT_CAP`] points are
//! enumerated (an every-second expression over a week of downtime has
//! 604 800); past that the count is a lower bound and says so, while the
//! first and last points stay exact.
//!
//! This file is pure: no clock is read here; callers pass explicit times.

use std::str::FromStr;

use chrono::{DateTime, LocalResult, TimeZone, Timelike, Utc};
use croner::parser::CronParser;

mod weekdays;
#[cfg(test)]
mod zeroclaw;

/// A cron trigger's checked schedule: an expression that compiles, and its
/// timezone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    expression: String,
    timezone: chrono_tz::Tz,
}

impl Schedule {
    /// The expression as written in SOP.toml (also the cron event's topic).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> chrono_tz::Tz {
        self.timezone
    }

    /// The same expression read in another timezone.
    pub fn in_timezone(self, timezone: chrono_tz::Tz) -> Schedule {
        Schedule { timezone, ..self }
    }

    /// Where the expression fires on other days than a SOP written for
    /// ZeroClaw meant (see the `weekdays` module), for `fanin validate` and
    /// start-up.
    pub fn warnings(&self) -> Vec<String> {
        weekdays::warnings(&self.expression, &self.compile().cron)
    }

    /// croner's form of the expression, for searching fire points.
    pub fn compile(&self) -> Compiled {
        let cron = parse_expression(&self.expression)
            .expect("a Schedule's expression compiled when parse_schedule built it, with the same parser");
        Compiled { cron, timezone: self.timezone }
    }
}

/// A schedule compiled for searching; built per look by [`Schedule::compile`]
/// and dropped after it (see the module doc for why it is not kept).
#[derive(Clone, Debug)]
pub struct Compiled {
    cron: croner::Cron,
    timezone: chrono_tz::Tz,
}

/// Checks an expression in a timezone (`None` = UTC). The error says why.
pub fn parse_schedule(expression: &str, timezone: Option<&str>) -> Result<Schedule, String> {
    let timezone = match timezone {
        Some(name) => parse_timezone(name)?,
        None => chrono_tz::Tz::UTC,
    };
    let cron = parse_expression(expression)?;
    // A date no calendar has (February 30, April 31) parses, and would load
    // a trigger that never fires: refuse it here, where the SOP names it.
    // From the epoch, any date that exists comes within one leap cycle.
    if next_fire_after(&Compiled { cron, timezone }, DateTime::UNIX_EPOCH).is_none() {
        return Err(format!("{expression:?} names no date that exists (such as February 30): it would never fire"));
    }
    Ok(Schedule { expression: expression.to_string(), timezone })
}

/// An IANA zone name such as `Europe/Paris`. The error names the value.
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(name.trim())
        .map_err(|_| format!("unknown timezone {name:?} (expected an IANA name such as \"Europe/Paris\")"))
}

fn parse_expression(expression: &str) -> Result<croner::Cron, String> {
    let fields = expression.split_whitespace().count();
    let is_nickname = expression.trim_start().starts_with('@');
    if !is_nickname && !(5..=7).contains(&fields) {
        return Err(format!(
            "cron expression {expression:?} has {fields} fields; expected 5 (min hour dom mon dow), \
             6 (sec min hour dom mon dow) or 7 (sec min hour dom mon dow year)"
        ));
    }
    // The default builder: seconds and year optional, POSIX weekdays
    // (0 and 7 = Sunday). Never `alternative_weekdays(true)`.
    let parser = CronParser::builder().build();
    parser
        .parse(&weekdays::unwrap_ranges(expression))
        .map_err(|e| format!("invalid cron expression {expression:?}: {e}"))
}

/// The most fire points one window count enumerates; past it the count is
/// a lower bound. 100 000 croner searches take well under a second.
pub const FIRE_COUNT_CAP: u64 = 100_000;

/// How many croner candidates in a row may be rejected (second-pass or
/// moved-out-of-gap instants) before giving up: a fold replays at most a few
/// hours, so a whole day of every-second candidates is far beyond any zone.
const REJECTED_CANDIDATES_LIMIT: u32 = 86_400;

/// The fire points of a schedule inside one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FireWindow {
    /// How many fire points the window holds; a lower bound (equal to
    /// [`FIRE_COUNT_CAP`]) when `count_is_exact` is false.
    pub count: u64,
    pub count_is_exact: bool,
    /// The earliest fire point in the window.
    pub first: DateTime<Utc>,
    /// The latest fire point in the window.
    pub last: DateTime<Utc>,
}

/// `t` without its fraction of a second: scheduled instants are whole seconds.
pub fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

/// The fire points in `(after, upto]`, or `None` when there are none
/// (including when `upto <= after`: a clock that went back fires nothing).
pub fn fires_in_window(schedule: &Compiled, after: DateTime<Utc>, upto: DateTime<Utc>) -> Option<FireWindow> {
    let (after, upto) = (whole_second(after), whole_second(upto));
    if upto <= after {
        return None;
    }
    let first = next_fire_after(schedule, after).filter(|first| *first <= upto)?;
    // Found searching back from the end, so it is exact however long the window.
    let last = last_fire_at_or_before(schedule, upto).filter(|last| *last >= first)?;
    let (count, count_is_exact) = count_fires(schedule, first, last);
    Some(FireWindow { count, count_is_exact, first, last })
}

/// The first fire point strictly after `after`, if the schedule has one
/// (a 7-field expression whose years are past has none).
pub fn next_fire_after(schedule: &Compiled, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut cursor = whole_second(after).with_timezone(&schedule.timezone);
    for _ in 0..REJECTED_CANDIDATES_LIMIT {
        let candidate = schedule.cron.find_next_occurrence(&cursor, false).ok()?;
        if is_fire_point(schedule, &candidate) {
            return Some(candidate.with_timezone(&Utc));
        }
        // Continue from the exact instant croner returned: it tells croner
        // which half of a repeated range the search is on.
        cursor = candidate;
    }
    None
}

/// The last fire point at or before `upto`.
pub fn last_fire_at_or_before(schedule: &Compiled, upto: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut cursor = whole_second(upto).with_timezone(&schedule.timezone);
    let mut inclusive = true;
    for _ in 0..REJECTED_CANDIDATES_LIMIT {
        let candidate = schedule.cron.find_previous_occurrence(&cursor, inclusive).ok()?;
        if is_fire_point(schedule, &candidate) {
            return Some(candidate.with_timezone(&Utc));
        }
        cursor = candidate;
        inclusive = false;
    }
    None
}

/// Counts the fire points in `[first, last]` (both fire points), stopping at
/// [`FIRE_COUNT_CAP`].
fn count_fires(schedule: &Compiled, first: DateTime<Utc>, last: DateTime<Utc>) -> (u64, bool) {
    let mut count = 1;
    let mut cursor = first;
    while cursor < last {
        if count >= FIRE_COUNT_CAP {
            return (count, false);
        }
        match next_fire_after(schedule, cursor) {
            Some(next) if next <= last => {
                count += 1;
                cursor = next;
            }
            // Cannot happen (`last` is a fire point after `cursor`); a
            // lower bound is still the honest answer if croner disagrees.
            _ => return (count, false),
        }
    }
    (count, true)
}

/// Whether an instant croner found is one we fire at: its wall clock must
/// match the expression (croner moves fixed-time jobs out of a DST gap) and
/// it must be the first occurrence of that wall clock time (not the replay
/// after a fall-back).
fn is_fire_point(schedule: &Compiled, candidate: &DateTime<chrono_tz::Tz>) -> bool {
    let wall_clock_matches = schedule.cron.is_time_matching(candidate).unwrap_or(false);
    let first_occurrence = match schedule.timezone.from_local_datetime(&candidate.naive_local()) {
        LocalResult::Ambiguous(earlier, _) => earlier == *candidate,
        _ => true,
    };
    wall_clock_matches && first_occurrence
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};

    use super::*;

    /// Monday 2024-01-01 00:00:00 UTC.
    fn monday() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
    }

    fn next_after(expression: &str, tz: Option<&str>, after: DateTime<Utc>) -> DateTime<Utc> {
        let compiled = parse_schedule(expression, tz).unwrap().compile();
        let local = after.with_timezone(&compiled.timezone);
        compiled.cron.find_next_occurrence(&local, false).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_date_that_never_exists_is_refused_and_a_rare_one_loads() {
        for never in ["0 0 0 30 2 *", "0 0 31 4 *", "0 0 0 31 11 * *"] {
            let reason = parse_schedule(never, None).unwrap_err();
            assert!(reason.contains("never fire"), "{never}: {reason}");
        }
        // February 29: years apart, but it exists.
        let rare = parse_schedule("0 0 0 29 2 *", None).unwrap();
        let next = next_fire_after(&rare.compile(), DateTime::UNIX_EPOCH).unwrap();
        assert_eq!(next.format("%Y-%m-%d").to_string(), "1972-02-29");
    }

    #[test]
    fn five_six_and_seven_fields_fire_at_the_same_instant() {
        let expected = Utc.with_ymd_and_hms(2024, 1, 1, 8, 30, 0).unwrap();
        for expression in ["30 8 * * *", "0 30 8 * * *", "0 30 8 * * * *", "0 30 8 * * * 2024"] {
            assert_eq!(next_after(expression, None, monday()), expected, "{expression}");
        }
    }

    #[test]
    fn six_fields_put_seconds_first() {
        let next = next_after("15 * * * * *", None, monday());
        assert_eq!(next, Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 15).unwrap());
    }

    #[test]
    fn seven_fields_restrict_the_year() {
        let next = next_after("0 0 0 1 1 * 2026", None, monday());
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
    }

    #[test]
    fn weekday_zero_and_seven_are_sunday_in_every_form() {
        let sunday = Utc.with_ymd_and_hms(2024, 1, 7, 0, 0, 0).unwrap();
        for expression in [
            "0 0 * * 0",
            "0 0 * * 7",
            "0 0 0 * * 0",
            "0 0 0 * * 7",
            "0 0 0 * * 0 *",
            "0 0 0 * * 7 *",
            "0 0 * * SUN",
            "0 0 * * 6-7",
        ] {
            let next = next_after(expression, None, monday());
            let expected =
                if expression.ends_with("6-7") { Utc.with_ymd_and_hms(2024, 1, 6, 0, 0, 0).unwrap() } else { sunday };
            assert_eq!(next, expected, "{expression}");
        }
        // After Saturday, a 6-7 range must reach Sunday, not skip to next Saturday.
        let saturday_noon = Utc.with_ymd_and_hms(2024, 1, 6, 12, 0, 0).unwrap();
        assert_eq!(next_after("0 0 * * 6-7", None, saturday_noon), sunday);
    }

    #[test]
    fn weekday_one_is_monday_not_sunday() {
        // Guards against croner's Quartz weekday mode (1 = Sunday).
        let next = next_after("0 0 * * 1", None, Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap());
        assert_eq!(next, Utc.with_ymd_and_hms(2024, 1, 8, 0, 0, 0).unwrap());
    }

    #[test]
    fn last_day_and_nth_weekday_are_supported() {
        let last = next_after("0 0 L * *", None, monday());
        assert_eq!(last, Utc.with_ymd_and_hms(2024, 1, 31, 0, 0, 0).unwrap());
        let second_friday = next_after("0 0 * * 5#2", None, monday());
        assert_eq!(second_friday, Utc.with_ymd_and_hms(2024, 1, 12, 0, 0, 0).unwrap());
    }

    #[test]
    fn timezone_shifts_the_fire_time() {
        // 08:00 in Paris is 07:00 UTC in winter.
        let next = next_after("0 0 8 * * *", Some("Europe/Paris"), monday());
        assert_eq!(next, Utc.with_ymd_and_hms(2024, 1, 1, 7, 0, 0).unwrap());
        let schedule = parse_schedule("0 8 * * *", Some("Europe/Paris")).unwrap();
        assert_eq!(schedule.timezone(), chrono_tz::Europe::Paris);
        assert_eq!(schedule.expression(), "0 8 * * *");
        assert_eq!(parse_schedule("0 8 * * *", None).unwrap().in_timezone(chrono_tz::Europe::Paris), schedule);
    }

    #[test]
    fn missing_timezone_is_utc() {
        assert_eq!(parse_schedule("* * * * *", None).unwrap().timezone(), chrono_tz::UTC);
    }

    #[test]
    fn invalid_expressions_are_rejected_with_a_reason() {
        let cases = [
            ("* * * *", "4 fields"),
            ("* * * * * * * *", "8 fields"),
            ("", "0 fields"),
            ("60 * * * *", "invalid cron expression"),
            ("* 24 * * *", "invalid cron expression"),
            ("* * 32 * *", "invalid cron expression"),
            ("* * * 13 *", "invalid cron expression"),
            ("* * * * 8", "invalid cron expression"),
            ("61 * * * * *", "invalid cron expression"),
            ("* * * * x", "invalid cron expression"),
        ];
        for (expression, reason) in cases {
            let err = parse_schedule(expression, None).unwrap_err();
            assert!(err.contains(reason), "{expression:?}: {err}");
        }
    }

    #[test]
    fn bad_timezone_names_the_value() {
        let err = parse_schedule("* * * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(err.contains("Mars/Olympus"), "{err}");
        assert!(parse_schedule("* * * * *", Some("")).is_err());
    }

    #[test]
    fn every_accepted_form_compiles_again_the_same() {
        // `Schedule::compile` relies on this: what `parse_schedule` accepted
        // compiles again, to the same schedule croner parsed the first time.
        let parser = CronParser::builder().build();
        let after = utc(2024, 1, 1, 0, 0, 0);
        for (expression, tz) in [
            ("*/15 * * * *", None),
            ("0 30 2 * * *", Some("Europe/Paris")),
            ("0 0 0 1 1 * 2025-2026", None),
            ("0 0 L * *", None),
            ("0 0 15W * *", Some("America/New_York")),
            ("0 0 * * 5#2", None),
            ("0 0 * * 5L", None),
            ("0 0 9 * JAN-MAR MON-FRI", Some("Asia/Tokyo")),
            ("@daily", None),
            ("@hourly", Some("Europe/Paris")),
        ] {
            let schedule = parse_schedule(expression, tz).unwrap();
            let compiled = schedule.compile();
            assert_eq!(compiled.cron, parser.parse(expression).unwrap(), "{expression}");
            assert_eq!(compiled.timezone, schedule.timezone(), "{expression}");
            assert!(next_fire_after(&compiled, after).is_some(), "{expression}");
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    /// `(count, first, last)` of a window, `None` when it holds no fire point.
    type Expected = Option<(u64, DateTime<Utc>, DateTime<Utc>)>;

    /// `(name, expression, timezone, after, upto, expected)`.
    type WindowCase = (&'static str, &'static str, Option<&'static str>, DateTime<Utc>, DateTime<Utc>, Expected);

    /// `(expression, timezone, after, expected next fire point)`.
    type NextCase = (&'static str, Option<&'static str>, DateTime<Utc>, Option<DateTime<Utc>>);

    #[test]
    fn fire_points_in_a_window() {
        let paris = Some("Europe/Paris");
        let ny = Some("America/New_York");
        let cases: Vec<WindowCase> = vec![
            (
                "many points: every second for ten seconds",
                "* * * * * *",
                None,
                utc(2024, 1, 1, 0, 0, 0),
                utc(2024, 1, 1, 0, 0, 10),
                Some((10, utc(2024, 1, 1, 0, 0, 1), utc(2024, 1, 1, 0, 0, 10))),
            ),
            (
                "many points: every minute for an hour",
                "* * * * *",
                None,
                utc(2024, 1, 1, 0, 0, 0),
                utc(2024, 1, 1, 1, 0, 0),
                Some((60, utc(2024, 1, 1, 0, 1, 0), utc(2024, 1, 1, 1, 0, 0))),
            ),
            (
                "none: 08:00 is outside 09:00-10:00",
                "0 0 8 * * *",
                None,
                utc(2024, 1, 1, 9, 0, 0),
                utc(2024, 1, 1, 10, 0, 0),
                None,
            ),
            (
                "clock went back: upto before after",
                "* * * * * *",
                None,
                utc(2024, 1, 1, 0, 0, 10),
                utc(2024, 1, 1, 0, 0, 0),
                None,
            ),
            (
                "empty window: upto == after",
                "* * * * * *",
                None,
                utc(2024, 1, 1, 0, 0, 10),
                utc(2024, 1, 1, 0, 0, 10),
                None,
            ),
            ("the start is excluded", "0 0 8 * * *", None, utc(2024, 1, 1, 8, 0, 0), utc(2024, 1, 1, 8, 0, 1), None),
            (
                "the end is included",
                "0 0 8 * * *",
                None,
                utc(2024, 1, 1, 7, 59, 59),
                utc(2024, 1, 1, 8, 0, 0),
                Some((1, utc(2024, 1, 1, 8, 0, 0), utc(2024, 1, 1, 8, 0, 0))),
            ),
            (
                "DST spring forward: 02:30 does not exist in Paris on 2024-03-31 and is skipped",
                "0 30 2 * * *",
                paris,
                utc(2024, 3, 30, 0, 0, 0),
                utc(2024, 4, 2, 0, 0, 0),
                // 02:30 CET = 01:30Z on the 30th; 02:30 CEST = 00:30Z on 1 April.
                Some((2, utc(2024, 3, 30, 1, 30, 0), utc(2024, 4, 1, 0, 30, 0))),
            ),
            (
                "DST fall back: 02:30 happens twice in Paris on 2024-10-27 and fires once",
                "0 30 2 * * *",
                paris,
                utc(2024, 10, 26, 0, 0, 0),
                utc(2024, 10, 28, 0, 0, 0),
                // 00:30Z on the 26th and on the 27th (CEST); not 01:30Z (the CET replay).
                Some((2, utc(2024, 10, 26, 0, 30, 0), utc(2024, 10, 27, 0, 30, 0))),
            ),
            (
                "DST fall back, interval job: the replayed half hour does not fire again",
                "0 */30 * * * *",
                paris,
                utc(2024, 10, 26, 23, 0, 0),
                utc(2024, 10, 27, 3, 0, 0),
                // 01:30, 02:00, 02:30 CEST (23:30Z, 00:00Z, 00:30Z), then 03:00, 03:30, 04:00 CET.
                Some((6, utc(2024, 10, 26, 23, 30, 0), utc(2024, 10, 27, 3, 0, 0))),
            ),
            (
                "DST spring forward, interval job: the missing hour is skipped",
                "0 */30 * * * *",
                paris,
                utc(2024, 3, 31, 0, 0, 0),
                utc(2024, 3, 31, 2, 0, 0),
                // 01:30 CET (00:30Z), then 03:00, 03:30, 04:00 CEST (01:00Z, 01:30Z, 02:00Z).
                Some((4, utc(2024, 3, 31, 0, 30, 0), utc(2024, 3, 31, 2, 0, 0))),
            ),
            (
                "DST in New York: 02:30 skipped on 2024-03-10, fires once on 2024-11-03",
                "30 2 * * *",
                ny,
                utc(2024, 3, 9, 0, 0, 0),
                utc(2024, 3, 11, 12, 0, 0),
                // 02:30 EST = 07:30Z on the 9th; 02:30 EDT = 06:30Z on the 11th.
                Some((2, utc(2024, 3, 9, 7, 30, 0), utc(2024, 3, 11, 6, 30, 0))),
            ),
            (
                "DST in New York: 01:30 repeats on 2024-11-03 and fires once",
                "30 1 * * *",
                ny,
                utc(2024, 11, 3, 0, 0, 0),
                utc(2024, 11, 3, 12, 0, 0),
                // 01:30 EDT = 05:30Z; the EST replay (06:30Z) does not fire.
                Some((1, utc(2024, 11, 3, 5, 30, 0), utc(2024, 11, 3, 5, 30, 0))),
            ),
            (
                "7 fields: only the listed years",
                "0 0 0 1 1 * 2025-2026",
                None,
                utc(2024, 1, 1, 0, 0, 0),
                utc(2030, 1, 1, 0, 0, 0),
                Some((2, utc(2025, 1, 1, 0, 0, 0), utc(2026, 1, 1, 0, 0, 0))),
            ),
            (
                "7 fields: a past year never fires",
                "0 0 0 1 1 * 2020",
                None,
                utc(2024, 1, 1, 0, 0, 0),
                utc(2030, 1, 1, 0, 0, 0),
                None,
            ),
            (
                "L: the last day of each month, leap February included",
                "0 0 L * *",
                None,
                utc(2024, 1, 1, 0, 0, 0),
                utc(2024, 4, 1, 0, 0, 0),
                Some((3, utc(2024, 1, 31, 0, 0, 0), utc(2024, 3, 31, 0, 0, 0))),
            ),
            (
                "W: the weekday nearest the 15th (Saturday 2024-06-15 -> Friday the 14th)",
                "0 0 15W * *",
                None,
                utc(2024, 6, 1, 0, 0, 0),
                utc(2024, 7, 1, 0, 0, 0),
                Some((1, utc(2024, 6, 14, 0, 0, 0), utc(2024, 6, 14, 0, 0, 0))),
            ),
            (
                "#: the second Friday",
                "0 0 * * 5#2",
                None,
                utc(2024, 1, 1, 0, 0, 0),
                utc(2024, 2, 1, 0, 0, 0),
                Some((1, utc(2024, 1, 12, 0, 0, 0), utc(2024, 1, 12, 0, 0, 0))),
            ),
            (
                "L in the weekday field: the last Friday",
                "0 0 * * 5L",
                None,
                utc(2024, 1, 1, 0, 0, 0),
                utc(2024, 2, 1, 0, 0, 0),
                Some((1, utc(2024, 1, 26, 0, 0, 0), utc(2024, 1, 26, 0, 0, 0))),
            ),
            (
                "weekday 0 is Sunday",
                "0 0 * * 0",
                None,
                utc(2024, 1, 1, 0, 0, 0),
                utc(2024, 2, 1, 0, 0, 0),
                Some((4, utc(2024, 1, 7, 0, 0, 0), utc(2024, 1, 28, 0, 0, 0))),
            ),
            (
                "weekday 7 is Sunday",
                "0 0 0 * * 7",
                None,
                utc(2024, 1, 1, 0, 0, 0),
                utc(2024, 2, 1, 0, 0, 0),
                Some((4, utc(2024, 1, 7, 0, 0, 0), utc(2024, 1, 28, 0, 0, 0))),
            ),
        ];
        for (name, expression, tz, after, upto, expected) in cases {
            let schedule = parse_schedule(expression, tz).unwrap().compile();
            let got = fires_in_window(&schedule, after, upto);
            let got = got.map(|w| {
                assert!(w.count_is_exact, "{name}: count should be exact");
                (w.count, w.first, w.last)
            });
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn window_ends_are_cut_to_whole_seconds() {
        let schedule = parse_schedule("* * * * * *", None).unwrap().compile();
        let after = utc(2024, 1, 1, 0, 0, 0) + chrono::Duration::milliseconds(500);
        let upto = utc(2024, 1, 1, 0, 0, 3) + chrono::Duration::milliseconds(999);
        let window = fires_in_window(&schedule, after, upto).unwrap();
        assert_eq!((window.count, window.first, window.last), (3, utc(2024, 1, 1, 0, 0, 1), utc(2024, 1, 1, 0, 0, 3)));
        // Adjacent windows share no fire point and lose none.
        let (a, b, c) = (utc(2024, 1, 1, 0, 0, 0), utc(2024, 1, 1, 0, 0, 5), utc(2024, 1, 1, 0, 0, 9));
        let left = fires_in_window(&schedule, a, b).unwrap();
        let right = fires_in_window(&schedule, b, c).unwrap();
        assert_eq!(left.count + right.count, fires_in_window(&schedule, a, c).unwrap().count);
        assert!(left.last < right.first);
    }

    #[test]
    fn a_long_window_is_counted_up_to_the_cap_and_says_so() {
        let schedule = parse_schedule("* * * * * *", None).unwrap().compile();
        let (after, upto) = (utc(2024, 1, 1, 0, 0, 0), utc(2024, 1, 8, 0, 0, 0));
        let window = fires_in_window(&schedule, after, upto).unwrap();
        assert_eq!(window.count, FIRE_COUNT_CAP);
        assert!(!window.count_is_exact);
        // First and last stay exact however long the window.
        assert_eq!(window.first, utc(2024, 1, 1, 0, 0, 1));
        assert_eq!(window.last, upto);
    }

    #[test]
    fn next_fire_point_after_an_instant() {
        let paris = Some("Europe/Paris");
        let cases: Vec<NextCase> = vec![
            ("* * * * * *", None, utc(2024, 1, 1, 0, 0, 0), Some(utc(2024, 1, 1, 0, 0, 1))),
            ("0 0 8 * * *", None, utc(2024, 1, 1, 8, 0, 0), Some(utc(2024, 1, 2, 8, 0, 0))),
            // A fraction of a second past a fire point: that point is behind us.
            (
                "0 0 8 * * *",
                None,
                utc(2024, 1, 1, 8, 0, 0) + chrono::Duration::milliseconds(1),
                Some(utc(2024, 1, 2, 8, 0, 0)),
            ),
            // Spring forward: the moved 03:00 is not a fire point; the next real 02:30 is.
            ("0 30 2 * * *", paris, utc(2024, 3, 30, 12, 0, 0), Some(utc(2024, 4, 1, 0, 30, 0))),
            // Fall back: after the first 02:30, the replayed 02:30 is skipped.
            ("0 30 2 * * *", paris, utc(2024, 10, 27, 0, 30, 0), Some(utc(2024, 10, 28, 1, 30, 0))),
            // Every second through the fold: from the last first-pass second to 03:00 CET.
            ("* * * * * *", paris, utc(2024, 10, 27, 0, 59, 59), Some(utc(2024, 10, 27, 2, 0, 0))),
            ("0 0 0 1 1 * 2020", None, utc(2024, 1, 1, 0, 0, 0), None),
            ("0 0 0 1 1 * 2026", None, utc(2024, 1, 1, 0, 0, 0), Some(utc(2026, 1, 1, 0, 0, 0))),
        ];
        for (expression, tz, after, expected) in cases {
            let schedule = parse_schedule(expression, tz).unwrap().compile();
            assert_eq!(next_fire_after(&schedule, after), expected, "{expression} after {after}");
        }
    }

    #[test]
    fn last_fire_point_at_or_before_an_instant() {
        let paris = parse_schedule("0 30 2 * * *", Some("Europe/Paris")).unwrap().compile();
        // Searching back over the spring-forward day lands on the day before.
        assert_eq!(last_fire_at_or_before(&paris, utc(2024, 3, 31, 12, 0, 0)), Some(utc(2024, 3, 30, 1, 30, 0)));
        // Searching back over the fall-back day finds the first 02:30 only.
        assert_eq!(last_fire_at_or_before(&paris, utc(2024, 10, 27, 12, 0, 0)), Some(utc(2024, 10, 27, 0, 30, 0)));
        let daily = parse_schedule("0 0 8 * * *", None).unwrap().compile();
        assert_eq!(last_fire_at_or_before(&daily, utc(2024, 1, 1, 8, 0, 0)), Some(utc(2024, 1, 1, 8, 0, 0)));
    }

    mod props {
        use chrono::{Duration, Timelike};
        use proptest::prelude::*;

        use super::*;
        use crate::proptest_support::{config, hostile_text, token_soup};

        const PIECES: &[&str] = &[
            "*",
            "*",
            " ",
            " ",
            " ",
            "/",
            ",",
            "-",
            "0",
            "1",
            "5",
            "7",
            "12",
            "23",
            "29",
            "30",
            "31",
            "59",
            "60",
            "L",
            "W",
            "#",
            "?",
            "MON",
            "5-0",
            "fri-mon",
            "+",
            "jan",
            "@daily",
            "@reboot",
            "99999999999",
            "1-5/2",
            "2030",
            "\t",
            "é",
        ];

        /// Any instant from 1970 to 2100, to the millisecond.
        fn instant() -> impl Strategy<Value = DateTime<Utc>> {
            (0i64..4_102_444_800_000).prop_map(|ms| Utc.timestamp_millis_opt(ms).unwrap())
        }

        proptest! {
            #![proptest_config(config(256))]

            /// Any text is a schedule or a reason; a schedule compiles again,
            /// and the next fire point it finds really is one, later.
            #[test]
            fn any_text_is_a_schedule_or_a_reason(
                text in prop_oneof![hostile_text(30), token_soup(PIECES, 14)],
                timezone in prop::option::of(prop_oneof![
                    hostile_text(12),
                    prop::sample::select(vec!["Europe/Paris", "Australia/Lord_Howe", "America/St_Johns"])
                        .prop_map(str::to_string),
                ]),
                after in instant(),
            ) {
                let schedule = match parse_schedule(&text, timezone.as_deref()) {
                    Ok(schedule) => schedule,
                    Err(reason) => {
                        prop_assert!(!reason.is_empty());
                        return Ok(());
                    }
                };
                prop_assert_eq!(schedule.expression(), text.as_str());
                for warning in schedule.warnings() {
                    prop_assert!(warning.contains(&format!("`{}`", text.split_whitespace().collect::<Vec<_>>().join(" "))),
                        "{:?} does not quote {:?}", warning, text);
                }
                let compiled = schedule.compile();
                if let Some(next) = next_fire_after(&compiled, after) {
                    prop_assert!(next > after && next.nanosecond() == 0, "{} after {}", next, after);
                    let local = next.with_timezone(&compiled.timezone);
                    prop_assert!(compiled.cron.is_time_matching(&local).unwrap_or(false), "{} does not match", local);
                }
                if let Some(last) = last_fire_at_or_before(&compiled, after) {
                    prop_assert!(last <= after && last.nanosecond() == 0, "{} before {}", last, after);
                }
            }

            /// A weekday range fires on the days from its start to its end,
            /// round past Saturday when the start is the later day, every
            /// `step`-th of them, in the 5- and the 6-field form alike.
            #[test]
            fn weekday_ranges_fire_on_the_days_they_pass(
                start in 0u8..=7,
                end in 0u8..=7,
                step in 1usize..4,
                six_fields in any::<bool>(),
            ) {
                let field = if step == 1 { format!("{start}-{end}") } else { format!("{start}-{end}/{step}") };
                let expression = if six_fields { format!("0 0 0 * * {field}") } else { format!("0 0 * * {field}") };
                let schedule = parse_schedule(&expression, None)
                    .map_err(|e| TestCaseError::fail(format!("{expression}: {e}")))?;
                let passed: Vec<u8> = if start <= end {
                    (start..=end).collect()
                } else {
                    let (from, to) = (start % 7, end % 7);
                    (0..=(to + 7 - from) % 7).map(|k| (from + k) % 7).collect()
                };
                let want: std::collections::BTreeSet<u32> =
                    passed.into_iter().step_by(step).map(|d| u32::from(d % 7)).collect();
                // Monday 2024-01-01: every fire point of that week, by weekday (0 = Sunday).
                let compiled = schedule.compile();
                let mut got = std::collections::BTreeSet::new();
                let mut cursor = monday() - Duration::seconds(1);
                while let Some(next) = next_fire_after(&compiled, cursor).filter(|t| *t < monday() + Duration::days(7)) {
                    got.insert(chrono::Datelike::weekday(&next).num_days_from_sunday());
                    cursor = next;
                }
                prop_assert_eq!(got, want, "{}", expression);
                // Only the 6-field form can mean other days in ZeroClaw.
                if !six_fields {
                    prop_assert_eq!(schedule.warnings(), Vec::<String>::new(), "{}", expression);
                }
            }

            /// `s m h * * *` in UTC fires once a day at h:m:s, first after `after`.
            #[test]
            fn a_daily_time_fires_at_that_time(
                second in 0u32..60,
                minute in 0u32..60,
                hour in 0u32..24,
                after in instant(),
            ) {
                let compiled = parse_schedule(&format!("{second} {minute} {hour} * * *"), None).unwrap().compile();
                let same_day = after.date_naive().and_hms_opt(hour, minute, second).unwrap().and_utc();
                let want = if same_day > after { same_day } else { same_day + Duration::days(1) };
                prop_assert_eq!(next_fire_after(&compiled, after), Some(want));
                prop_assert_eq!(last_fire_at_or_before(&compiled, want), Some(want));
            }

            /// `*/n * * * * *` over a window: the count, first and last are
            /// those of the whole seconds in `(after, upto]` whose second is
            /// a multiple of n.
            #[test]
            fn an_interval_window_counts_what_a_plain_scan_counts(
                n in 1u32..60,
                after in instant(),
                length_ms in 0i64..3_600_000,
            ) {
                let compiled = parse_schedule(&format!("*/{n} * * * * *"), None).unwrap().compile();
                let upto = after + Duration::milliseconds(length_ms);
                let (start, end) = (whole_second(after), whole_second(upto));
                let points: Vec<DateTime<Utc>> = (1..=(end - start).num_seconds())
                    .map(|k| start + Duration::seconds(k))
                    .filter(|t| t.second() % n == 0)
                    .collect();
                let want = match (points.first(), points.last()) {
                    (Some(first), Some(last)) => Some(FireWindow {
                        count: points.len() as u64,
                        count_is_exact: true,
                        first: *first,
                        last: *last,
                    }),
                    _ => None,
                };
                prop_assert_eq!(fires_in_window(&compiled, after, upto), want);
            }
        }
    }
}
