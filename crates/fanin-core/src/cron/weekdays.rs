//! The day fields of cron expressions as SOPs written for ZeroClaw use them.
//!
//! Two things differ between ZeroClaw and fanin, silently, and are warned
//! about at load (so in `fanin validate`, at start and at reload):
//! - ZeroClaw hands 6- and 7-field expressions to a parser that numbers
//!   weekdays from 1 = Sunday to 7 = Saturday (it rewrites only 5-field
//!   ones to that numbering), so its SOPs' `0 0 9 * * 2-6` means Monday to
//!   Friday. fanin numbers weekdays the same in every form (0 and 7 =
//!   Sunday, 1 = Monday), so the same text fires Tuesday to Saturday.
//! - ZeroClaw fires on a day only when the day of the month *and* the
//!   weekday match; fanin, as cron does, fires when either matches (croner's
//!   `+` before the weekday field asks for both).
//!
//! And one ZeroClaw spelling is accepted: a weekday range that wraps past
//! Saturday (`5-0`, `FRI-MON`), which ZeroClaw's normaliser expands to the
//! days it passes (`5-0` = Friday, Saturday, Sunday; zeroclaw-labs/zeroclaw
//! `crates/zeroclaw-runtime/src/cron/schedule.rs`). croner refuses a range
//! whose start is above its end, so such an item is rewritten to the list of
//! its days before croner reads it. A step counts each day once
//! (`5-1/2` = Friday, Sunday).

use std::borrow::Cow;

/// Weekday names, 0 = Sunday, as both croner and ZeroClaw spell them.
const NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Where the day-of-month and weekday fields are: `(dom, dow)`, or `None`
/// for a nickname (`@daily`) or a wrong field count.
fn day_fields(fields: usize) -> Option<(usize, usize)> {
    match fields {
        5 => Some((2, 4)),
        6 | 7 => Some((3, 5)),
        _ => None,
    }
}

/// `expression` with each wrapping weekday range replaced by the list of
/// its days; borrowed unchanged when there is none.
pub(super) fn unwrap_ranges(expression: &str) -> Cow<'_, str> {
    let mut fields: Vec<&str> = expression.split_whitespace().collect();
    let Some((_, dow)) = day_fields(fields.len()) else { return Cow::Borrowed(expression) };
    let (plus, field) = split_plus(fields[dow]);
    let items: Vec<Cow<str>> = field.split(',').map(unwrap_item).collect();
    if items.iter().all(|item| matches!(item, Cow::Borrowed(_))) {
        return Cow::Borrowed(expression);
    }
    let rewritten = format!("{plus}{}", items.join(","));
    fields[dow] = &rewritten;
    Cow::Owned(fields.join(" "))
}

/// croner's `+` (day of month and weekday must both match) stays in front.
fn split_plus(field: &str) -> (&str, &str) {
    match field.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", field),
    }
}

/// One item of a weekday field, its wrapping range spelled out as days.
fn unwrap_item(item: &str) -> Cow<'_, str> {
    match parse_item(item, Numbering::Fanin) {
        Some((start, end, step)) if start > end => {
            let days: Vec<String> = wrapped_days(start, end).step_by(step).map(|d| d.to_string()).collect();
            Cow::Owned(days.join(","))
        }
        _ => Cow::Borrowed(item),
    }
}

/// The days from `start` round past Saturday to `end` (0 = Sunday; 7, as a
/// start, is Sunday too), each once.
fn wrapped_days(start: u8, end: u8) -> impl Iterator<Item = u8> {
    let (start, end) = (start % 7, end % 7);
    let len = (end + 7 - start) % 7 + 1;
    (0..len).map(move |k| (start + k) % 7)
}

/// How a weekday number is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Numbering {
    /// croner's, fanin's: 0 to 7, 0 and 7 = Sunday; `SUN` ends a range as 7.
    Fanin,
    /// The parser ZeroClaw gives 6- and 7-field expressions: 1 = Sunday to
    /// 7 = Saturday; a range must not wrap.
    ZeroClaw,
}

impl Numbering {
    fn bounds(self) -> (u8, u8) {
        match self {
            Numbering::Fanin => (0, 7),
            Numbering::ZeroClaw => (1, 7),
        }
    }

    /// The day (0 = Sunday) a value within `bounds` stands for.
    fn day(self, value: u8) -> u8 {
        match self {
            Numbering::Fanin => value % 7,
            Numbering::ZeroClaw => value - 1,
        }
    }

    fn value(self, text: &str, ends_range: bool) -> Option<u8> {
        let value = match NAMES.iter().position(|name| name.eq_ignore_ascii_case(text)) {
            Some(0) if ends_range && self == Numbering::Fanin => 7,
            Some(day) => day as u8 + u8::from(self == Numbering::ZeroClaw),
            None if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => text.parse().ok()?,
            None => return None,
        };
        let (low, high) = self.bounds();
        (low..=high).contains(&value).then_some(value)
    }
}

