//! Cron expressions for cron triggers: compiling an expression and its
//! timezone into a [`Schedule`] once, at SOP load, so a bad expression or
//! timezone rejects the SOP instead of silently never firing.
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
//! month and weekday names and `@daily`-style nicknames are croner's.
//!
//! This file is pure: no clock is read here; callers pass explicit times.

use std::str::FromStr;

use croner::parser::CronParser;

use crate::sop::Schedule;

/// Compiles an expression in a timezone (`None` = UTC). The error says why.
pub fn parse_schedule(expression: &str, timezone: Option<&str>) -> Result<Schedule, String> {
    let timezone = match timezone {
        Some(name) => parse_timezone(name)?,
        None => chrono_tz::Tz::UTC,
    };
    let cron = parse_expression(expression)?;
    Ok(Schedule { expression: expression.to_string(), timezone, cron })
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
    parser.parse(expression).map_err(|e| format!("invalid cron expression {expression:?}: {e}"))
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
        let schedule = parse_schedule(expression, tz).unwrap();
        let local = after.with_timezone(&schedule.timezone);
        schedule.cron.find_next_occurrence(&local, false).unwrap().with_timezone(&Utc)
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
        assert_eq!(schedule.timezone, chrono_tz::Europe::Paris);
        assert_eq!(schedule.expression, "0 8 * * *");
    }

    #[test]
    fn missing_timezone_is_utc() {
        assert_eq!(parse_schedule("* * * * *", None).unwrap().timezone, chrono_tz::UTC);
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
}
