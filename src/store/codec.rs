//! How fanin's values are written into a database and read back, the same
//! for every store: times as integer microseconds since the Unix epoch
//! (UTC), JSON as text, closed sets of names (statuses, kinds) as their
//! names.
//!
//! Why one module: a run copied from one store to another, or read by a
//! fanin built against the other back end, must mean the same thing; and
//! what a reader does with a value it cannot read (the
//! [`unreadable`](crate::store::unreadable) stand-in) must not depend on the
//! database. Microseconds are what PostgreSQL's timestamps hold too, so
//! nothing is lost either way. The row access itself is each back end's.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::event::Request;
use crate::store::{unreadable, unreadable_reason, StepStatus};

/// A time as stored. Sub-microsecond digits are dropped.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A stored time, or why it is not one.
pub fn time_from_micros(us: i64) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| format!("time {us} out of range"))
}

/// A stored time for a message; the raw number if it is out of range.
pub fn time_text(us: Option<i64>) -> String {
    match us.and_then(DateTime::<Utc>::from_timestamp_micros) {
        Some(t) => t.to_rfc3339(),
        None => format!("{us:?}"),
    }
}

/// A JSON value as stored.
pub fn json_text(v: &Value) -> String {
    v.to_string()
}

/// Stored JSON text as a value, or the stand-in saying why it is not one.
/// Never an error, so the row it is part of still reads.
pub fn json_or_unreadable(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| unreadable(format!("stored JSON cannot be read: {e}"), bytes.len()))
}

/// A run's stored webhook request (already read as JSON). One that cannot
/// be read back has the stand-in for its query and its headers, so the run
/// still reads.
pub fn request_from_json(value: Value) -> Request {
    let stand_in = |value: Value| match value {
        Value::Object(map) => Request { query: map.clone(), headers: map },
        _ => Request::default(),
    };
    if unreadable_reason(&value).is_some() {
        return stand_in(value);
    }
    let stored_bytes = value.to_string().len();
    serde_json::from_value(value)
        .unwrap_or_else(|e| stand_in(unreadable(format!("stored request cannot be read: {e}"), stored_bytes)))
}

/// A request as stored.
pub fn request_text(request: &Request) -> String {
    json_text(&serde_json::to_value(request).expect("a request is JSON"))
}

/// A step status as stored.
pub fn step_status_name(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending => "pending",
        StepStatus::Leased => "leased",
        StepStatus::Completed => "completed",
        StepStatus::Failed => "failed",
        StepStatus::Withdrawn => "withdrawn",
    }
}

pub fn parse_step_status(name: &str) -> Option<StepStatus> {
    [StepStatus::Pending, StepStatus::Leased, StepStatus::Completed, StepStatus::Failed, StepStatus::Withdrawn]
        .into_iter()
        .find(|s| step_status_name(*s) == name)
}

/// A stored name of a closed set (`what`: "run status"), or why it is none.
pub fn named<T>(text: &str, what: &str, parse: fn(&str) -> Option<T>) -> Result<T, String> {
    parse(text).ok_or_else(|| format!("unknown {what} {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_to_the_microsecond_and_out_of_range_is_said() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        assert_eq!(time_from_micros(micros(at)), Ok(at));
        assert!(time_from_micros(i64::MAX).unwrap_err().contains("out of range"));
        assert_eq!(time_text(Some(i64::MAX)), format!("{:?}", Some(i64::MAX)));
    }

    #[test]
    fn a_request_that_is_not_one_reads_as_the_stand_in() {
        let request = request_from_json(serde_json::json!({"query": 3}));
        assert!(unreadable_reason(&Value::Object(request.query)).is_some());
        for status in [StepStatus::Pending, StepStatus::Withdrawn] {
            assert_eq!(parse_step_status(step_status_name(status)), Some(status));
        }
        assert_eq!(named("x", "step status", parse_step_status), Err("unknown step status \"x\"".into()));
    }
}
