//! Conditions as ZeroClaw users wrote them, against fanin's evaluator.
//!
//! Each row is one expectation taken from ZeroClaw (zeroclaw-labs/zeroclaw):
//! the unit tests of its evaluator and condition builder
//! (`crates/zeroclaw-runtime/src/sop/condition.rs`), the condition tables
//! and examples of its SOP docs (`docs/book/src/sop/syntax.md`,
//! `docs/book/src/sop/cookbook.md`, `docs/book/src/sop/fan-in/*.md`), and
//! the SOPs in its loader tests (`src/sop/mod.rs`,
//! `crates/zeroclaw-runtime/src/sop/types.rs`). The payload is the raw text
//! ZeroClaw's evaluator received; here it goes through fanin's own payload
//! parser, as an MQTT message or a webhook body would.
//!
//! Most rows must come out as in ZeroClaw. The rest are where fanin
//! deliberately differs, each saying why; `docs/operations.md` ("Coming from
//! ZeroClaw") lists the same differences for operators. Rows marked
//! `evaluator` are not ZeroClaw tests but what its evaluator does with
//! conditions its docs allow, kept here so each difference is pinned.

use super::Condition;
use crate::event::{parse_payload, Payload, DEFAULT_MAX_PAYLOAD_DEPTH};

/// What fanin does with a row's condition and payload.
#[derive(Clone, Copy, Debug)]
enum Fanin {
    /// The verdict ZeroClaw expects.
    Same,
    /// ZeroClaw's verdict, and `fanin validate` warns about the condition.
    Warned,
    /// The opposite verdict, on purpose.
    Differs(&'static str),
    /// The condition is refused at load; ZeroClaw loads it and it never
    /// matches at run time.
    Refused(&'static str),
}

use Fanin::{Differs, Refused, Same, Warned};

/// (where the expectation comes from, condition, payload as received —
/// `None` for no payload —, ZeroClaw's verdict, fanin's).
type Row = (&'static str, &'static str, Option<&'static str>, bool, Fanin);

const ROWS: &[Row] = &[
    // crates/zeroclaw-runtime/src/sop/condition.rs, `mod tests`.
    ("empty_condition_matches", "", Some("anything"), true, Same),
    ("empty_condition_matches", "  ", None, true, Same),
    ("missing_payload_fails_closed", "$.value > 85", None, false, Same),
    ("missing_payload_fails_closed", "$.value > 85", Some(""), false, Same),
    ("json_path_gt", "$.value > 85", Some(r#"{"value": 90}"#), true, Same),
    ("json_path_gt", "$.value > 95", Some(r#"{"value": 90}"#), false, Same),
    ("json_path_gte", "$.value >= 85", Some(r#"{"value": 85}"#), true, Same),
    ("json_path_gte", "$.value >= 86", Some(r#"{"value": 85}"#), false, Same),
    ("json_path_lt", "$.temp < 25", Some(r#"{"temp": 20}"#), true, Same),
    ("json_path_lt", "$.temp < 15", Some(r#"{"temp": 20}"#), false, Same),
    ("json_path_lte", "$.temp <= 25", Some(r#"{"temp": 25}"#), true, Same),
    ("json_path_lte", "$.temp <= 24", Some(r#"{"temp": 25}"#), false, Same),
    ("json_path_eq", r#"$.status == "critical""#, Some(r#"{"status": "critical"}"#), true, Same),
    ("json_path_eq", r#"$.status == "normal""#, Some(r#"{"status": "critical"}"#), false, Same),
    ("json_path_neq", r#"$.status != "error""#, Some(r#"{"status": "ok"}"#), true, Same),
    ("json_path_neq", r#"$.status != "ok""#, Some(r#"{"status": "ok"}"#), false, Same),
    ("json_path_numeric_eq", "$.count == 42", Some(r#"{"count": 42}"#), true, Same),
    ("json_path_numeric_eq", "$.count == 43", Some(r#"{"count": 42}"#), false, Same),
    ("json_nested_path", "$.data.sensor.value > 85", Some(r#"{"data": {"sensor": {"value": 87.3}}}"#), true, Same),
    ("json_nested_path", "$.data.sensor.value > 90", Some(r#"{"data": {"sensor": {"value": 87.3}}}"#), false, Same),
    ("json_path_missing_key", "$.nonexistent > 0", Some(r#"{"value": 90}"#), false, Same),
    ("json_invalid_payload", "$.value > 0", Some("not json"), false, Same),
    ("json_path_array_index", "$.readings.1 == 20", Some(r#"{"readings": [10, 20, 30]}"#), true, Same),
    ("json_path_bool_value", r#"$.active == "true""#, Some(r#"{"active": true}"#), true, Same),
    ("direct_gt", "> 0", Some("1"), true, Same),
    ("direct_gt", "> 0", Some("0"), false, Same),
    ("direct_gt", "> 0", Some("-1"), false, Same),
    ("direct_gte", ">= 5", Some("5"), true, Same),
    ("direct_gte", ">= 5", Some("6"), true, Same),
    ("direct_gte", ">= 5", Some("4"), false, Same),
    ("direct_lt", "< 100", Some("50"), true, Same),
    ("direct_lt", "< 100", Some("100"), false, Same),
    ("direct_eq", "== 42", Some("42"), true, Same),
    ("direct_eq", "== 42", Some("43"), false, Same),
    ("direct_neq", "!= 0", Some("1"), true, Same),
    ("direct_neq", "!= 0", Some("0"), false, Same),
    ("direct_non_numeric_payload", "> 0", Some("not a number"), false, Same),
    ("direct_float_comparison", "> 3.14", Some("3.15"), true, Same),
    ("direct_float_comparison", "> 3.14", Some("3.13"), false, Same),
    ("parse_op_value_no_value", ">", Some("1"), false, Refused("missing literal after `>`")),
    ("parse_op_value_no_value", "> ", Some("1"), false, Refused("missing literal after `>`")),
    ("parse_path_op_value_basic", "$.value > 85", Some(r#"{"value": 86}"#), true, Same),
    ("parse_path_op_value_nested", "$.data.temp >= 100", Some(r#"{"data": {"temp": 100}}"#), true, Same),
    (
        "parse_path_op_value_string_comparand",
        r#"$.status == "critical""#,
        Some(r#"{"status": "critical"}"#),
        true,
        Same,
    ),
    ("resolve_path_simple", "$.a == 1", Some(r#"{"a": 1}"#), true, Same),
    ("resolve_path_nested", "$.a.b.c == 42", Some(r#"{"a": {"b": {"c": 42}}}"#), true, Same),
    ("resolve_path_missing", "$.b == 1", Some(r#"{"a": 1}"#), false, Same),
    // What the condition builder writes for a typed-in word (tests
    // `condition_parts_parse_nested_path` and the builder's `build`).
    (
        "condition_parts_parse_nested_path",
        "$.data.temp == critical",
        Some(r#"{"data": {"temp": "critical"}}"#),
        true,
        Warned,
    ),
    (
        "condition_parts_parse_nested_path",
        "$.data.temp == critical",
        Some(r#"{"data": {"temp": "ok"}}"#),
        false,
        Warned,
    ),
    ("condition_parts_build_json_path", "$.value >= 85", Some(r#"{"value": 85}"#), true, Same),
    ("condition_parts_build_direct_scalar", "> 0", Some("1"), true, Same),
    ("condition_parts_round_trip_every_operator", "$.field == 5", Some(r#"{"field": 5}"#), true, Same),
    ("condition_parts_round_trip_every_operator", "$.field != 5", Some(r#"{"field": 5}"#), false, Same),
    ("condition_parts_round_trip_every_operator", "$.field > 5", Some(r#"{"field": 5}"#), false, Same),
    ("condition_parts_round_trip_every_operator", "$.field >= 5", Some(r#"{"field": 5}"#), true, Same),
    ("condition_parts_round_trip_every_operator", "$.field < 5", Some(r#"{"field": 5}"#), false, Same),
    ("condition_parts_round_trip_every_operator", "$.field <= 5", Some(r#"{"field": 5}"#), true, Same),
    ("op_tokens_are_parseable_back", "$.value != 1", Some(r#"{"value": 2}"#), true, Same),
    // docs/book/src/sop/syntax.md, "Condition Syntax": the tables.
    ("syntax.md", "$.value > 85", Some(r#"{"value":90}"#), true, Same),
    ("syntax.md", "$.readings.1 == 20", Some(r#"{"readings":[10,20,30]}"#), true, Same),
    ("syntax.md", r#"$.active == "true""#, Some(r#"{"active":true}"#), true, Same),
    ("syntax.md", r#"$.active == "false""#, Some(r#"{"active":false}"#), true, Same),
    ("syntax.md", r#"$.active == "true""#, Some(r#"{"active":false}"#), false, Same),
    ("syntax.md", "$.nonexistent > 0", Some(r#"{"value":90}"#), false, Same),
    ("syntax.md", ">= 5", Some("6"), true, Same),
    ("syntax.md", "> 0", Some("not a number"), false, Same),
    // SOP examples of ZeroClaw's docs and loader tests.
    ("cookbook.md iot-alert", "$.value > 85", Some(r#"{"value": 91.5, "unit": "C"}"#), true, Same),
    ("cookbook.md config-drift", "$.changed > 0", Some(r#"{"changed": 3}"#), true, Same),
    ("cookbook.md release-monitor", r#"$.msg.new != """#, Some(r#"{"msg": {"new": "41.2"}}"#), true, Same),
    ("cookbook.md release-monitor", r#"$.msg.new != """#, Some(r#"{"msg": {"new": ""}}"#), false, Same),
    (
        "cookbook.md release-monitor",
        r#"$.msg.new != """#,
        Some(r#"{"msg": {"new": null}}"#),
        false,
        Differs("null compared with a string is the text \"null\"; ZeroClaw reads it as \"\""),
    ),
    (
        "fan-in/git.md",
        r#"$.event_type == "pull_request.opened""#,
        Some(r#"{"event_type": "pull_request.opened"}"#),
        true,
        Same,
    ),
    ("fan-in/git.md", r#"$.repo == "octo/repo""#, Some(r#"{"repo": "octo/repo"}"#), true, Same),
    ("fan-in/channel.md", r#"$.text == "deploy""#, Some(r#"{"text": "deploy"}"#), true, Same),
    ("types.rs filesystem trigger", r#"$.extension == "json""#, Some(r#"{"extension": "json"}"#), true, Same),
    ("src/sop/mod.rs parse_all_trigger_types", "$.value > 90", Some(r#"{"value": 95}"#), true, Same),
    ("src/sop/mod.rs parse_all_trigger_types", "> 0", Some("1"), true, Same),
    // What ZeroClaw's evaluator does with conditions its docs allow; fanin
    // keeps its own behaviour where ZeroClaw's is wrong.
    ("evaluator: numeric key", "$.codes.0 == 7", Some(r#"{"codes": {"0": 7}}"#), true, Same),
    ("evaluator: dashed key", "$.error-rate > 0.05", Some(r#"{"error-rate": 0.2}"#), true, Same),
    ("evaluator: bare word", "$.state == idle", Some(r#"{"state": "idle"}"#), true, Warned),
    (
        "evaluator: operator in quotes",
        r#"$.msg == "a != b""#,
        Some(r#"{"msg": "a != b"}"#),
        false,
        Differs("an operator inside a quoted string is part of the string"),
    ),
    ("evaluator: == null", "$.x == null", Some(r#"{"x": null}"#), false, Differs("`== null` holds for a JSON null")),
    (
        "evaluator: == null",
        "$.x == null",
        Some(r#"{"x": "null"}"#),
        true,
        Differs("`== null` is not the text \"null\""),
    ),
    (
        "evaluator: null as text",
        r#"$.x == """#,
        Some(r#"{"x": null}"#),
        true,
        Differs("null reads as \"null\", not \"\""),
    ),
    (
        "evaluator: number vs text",
        r#"$.x != "two""#,
        Some(r#"{"x": 2}"#),
        true,
        Differs("a number against a word is a type mismatch: false for every operator, != included"),
    ),
    (
        "evaluator: array vs text",
        r#"$.tags != "x""#,
        Some(r#"{"tags": ["a"]}"#),
        true,
        Differs("an array or object is not compared with anything: false for every operator"),
    ),
    (
        "evaluator: numeric text",
        "$.v == 5",
        Some(r#"{"v": "+5"}"#),
        true,
        Differs("a numeric string is exactly one JSON number (no `+`, `inf`, `NaN`)"),
    ),
    (
        "evaluator: direct form on text",
        r#"== "on""#,
        Some("on"),
        false,
        Differs("the direct form compares text too, not only numbers"),
    ),
    (
        "evaluator: two comparisons",
        r#"$.a == "x" && $.b == 1"#,
        Some(r#"{"a": "x", "b": 1}"#),
        false,
        Differs("`&&`, `||`, `!` and parentheses combine comparisons"),
    ),
    ("evaluator: single quotes", "$.a == 'x'", Some(r#"{"a": "x"}"#), false, Refused("strings are double-quoted")),
    ("evaluator: one =", "$.a = 1", Some(r#"{"a": 1}"#), false, Refused("unknown operator `=`")),
];

/// The payload fanin builds from what ZeroClaw received; no payload is the
/// JSON null a manual event carries.
fn payload(raw: Option<&str>) -> Payload {
    match raw {
        Some(raw) => parse_payload(raw.as_bytes(), DEFAULT_MAX_PAYLOAD_DEPTH).expect("shallow test payload"),
        None => Payload::Json(serde_json::Value::Null),
    }
}

#[test]
fn zeroclaw_conditions_keep_their_meaning_except_where_fanin_differs_on_purpose() {
    for &(source, text, raw, zeroclaw, fanin) in ROWS {
        let row = format!("{source}: `{text}` on {raw:?}");
        let parsed = Condition::parse(text);
        if let Refused(why) = fanin {
            let error = parsed.expect_err(&row);
            assert!(error.reason.contains(why), "{row}: {error} lacks {why:?}");
            assert!(!zeroclaw, "{row}: a refused condition must be one ZeroClaw never matched");
            continue;
        }
        let condition = parsed.unwrap_or_else(|e| panic!("{row}: {e}"));
        let payload = payload(raw);
        let (expected, why) = match fanin {
            Differs(why) => (!zeroclaw, why),
            _ => (zeroclaw, "as in ZeroClaw"),
        };
        assert_eq!(condition.matches(&payload), expected, "{row}: {why}");
        assert_eq!(condition.check(&payload).is_ok(), expected, "{row}: check disagrees");
        let warned = !condition.warnings().is_empty();
        assert_eq!(warned, matches!(fanin, Warned), "{row}: warnings {:?}", condition.warnings());
    }
}

/// ZeroClaw's empty condition is no condition in fanin too, not one that
/// happens to hold.
#[test]
fn zeroclaw_empty_conditions_are_unconditional() {
    for &(_, text, ..) in ROWS.iter().filter(|row| row.1.trim().is_empty()) {
        assert!(Condition::parse(text).unwrap().is_unconditional(), "{text:?}");
    }
}