/// `*`, `?`, `N`, `A-B`, each with an optional `/step`, names or numbers,
/// as `(start, end, step)`; `None` for what this does not model (`L`, `#`,
/// values out of range).
fn parse_item(item: &str, numbering: Numbering) -> Option<(u8, u8, usize)> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, step.parse::<usize>().ok().filter(|s| *s > 0)?),
        None => (item, 1),
    };
    let (low, high) = numbering.bounds();
    let (start, end) = match range {
        "*" | "?" => (low, high),
        _ => match range.split_once('-') {
            Some((a, b)) => (numbering.value(a, false)?, numbering.value(b, true)?),
            // `N/step` runs from N to the end of the week.
            None if item.contains('/') => (numbering.value(range, false)?, high),
            None => {
                let value = numbering.value(range, false)?;
                (value, value)
            }
        },
    };
    Some((start, end, step))
}

/// The weekdays a field names (bit d for day d, 0 = Sunday) read in
/// `numbering`, or `None` when it uses what that reading does not allow.
fn weekdays(field: &str, numbering: Numbering) -> Option<u8> {
    let mut days = 0u8;
    for item in field.split(',') {
        let (start, end, step) = parse_item(item, numbering)?;
        if start <= end {
            for value in (start..=end).step_by(step) {
                days |= 1 << numbering.day(value);
            }
        } else if numbering == Numbering::Fanin {
            days = wrapped_days(start, end).step_by(step).fold(days, |days, day| days | 1 << day);
        } else {
            return None;
        }
    }
    Some(days)
}

/// Whether any item gives a weekday as a number (a step or an `#n` alone
/// does not: `*/2` names the same days in both numberings).
fn has_numeric_weekday(field: &str) -> bool {
    field.split(',').any(|item| {
        let day = item.split(['/', '#']).next().unwrap_or_default();
        day.bytes().any(|b| b.is_ascii_digit())
    })
}

/// Days as a field can name them, Monday first: runs of three or more as
/// ranges (`MON-FRI`, `FRI-SUN`), every day as `*`.
fn spell(days: u8) -> String {
    if days == 0x7f {
        return "*".to_string();
    }
    let week = [1, 2, 3, 4, 5, 6, 0].map(|d| days & (1 << d) != 0);
    let mut parts = Vec::new();
    let mut i = 0;
    while i < 7 {
        if !week[i] {
            i += 1;
            continue;
        }
        let run = week[i..].iter().take_while(|on| **on).count();
        let name = |k: usize| NAMES[(k + 1) % 7];
        match run {
            1 => parts.push(name(i).to_string()),
            2 => parts.extend([name(i).to_string(), name(i + 1).to_string()]),
            _ => parts.push(format!("{}-{}", name(i), name(i + run - 1))),
        }
        i += run;
    }
    parts.join(",")
}

/// The expression with its weekday field replaced by `field`.
fn with_weekdays(expression: &str, dow: usize, field: &str) -> String {
    let mut fields: Vec<&str> = expression.split_whitespace().collect();
    fields[dow] = field;
    fields.join(" ")
}

/// What the expression means under fanin that a SOP written for ZeroClaw
/// did not mean; `cron` is croner's reading of it.
pub(super) fn warnings(expression: &str, cron: &croner::Cron) -> Vec<String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let Some((dom, dow)) = day_fields(fields.len()) else { return Vec::new() };
    let (plus, field) = split_plus(fields[dow]);
    // Quoted with single spaces, as the suggestions are written.
    let expression = &fields.join(" ");
    let mut warnings = Vec::new();
    if fields.len() >= 6 && has_numeric_weekday(field) {
        let ours = weekdays(field, Numbering::Fanin);
        let theirs = weekdays(field, Numbering::ZeroClaw);
        if ours.is_none() || ours != theirs {
            warnings.push(numeric_weekdays(expression, dow, plus, ours, theirs));
        }
    }
    let pattern = &cron.pattern;
    if !pattern.is_dom_wildcard() && !pattern.is_dow_wildcard() && !pattern.matches_dom_and_dow() {
        warnings.push(format!(
            "`{expression}` restricts both the day of the month (`{}`) and the weekday (`{}`): fanin fires on \
             a day when either matches, as cron does, where ZeroClaw required both; to require both, put `+` \
             before the weekday field: `{}`",
            fields[dom],
            fields[dow],
            with_weekdays(expression, dow, &format!("+{}", fields[dow])),
        ));
    }
    warnings
}

