//! What one serial line from a board means: `signal=value` or a JSON object
//! `{"signal": "...", "value": ...}`. Pure code, so every accepted and
//! refused form is pinned down by a table test.

use serde_json::Value;

use crate::event::{self, JsonError, Payload, TooDeep};

/// One named value a board emitted.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub name: String,
    pub payload: Payload,
}

/// Why a line was skipped, worded for the operator's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine(pub String);

/// Parses one line (its `\n` already removed). `Ok(None)` for a blank line,
/// which boards send as keep-alives and which is ignored silently.
///
/// `signal=value`: the value is JSON when it parses as JSON (`1`, `2.5`,
/// `true`, `"x"`), else the text. Whitespace around the whole line and
/// around the `=` is not part of either side (`temp = 21.5` is `temp`,
/// `21.5`), since a signal name cannot hold whitespace anyway.
/// A line starting with `{` is only ever the JSON form. Either way a value
/// nested deeper than `max_depth` (`[gateway] max_payload_depth`) is
/// refused, as every source refuses it.
pub fn parse_line(line: &str, max_depth: usize) -> Result<Option<Signal>, BadLine> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    if line.starts_with('{') {
        return parse_json_object(line, max_depth).map(Some);
    }
    let Some((name, value)) = line.split_once('=') else {
        return Err(BadLine("expected signal=value or a JSON object {\"signal\": ..., \"value\": ...}".into()));
    };
    let name = checked_signal_name(name.trim())?;
    let payload = event::parse_payload(value.trim().as_bytes(), max_depth).map_err(|e| BadLine(e.to_string()))?;
    Ok(Some(Signal { name, payload }))
}

/// `{"signal": "...", "value": ...}`; other keys are ignored (a board may
/// add a timestamp), a missing `value` is refused rather than read as null.
/// The object itself is one level around the value.
fn parse_json_object(line: &str, max_depth: usize) -> Result<Signal, BadLine> {
    let mut object = match event::parse_json(line.as_bytes(), max_depth.saturating_add(1)) {
        Ok(Value::Object(object)) => object,
        Err(JsonError::TooDeep(_)) => return Err(BadLine(TooDeep { limit: max_depth }.to_string())),
        Ok(_) | Err(JsonError::Invalid(_)) => return Err(BadLine("starts with '{' but is not a JSON object".into())),
    };
    let name = match object.remove("signal") {
        Some(Value::String(name)) => checked_signal_name(&name)?,
        Some(_) => return Err(BadLine("\"signal\" must be a string".into())),
        None => return Err(BadLine("the JSON object has no \"signal\"".into())),
    };
    let Some(value) = object.remove("value") else {
        return Err(BadLine("the JSON object has no \"value\"".into()));
    };
    Ok(Signal { name, payload: Payload::Json(value) })
}

/// The rule SOP triggers are held to, so every accepted signal can be
/// named by a trigger.
fn checked_signal_name(name: &str) -> Result<String, BadLine> {
    if crate::sop::is_signal_name(name) {
        Ok(name.to_string())
    } else {
        Err(BadLine(format!("{name:?} is not a signal name: non-empty, without '/', '+', '#' or spaces")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DEFAULT_MAX_PAYLOAD_DEPTH;
    use serde_json::json;

    fn json_signal(name: &str, value: Value) -> Option<Signal> {
        Some(Signal { name: name.into(), payload: Payload::Json(value) })
    }

    fn text_signal(name: &str, value: &str) -> Option<Signal> {
        Some(Signal { name: name.into(), payload: Payload::Text(value.into()) })
    }

    #[test]
    fn accepted_lines() {
        let cases: Vec<(&str, Option<Signal>)> = vec![
            ("pin_3=1", json_signal("pin_3", json!(1))),
            ("pin_3=0", json_signal("pin_3", json!(0))),
            ("pin_3=on", text_signal("pin_3", "on")),
            ("temp=21.5", json_signal("temp", json!(21.5))),
            ("temp=-3", json_signal("temp", json!(-3))),
            ("door=true", json_signal("door", json!(true))),
            ("name=\"x\"", json_signal("name", json!("x"))),
            ("reading={\"a\":[1,2]}", json_signal("reading", json!({"a": [1, 2]}))),
            ("msg=a=b", text_signal("msg", "a=b")),
            ("empty=", text_signal("empty", "")),
            ("temp = 21.5", json_signal("temp", json!(21.5))),
            ("pin_3=1\r", json_signal("pin_3", json!(1))),
            ("  pin_3=1 \r", json_signal("pin_3", json!(1))),
            ("sensor.t-1=ok", text_signal("sensor.t-1", "ok")),
            ("é=ü", text_signal("é", "ü")),
            (r#"{"signal":"pin_3","value":1}"#, json_signal("pin_3", json!(1))),
            (r#"{"signal":"temp","value":"21.5"}"#, json_signal("temp", json!("21.5"))),
            (r#"{"signal":"s","value":null}"#, json_signal("s", Value::Null)),
            (r#"{"signal":"s","value":{"x":1},"ts":5}"#, json_signal("s", json!({"x": 1}))),
            ("{\"signal\":\"pin_3\",\"value\":1}\r", json_signal("pin_3", json!(1))),
            ("", None),
            ("\r", None),
            ("   \t", None),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_line(line, 64), Ok(expected), "line {line:?}");
        }
    }

    #[test]
    fn refused_lines_say_why() {
        let cases = [
            ("hello", "expected signal=value"),
            ("=1", "not a signal name"),
            ("pin/3=1", "not a signal name"),
            ("pin 3=1", "not a signal name"),
            ("sensors/#=1", "not a signal name"),
            ("a+b=1", "not a signal name"),
            ("{not json", "not a JSON object"),
            ("{\"signal\":\"a\"", "not a JSON object"),
            (r#"{"value":1}"#, "no \"signal\""),
            (r#"{"signal":3,"value":1}"#, "must be a string"),
            (r#"{"signal":"pin_3"}"#, "no \"value\""),
            (r#"{"signal":"a/b","value":1}"#, "not a signal name"),
            (r#"{"signal":"","value":1}"#, "not a signal name"),
        ];
        for (line, reason) in cases {
            match parse_line(line, 64) {
                Err(BadLine(why)) => assert!(why.contains(reason), "line {line:?}: {why:?} lacks {reason:?}"),
                other => panic!("line {line:?} was accepted as {other:?}"),
            }
        }
    }

    #[test]
    fn values_nested_deeper_than_the_limit_are_refused() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(parse_line(&format!("v={}", nested(3)), 3).unwrap().unwrap().payload, Payload::Json(json!([[[]]])));
        let object = |depth: usize| format!("{{\"signal\":\"v\",\"value\":{}}}", nested(depth));
        assert_eq!(parse_line(&object(3), 3).unwrap().unwrap().payload, Payload::Json(json!([[[]]])));
        for line in [format!("v={}", nested(4)), object(4), format!("v={}", nested(200)), object(200)] {
            match parse_line(&line, 3) {
                Err(BadLine(why)) => assert!(why.contains("deeper than 3"), "{line}: {why}"),
                other => panic!("{line}: accepted as {other:?}"),
            }
        }
    }

    /// A value nested far past the limit is never read as JSON (nor
    /// overflows the stack trying).
    #[test]
    fn a_value_nested_past_the_json_limit_is_not_json() {
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let parsed = parse_line(&format!("s={deep}"), DEFAULT_MAX_PAYLOAD_DEPTH);
        assert!(!matches!(parsed, Ok(Some(Signal { payload: Payload::Json(_), .. }))));
        let object = format!("{{\"signal\":\"s\",\"value\":{deep}}}");
        assert!(parse_line(&object, DEFAULT_MAX_PAYLOAD_DEPTH).is_err());
    }

    mod props {
        use proptest::prelude::*;
        use serde_json::{Map, Value};

        use super::*;
        use crate::proptest_support::{config, hostile_text, json_value, token_soup};

        const PIECES: &[&str] = &[
            "{",
            "}",
            "\"signal\"",
            "\"value\"",
            ":",
            ",",
            "=",
            "pin_3",
            "1",
            "\"x\"",
            " ",
            "\r",
            "/",
            "#",
            "+",
            "é",
            "[",
            "]",
            "null",
        ];

        fn blank() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec!["", " ", "\t", "  ", "\r"])
        }

        proptest! {
            #![proptest_config(config(512))]

            /// Any line is a signal with a valid name, nothing (blank), or a
            /// reason; never a panic.
            #[test]
            fn any_line_is_a_signal_nothing_or_a_reason(line in prop_oneof![hostile_text(80), token_soup(PIECES, 20)]) {
                match parse_line(&line, DEFAULT_MAX_PAYLOAD_DEPTH) {
                    Ok(Some(signal)) => prop_assert!(crate::sop::is_signal_name(&signal.name), "{:?}", signal),
                    Ok(None) => prop_assert!(line.trim().is_empty()),
                    Err(BadLine(reason)) => prop_assert!(!reason.is_empty()),
                }
            }
        }

        proptest! {
            #![proptest_config(config(256))]

            /// `name=value` and `{"signal": name, "value": value}` say the
            /// same, for every JSON value, around any blanks.
            #[test]
            fn both_forms_carry_any_json_value(
                name in "[A-Za-z0-9_.:é=-]{1,12}",
                value in json_value(4, 24),
                extra in prop::collection::vec(("[a-z]{1,6}", json_value(1, 4)), 0..3),
                blanks in (blank(), blank(), blank(), blank()),
            ) {
                let want = Some(Signal { name: name.clone(), payload: Payload::Json(value.clone()) });
                let json = serde_json::to_string(&value).unwrap();
                // `=` ends the name in the text form, so only a name without one can use it.
                if !name.contains('=') {
                    let (a, b, c, d) = blanks;
                    let line = format!("{a}{name}{b}={c}{json}{d}");
                    prop_assert_eq!(parse_line(&line, DEFAULT_MAX_PAYLOAD_DEPTH), Ok(want.clone()), "{:?}", line);
                }
                let mut object: Map<String, Value> =
                    extra.into_iter().filter(|(k, _)| k != "signal" && k != "value").collect();
                object.insert("signal".into(), Value::String(name));
                object.insert("value".into(), value);
                let line = serde_json::to_string(&object).unwrap();
                prop_assert_eq!(parse_line(&line, DEFAULT_MAX_PAYLOAD_DEPTH), Ok(want), "{:?}", line);
            }

            /// The JSON form accepts exactly the names triggers can name.
            #[test]
            fn a_json_signal_name_is_accepted_exactly_when_triggers_can_name_it(name in hostile_text(10)) {
                let line = serde_json::json!({"signal": name, "value": 1}).to_string();
                let parsed = parse_line(&line, DEFAULT_MAX_PAYLOAD_DEPTH);
                prop_assert_eq!(parsed.is_ok(), crate::sop::is_signal_name(&name), "{:?}: {:?}", name, parsed);
            }
        }
    }
}