fn numeric_weekdays(expression: &str, dow: usize, plus: &str, ours: Option<u8>, theirs: Option<u8>) -> String {
    let form = format!("{}-field", expression.split_whitespace().count());
    let mut text = format!(
        "`{expression}` gives weekdays as numbers in the {form} form: fanin reads 0 and 7 as Sunday and 1 as \
         Monday in every form"
    );
    if let Some(ours) = ours {
        text.push_str(&format!(", so this fires on {}", spell(ours)));
    }
    match theirs {
        Some(theirs) => {
            text.push_str(&format!("; ZeroClaw read 1 as Sunday in the {form} form and fired on {}", spell(theirs)))
        }
        None => text.push_str(&format!("; ZeroClaw read 1 as Sunday in the {form} form")),
    }
    match (ours, theirs) {
        (Some(ours), Some(theirs)) => text.push_str(&format!(
            ". Name the days to say which: `{}` for ZeroClaw's days, `{}` for the days fanin fires on now",
            with_weekdays(expression, dow, &format!("{plus}{}", spell(theirs))),
            with_weekdays(expression, dow, &format!("{plus}{}", spell(ours))),
        )),
        (Some(ours), None) => text.push_str(&format!(
            ". Name the days to say which, e.g. `{}`",
            with_weekdays(expression, dow, &format!("{plus}{}", spell(ours))),
        )),
        _ => text.push_str(". Name the days (SUN to SAT, e.g. MON-FRI) to say which"),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_ranges_become_their_days() {
        let cases = [
            ("0 0 * * 5-0", "0 0 * * 5,6,0"),
            ("0 0 * * 6-1", "0 0 * * 6,0,1"),
            ("0 0 * * 7-0", "0 0 * * 0"),
            ("0 0 * * 7-3", "0 0 * * 0,1,2,3"),
            ("0 0 * * 5-1/2", "0 0 * * 5,0"),
            ("0 0 * * fri-mon", "0 0 * * 5,6,0,1"),
            ("0 0 9 * * 1,5-0", "0 0 9 * * 1,5,6,0"),
            ("0 0 9 1 * +5-0 2030", "0 0 9 1 * +5,6,0 2030"),
            ("0\t0  * * 5-0", "0 0 * * 5,6,0"),
        ];
        for (written, read) in cases {
            assert_eq!(unwrap_ranges(written), read, "{written}");
        }
        for unchanged in ["0 0 * * 1-5", "0 0 * * 6-7", "0 0 * * FRI-SUN", "0 0 * * 0-7/2", "@daily", "0 0 * * 5#2"] {
            assert!(matches!(unwrap_ranges(unchanged), Cow::Borrowed(_)), "{unchanged}");
        }
    }

    #[test]
    fn weekdays_in_both_numberings() {
        let bits = |days: &[u8]| days.iter().fold(0u8, |b, d| b | 1 << d);
        let cases: &[(&str, Option<u8>, Option<u8>)] = &[
            ("2-6", Some(bits(&[2, 3, 4, 5, 6])), Some(bits(&[1, 2, 3, 4, 5]))),
            ("1-5", Some(bits(&[1, 2, 3, 4, 5])), Some(bits(&[0, 1, 2, 3, 4]))),
            ("0", Some(bits(&[0])), None),
            ("7", Some(bits(&[0])), Some(bits(&[6]))),
            ("*/2", Some(bits(&[0, 2, 4, 6])), Some(bits(&[0, 2, 4, 6]))),
            ("1-7", Some(0x7f), Some(0x7f)),
            ("MON-FRI", Some(bits(&[1, 2, 3, 4, 5])), Some(bits(&[1, 2, 3, 4, 5]))),
            ("SAT-SUN", Some(bits(&[6, 0])), None),
            ("5-0", Some(bits(&[5, 6, 0])), None),
            ("5#2", None, None),
        ];
        for &(field, fanin, zeroclaw) in cases {
            assert_eq!(weekdays(field, Numbering::Fanin), fanin, "{field} in fanin");
            assert_eq!(weekdays(field, Numbering::ZeroClaw), zeroclaw, "{field} in ZeroClaw");
        }
    }

    #[test]
    fn days_are_spelled_monday_first_with_ranges() {
        let bits = |days: &[u8]| days.iter().fold(0u8, |b, d| b | 1 << d);
        assert_eq!(spell(bits(&[1, 2, 3, 4, 5])), "MON-FRI");
        assert_eq!(spell(bits(&[2, 3, 4, 5, 6])), "TUE-SAT");
        assert_eq!(spell(bits(&[5, 6, 0])), "FRI-SUN");
        assert_eq!(spell(bits(&[6, 0])), "SAT,SUN");
        assert_eq!(spell(bits(&[0, 1])), "MON,SUN");
        assert_eq!(spell(bits(&[1, 3, 5])), "MON,WED,FRI");
        assert_eq!(spell(0x7f), "*");
    }
}
