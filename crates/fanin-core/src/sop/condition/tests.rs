//! Table-driven tests of the condition language: one row per behaviour, and
//! for every row `matches` and `check` must agree.

use super::{Condition, ParseError};
use crate::event::Payload;

/// A payload as a table can hold it.
#[derive(Clone, Copy, Debug)]
enum P {
    Json(&'static str),
    Text(&'static str),
}

impl P {
    fn payload(self) -> Payload {
        match self {
            P::Json(json) => Payload::Json(serde_json::from_str(json).expect("test payload is JSON")),
            P::Text(text) => Payload::Text(text.to_string()),
        }
    }
}

use P::{Json, Text};

fn condition(text: &str) -> Condition {
    Condition::parse(text).unwrap_or_else(|e| panic!("`{text}` should parse: {e}"))
}

/// (condition, payload, does it match)
const MATCHES: &[(&str, P, bool)] = &[
    // Rule 1: a missing path is false whatever the operator.
    ("$.severity >= 2", Json(r#"{}"#), false),
    ("$.severity == 1", Json(r#"{"x": 1}"#), false),
    ("$.severity != 1", Json(r#"{}"#), false),
    ("$.severity == null", Json(r#"{}"#), false),
    ("$.a.b == 1", Json(r#"{"a": 5}"#), false),
    ("$[0] == 1", Json(r#"{"0": 1}"#), false),
    ("$.a == 1", Json(r#"[1]"#), false),
    ("$.items[5] == 1", Json(r#"{"items": [1]}"#), false),
    ("$.items[-2] == 1", Json(r#"{"items": [1]}"#), false),
    // Rule 1: any `$` path on a non-JSON payload is false.
    ("$.a == 1", Text("a=1"), false),
    ("$.a != 1", Text("a=1"), false),
    ("$ == \"on\"", Text("on"), false),
    ("$ != \"on\"", Text("off"), false),
    ("$ == 1", Json("1"), true),
    // Rule 2: numbers, and strings holding numbers, compare numerically.
    ("$.severity >= 2", Json(r#"{"severity": 2}"#), true),
    ("$.severity >= 2", Json(r#"{"severity": 3}"#), true),
    ("$.severity >= 2", Json(r#"{"severity": 1}"#), false),
    ("$.severity >= 2", Json(r#"{"severity": "2"}"#), true),
    ("$.severity == \"2\"", Json(r#"{"severity": 2}"#), true),
    ("$.v == \"2.0\"", Json(r#"{"v": "2"}"#), true),
    ("$.v > \"10\"", Json(r#"{"v": "9"}"#), false),
    ("$.v < 10", Json(r#"{"v": "9"}"#), true),
    ("$.v == 2.5", Json(r#"{"v": "2.5"}"#), true),
    ("$.v == 1.0", Json(r#"{"v": 1}"#), true),
    ("$.v != 1.0", Json(r#"{"v": 1}"#), false),
    ("$.v == 1e2", Json(r#"{"v": 100}"#), true),
    ("$.v >= 2.5E-1", Json(r#"{"v": 0.3}"#), true),
    ("$.v == -0.5", Json(r#"{"v": -0.5}"#), true),
    ("$.v < -1", Json(r#"{"v": -2}"#), true),
    ("$.v == 0", Json(r#"{"v": -0}"#), true),
    ("$.v == 18446744073709551615", Json(r#"{"v": 18446744073709551615}"#), true),
    ("$.v == 9007199254740993", Json(r#"{"v": 9007199254740992}"#), false),
    // Strings that are not exactly one JSON number are not numeric.
    ("$.v == \"2\"", Json(r#"{"v": " 2"}"#), false),
    ("$.v != \"2\"", Json(r#"{"v": " 2"}"#), true),
    ("$.v == 2", Json(r#"{"v": "+2"}"#), false),
    ("$.v == 2", Json(r#"{"v": "0x2"}"#), false),
    ("$.v > 1", Json(r#"{"v": "1e999"}"#), false),
    // Rule 3: strings compare as strings, by code point.
    ("$.name == \"deploy\"", Json(r#"{"name": "deploy"}"#), true),
    ("$.name != \"deploy\"", Json(r#"{"name": "other"}"#), true),
    ("$.name != \"deploy\"", Json(r#"{"name": "deploy"}"#), false),
    ("$.name < \"b\"", Json(r#"{"name": "a"}"#), true),
    ("$.name <= \"a\"", Json(r#"{"name": "a"}"#), true),
    ("$.name >= \"b\"", Json(r#"{"name": "a"}"#), false),
    ("$.name > \"Z\"", Json(r#"{"name": "a"}"#), true),
    ("$.name > \"z\"", Json(r#"{"name": "é"}"#), true),
    (r#"$.name < "\uD83D\uDE00""#, Json(r#"{"name": "\uFFFF"}"#), true),
    ("$.v < \"abc\"", Json(r#"{"v": "10"}"#), true),
    // Rule 4: booleans and null support == and != only.
    ("$.on == true", Json(r#"{"on": true}"#), true),
    ("$.on != true", Json(r#"{"on": false}"#), true),
    ("$.on == false", Json(r#"{"on": true}"#), false),
    ("$.on > false", Json(r#"{"on": true}"#), false),
    ("$.on <= true", Json(r#"{"on": true}"#), false),
    ("$.x == null", Json(r#"{"x": null}"#), true),
    ("$.x != null", Json(r#"{"x": null}"#), false),
    ("$.x >= null", Json(r#"{"x": null}"#), false),
    // Rule 5: a type mismatch is false for every operator, != included.
    ("$.x == 1", Json(r#"{"x": [1]}"#), false),
    ("$.x != 1", Json(r#"{"x": [1]}"#), false),
    ("$.x != \"a\"", Json(r#"{"x": {"a": 1}}"#), false),
    ("$.x == 2", Json(r#"{"x": "two"}"#), false),
    ("$.x != 2", Json(r#"{"x": "two"}"#), false),
    ("$.x != \"two\"", Json(r#"{"x": 2}"#), false),
    ("$.x != true", Json(r#"{"x": 1}"#), false),
    ("$.x != null", Json(r#"{"x": 0}"#), false),
    ("$.x == true", Json(r#"{"x": "true"}"#), false),
    ("$.x != false", Json(r#"{"x": "true"}"#), false),
    ("$.x == null", Json(r#"{"x": "null"}"#), false),
    ("$.x == 0", Json(r#"{"x": null}"#), false),
    ("$.x == \"1\"", Json(r#"{"x": true}"#), false),
    // Rule 3: a JSON boolean or null against a string compares as its text.
    ("$.x == \"true\"", Json(r#"{"x": true}"#), true),
    ("$.x == \"false\"", Json(r#"{"x": false}"#), true),
    ("$.x == \"true\"", Json(r#"{"x": false}"#), false),
    ("$.x != \"true\"", Json(r#"{"x": false}"#), true),
    ("$.x != \"1\"", Json(r#"{"x": true}"#), true),
    ("$.x == \"True\"", Json(r#"{"x": true}"#), false),
    ("$.x == \"null\"", Json(r#"{"x": null}"#), true),
    ("$.x == \"\"", Json(r#"{"x": null}"#), false),
    ("$.x > \"s\"", Json(r#"{"x": true}"#), true),
    ("== \"true\"", Json("true"), true),
    // A string literal accepts the boolean and its text alike.
    ("$.x == \"true\"", Json(r#"{"x": "true"}"#), true),
    // The direct form: the whole payload is the left value.
    ("> 0", Json("1"), true),
    ("> 0", Json("0"), false),
    ("> 0", Json("-1.5"), false),
    ("> 0", Json(r#""3""#), true),
    ("> 0", Text("1"), true),
    ("== 3", Text("3.0"), true),
    ("> 0", Text("on"), false),
    ("== \"on\"", Text("on"), true),
    ("!= \"on\"", Text("off"), true),
    ("!= \"on\"", Text("on"), false),
    ("== \"on\"", Json(r#""on""#), true),
    ("== true", Json("true"), true),
    ("== null", Json("null"), true),
    ("== 1", Json(r#"{"a": 1}"#), false),
    ("!= 1", Json(r#"{"a": 1}"#), false),
    ("!= 0", Json("1"), true),
    ("> 0 && < 10", Json("5"), true),
    ("> 0 && < 10", Json("10"), false),
    ("< 0 || > 10", Json("11"), true),
    ("< 0 || > 10", Json("5"), false),
    ("!(== 0)", Json("0"), false),
    ("!(== 0)", Json("1"), true),
    ("! == 0", Json("1"), true),
    ("! == 0", Json("0"), false),
    // && binds tighter than ||.
    ("$.a == 1 || $.b == 1 && $.c == 1", Json(r#"{"a": 1, "b": 0, "c": 0}"#), true),
    ("$.a == 1 || $.b == 1 && $.c == 1", Json(r#"{"a": 0, "b": 1, "c": 1}"#), true),
    ("$.a == 1 || $.b == 1 && $.c == 1", Json(r#"{"a": 0, "b": 1, "c": 0}"#), false),
    ("$.a == 1 && $.b == 1 || $.c == 1", Json(r#"{"a": 0, "b": 0, "c": 1}"#), true),
    // Parentheses override it.
    ("($.a == 1 || $.b == 1) && $.c == 1", Json(r#"{"a": 1, "b": 0, "c": 0}"#), false),
    ("($.a == 1 || $.b == 1) && $.c == 1", Json(r#"{"a": 1, "b": 0, "c": 1}"#), true),
    ("$.a == 1 && ($.b == 2 || ($.c == 3 && !($.d == 4)))", Json(r#"{"a": 1, "c": 3, "d": 5}"#), true),
    ("$.a == 1 && ($.b == 2 || ($.c == 3 && !($.d == 4)))", Json(r#"{"a": 1, "c": 3, "d": 4}"#), false),
    ("((($.a == 1)))", Json(r#"{"a": 1}"#), true),
    // ! binds to the next comparison or parenthesis only.
    ("!$.a == 1", Json(r#"{"a": 2}"#), true),
    ("!$.a == 1", Json(r#"{"a": 1}"#), false),
    ("!$.a == 1 && $.b == 1", Json(r#"{"a": 1, "b": 2}"#), false),
    ("!$.a == 1 && $.b == 1", Json(r#"{"a": 2, "b": 1}"#), true),
    ("!($.a == 1 && $.b == 1)", Json(r#"{"a": 1, "b": 2}"#), true),
    ("!!($.a == 1)", Json(r#"{"a": 1}"#), true),
    ("!($.a == 1)", Json(r#"{}"#), true),
    // Whitespace is insignificant outside strings.
    ("$.a==1&&$.b==2", Json(r#"{"a": 1, "b": 2}"#), true),
    ("\t$.a\n==\r\n1 ", Json(r#"{"a": 1}"#), true),
    ("$ .a [ 0 ] == 1", Json(r#"{"a": [1]}"#), true),
    // Operators and parentheses inside quotes are part of the string.
    ("$.msg == \"a && b || c\"", Json(r#"{"msg": "a && b || c"}"#), true),
    ("$.msg == \"(x) != !y\"", Json(r#"{"msg": "(x) != !y"}"#), true),
    ("$.msg == \"$.x\"", Json(r#"{"msg": "$.x"}"#), true),
    ("$['a==b'] == 1", Json(r#"{"a==b": 1}"#), true),
    ("$[\"x)(||\"] == 1 && $['&&'] == 2", Json(r#"{"x)(||": 1, "&&": 2}"#), true),
    // Every escape, in literals.
    (r#"$.s == "q\"q""#, Json(r#"{"s": "q\"q"}"#), true),
    (r#"$.s == "b\\s""#, Json(r#"{"s": "b\\s"}"#), true),
    (r#"$.s == "a\/b""#, Json(r#"{"s": "a/b"}"#), true),
    (r#"$.s == "\b\f\n\r\t""#, Json(r#"{"s": "\b\f\n\r\t"}"#), true),
    (r#"$.s == "\u00e9\u00E9""#, Json(r#"{"s": "éé"}"#), true),
    (r#"$.s == "\uD83D\uDE00""#, Json(r#"{"s": "😀"}"#), true),
    (r#"$.s == "é😀""#, Json(r#"{"s": "\u00e9\ud83d\ude00"}"#), true),
    // RFC 9535 bracket paths, both quote styles, with escapes.
    ("$['a b'] == 1", Json(r#"{"a b": 1}"#), true),
    (r#"$["a b"]["c"][2] == 3"#, Json(r#"{"a b": {"c": [1, 2, 3]}}"#), true),
    (r#"$['it\'s'] == 1"#, Json(r#"{"it's": 1}"#), true),
    (r#"$["it's"] == 1"#, Json(r#"{"it's": 1}"#), true),
    (r#"$["say \"hi\""] == 1"#, Json(r#"{"say \"hi\"": 1}"#), true),
    (r#"$['say "hi"'] == 1"#, Json(r#"{"say \"hi\"": 1}"#), true),
    (r#"$['\u00e9\n'] == 1"#, Json(r#"{"é\n": 1}"#), true),
    ("$['0'] == 1", Json(r#"{"0": 1}"#), true),
    ("$[''] == 1", Json(r#"{"": 1}"#), true),
    // Indices: from the start, from the end, and the ZeroClaw dot form.
    ("$.a[0] == 1", Json(r#"{"a": [1, 2, 3]}"#), true),
    ("$.a[-1] == 3", Json(r#"{"a": [1, 2, 3]}"#), true),
    ("$.a[-3] == 1", Json(r#"{"a": [1, 2, 3]}"#), true),
    ("$.a[-4] == 1", Json(r#"{"a": [1, 2, 3]}"#), false),
    ("$[1] == \"b\"", Json(r#"["a", "b"]"#), true),
    ("$.a.0 == 1", Json(r#"{"a": [1, 2]}"#), true),
    ("$.a.1.b == \"x\"", Json(r#"{"a": [0, {"b": "x"}]}"#), true),
    ("$.a.0 == 1", Json(r#"{"a": {"0": 1}}"#), true),
    ("$.a.1.b == \"x\"", Json(r#"{"a": {"1": {"b": "x"}}}"#), true),
    ("$.a.0 == 1", Json(r#"{"a": {"00": 1}}"#), false),
    ("$.a.0 == 1", Json(r#"{"a": "1"}"#), false),
    ("$.0 == 1", Json(r#"[1]"#), true),
    ("$.0 == 1", Json(r#"{"0": 1}"#), true),
    ("$[0] == 1", Json(r#"{"a": {"0": 1}}"#), false),
    ("$.a[0] == 1", Json(r#"{"a": {"0": 1}}"#), false),
    ("$.a.b[0] >= 2", Json(r#"{"a": {"b": [2]}}"#), true),
    // Member-name shorthand: letters, digits after the first, _, non-ASCII.
    ("$._x.a9 == 1", Json(r#"{"_x": {"a9": 1}}"#), true),
    ("$.été == 1", Json(r#"{"été": 1}"#), true),
    // A dot name may hold `-` after its first character (ZeroClaw's paths).
    ("$.error-rate > 0.5", Json(r#"{"error-rate": 0.9}"#), true),
    ("$.content-type == \"json\"", Json(r#"{"content-type": "json"}"#), true),
    ("$.a-b-.c == 1", Json(r#"{"a-b-": {"c": 1}}"#), true),
    ("$.a-1==1", Json(r#"{"a-1": 1}"#), true),
    ("$.error-rate > 0.5", Json(r#"{"error": {"rate": 1}}"#), false),
    // A bare word on the right is that string (with a warning).
    ("$.level == critical", Json(r#"{"level": "critical"}"#), true),
    ("$.level != critical", Json(r#"{"level": "normal"}"#), true),
    ("$.kind == pull_request.opened", Json(r#"{"kind": "pull_request.opened"}"#), true),
    ("$.state == in-progress&&$.n==1", Json(r#"{"state": "in-progress", "n": 1}"#), true),
    ("$.a == yes", Json(r#"{"a": "yes"}"#), true),
    ("$.a == True", Json(r#"{"a": true}"#), false),
    ("$.a == élevé", Json(r#"{"a": "élevé"}"#), true),
    ("== on", Text("on"), true),
    ("($.a == x)", Json(r#"{"a": "x"}"#), true),
    // Blank text is no condition: it holds for every payload.
    ("", Json("null"), true),
    ("  \n\t ", Text("anything"), true),
    ("", Text(""), true),
];

#[test]
fn every_row_matches_as_expected_and_check_agrees() {
    for &(text, payload, expected) in MATCHES {
        let condition = condition(text);
        let payload = payload.payload();
        let matched = condition.matches(&payload);
        assert_eq!(matched, expected, "`{text}` on {payload:?}");
        let checked = condition.check(&payload);
        assert_eq!(checked.is_ok(), matched, "check and matches disagree on `{text}`: {checked:?}");
    }
}

/// (condition, payload, the exact explanation of the miss)
const MISSES: &[(&str, P, &str)] = &[
    ("$.severity >= 2", Json(r#"{"severity": 1}"#), "$.severity is 1, needs >= 2"),
    ("$.severity >= 2", Json(r#"{}"#), "$.severity is missing"),
    ("$.severity >= 2", Text("hello"), "payload is not JSON"),
    ("$.name == 2", Json(r#"{"name": "x"}"#), r#"$.name is "x" (a string), not comparable with 2"#),
    ("$['a b'] == 1", Json(r#"{}"#), "$['a b'] is missing"),
    ("$.v != 1.0", Json(r#"{"v": 1}"#), "$.v is 1, needs != 1.0"),
    ("$.x == 1", Json(r#"{"x": [1, 2]}"#), "$.x is [1,2] (an array), not comparable with 1"),
    ("> 0", Json("0"), "payload is 0, needs > 0"),
    ("== \"on\"", Text("off"), r#"payload is "off", needs == "on""#),
    ("> 0", Text("on"), r#"payload is "on" (text), not comparable with 0"#),
    ("$.on > false", Json(r#"{"on": true}"#), "$.on is true, and `>` does not order booleans: only == and != apply"),
    ("$.x < null", Json(r#"{"x": null}"#), "$.x is null, and `<` does not order null: only == and != apply"),
    ("$.a == 1 && $.b == 2", Json(r#"{"a": 1, "b": 3}"#), "`$.b == 2` fails: $.b is 3, needs == 2"),
    (
        "$.a == 1 || $.b == 2",
        Json(r#"{"a": 0}"#),
        "no side of || holds: `$.a == 1` fails: $.a is 0, needs == 1; `$.b == 2` fails: $.b is missing",
    ),
    ("!($.a == 1)", Json(r#"{"a": 1}"#), "`($.a == 1)` holds, and `!` negates it"),
    (
        "$.a == 1 && ($.b == 1 || $.c == 1)",
        Json(r#"{"a": 1}"#),
        "`($.b == 1 || $.c == 1)` fails: no side of || holds: `$.b == 1` fails: $.b is missing; \
         `$.c == 1` fails: $.c is missing",
    ),
    (
        "($.a == 1 && $.b == 1) && $.c == 1",
        Json(r#"{"a": 1, "b": 2, "c": 1}"#),
        "`$.b == 1` fails: $.b is 2, needs == 1",
    ),
    (
        "$.s == 1",
        Json(r#"{"s": "0123456789012345678901234567890123456789012345678901234567890123456789"}"#),
        r#"$.s is "01234567890123456789012345678901234567890123456789012345678… (a string), not comparable with 1"#,
    ),
];

#[test]
fn check_explains_each_miss() {
    for &(text, payload, why) in MISSES {
        let condition = condition(text);
        let payload = payload.payload();
        assert!(!condition.matches(&payload), "`{text}` should not match {payload:?}");
        let miss = condition.check(&payload).expect_err("check must report the miss that matches saw");
        assert_eq!(miss.to_string(), why, "explanation of `{text}`");
    }
}

/// (condition, a phrase the reason must contain, byte offset)
const PARSE_ERRORS: &[(&str, &str, usize)] = &[
    // Strings.
    ("$.msg == \"abc", "unterminated string", 9),
    ("$['abc] == 1", "unterminated string", 2),
    (r#"$.s == "abc\"#, "unterminated string", 7),
    (r#"$.s == "a\qb""#, "bad escape `\\q`", 9),
    (r#"$.s == "a\'b""#, "bad escape `\\'`", 9),
    (r#"$["a\'b"] == 1"#, "bad escape `\\'`", 4),
    (r#"$['a\"b'] == 1"#, "bad escape `\\\"`", 4),
    (r#"$.s == "\u12""#, "four hex digits", 8),
    (r#"$.s == "\uD83D""#, "high surrogate", 8),
    (r#"$.s == "\uD83Dx""#, "high surrogate", 8),
    (r#"$.s == "\uD83D\u0041""#, "high surrogate", 8),
    (r#"$.s == "\uDE00""#, "low surrogate", 8),
    ("$.s == \"a\tb\"", "control character U+0009", 9),
    ("$.a == 'x'", "strings are double-quoted", 7),
    // Operators.
    ("$.a = 1", "unknown operator `=`", 4),
    ("$.a => 1", "unknown operator `=>`: did you mean `>=`?", 4),
    ("$.a =< 1", "unknown operator `=<`: did you mean `<=`?", 4),
    ("$.a <> 1", "unknown operator `<>`", 4),
    ("$.a === 1", "unknown operator `===`", 4),
    ("$.a !== 1", "unknown operator `!==`", 4),
    ("!== 0", "unknown operator `!==`: did you mean `!=`?", 0),
    ("$.a == 1 & $.b == 2", "unknown operator `&`", 9),
    ("$.a == 1 | $.b == 2", "unknown operator `|`", 9),
    ("$.a", "missing operator after `$.a`", 3),
    ("$.a 1", "missing operator after `$.a`", 4),
    // Literals.
    ("$.a >= ", "missing literal after `>=`", 7),
    ("$.a >= && $.b == 1", "missing literal after `>=`", 7),
    ("> )", "missing literal after `>`", 2),
    ("$.a == $.b", "must be a literal, not a path", 7),
    ("severity >= 2", "unknown word `severity`", 0),
    ("!severity", "unknown word `severity`", 1),
    ("(x) == 1", "unknown word `x`", 1),
    ("$.a == critical alert", "trailing input `alert`", 16),
    ("$.a == not", "unknown word `not`", 7),
    ("$.a == 1.2.3", "bad number `1.2.3`", 7),
    ("$.a == 1 and $.b == 2", "unknown word `and`: write `&&`", 9),
    ("$.a == 01", "bad number `01`", 7),
    ("$.a == 1.", "bad number `1.`", 7),
    ("$.a == -", "bad number `-`", 7),
    ("$.a == 1e", "bad number `1e`", 7),
    ("$.a == 2x", "bad number `2x`", 7),
    ("$.a == .5", "unexpected character `.`", 7),
    ("$.a == 1e999", "number `1e999` is out of range", 7),
    ("2 < $.a", "a comparison starts with a `$` path or an operator", 0),
    ("@.a == 1", "unexpected character `@`", 0),
    // Structure.
    ("$.a == 1 $.b == 2", "trailing input `$.b == 2`", 9),
    ("$.a == 1 2", "trailing input `2`", 9),
    ("$.a == 1 &&", "missing comparison after `&&`", 11),
    ("$.a == 1 || || $.b == 1", "missing comparison after `||`, found `||`", 12),
    ("!", "missing comparison after `!`", 1),
    ("($.a == 1", "unbalanced parentheses: `(` is not closed", 0),
    ("(($.a == 1)", "unbalanced parentheses: `(` is not closed", 0),
    ("$.a == 1)", "unbalanced parentheses: `)` has no matching `(`", 8),
    (")", "unbalanced parentheses: `)` has no matching `(`", 0),
    ("()", "empty parentheses", 1),
    ("(", "missing comparison after `(`", 1),
    // Paths.
    ("$a == 1", "bad path: `$` must be followed by", 1),
    ("$. == 1", "bad path: `.` must be followed by a name or an index", 2),
    ("$.a. == 1", "bad path: `.` must be followed by a name or an index", 4),
    ("$.0a == 1", "bad path: `.0a` starts with a digit", 2),
    ("$.-a == 1", "bad path: `.` must be followed by a name or an index", 2),
    ("$.a.-1 == 1", "bad path: `.` must be followed by a name or an index", 4),
    ("$[abc] == 1", "bad path: expected a quoted name or an index", 2),
    ("$[", "bad path: `[` is never closed", 1),
    ("$[0", "bad path: `[` is never closed", 1),
    ("$['a' == 1", "bad path: expected `]`", 6),
    ("$[01] == 1", "bad path: index `01` has a leading zero", 2),
    ("$.a.01 == 1", "bad path: index `01` has a leading zero", 4),
    ("$[-0] == 1", "bad path: index `-0` is not allowed", 2),
    ("$[-] == 1", "bad path: `-` must be followed by the digits", 2),
    ("$[1.5] == 1", "bad path: an index must be a whole number", 3),
    ("$[9007199254740992] == 1", "bad path: index `9007199254740992` is out of range", 2),
    ("$[-9223372036854775808] == 1", "out of range", 2),
    // Non-singular queries.
    ("$..a == 1", "not a singular query: `..`", 1),
    ("$.a..b == 1", "not a singular query: `..`", 3),
    ("$.* == 1", "not a singular query: `.*`", 1),
    ("$[*] == 1", "not a singular query: `[*]`", 2),
    ("$[0:2] == 1", "not a singular query: `[start:end]`", 3),
    ("$[:2] == 1", "not a singular query: `[:...]`", 2),
    ("$[?@.a] == 1", "not a singular query: `[?...]`", 2),
    ("$[0,1] == 1", "not a singular query: `[a, b]`", 3),
    ("$['a', 'b'] == 1", "not a singular query: `[a, b]`", 5),
];

#[test]
fn parse_errors_name_the_problem_and_its_offset() {
    for &(text, phrase, offset) in PARSE_ERRORS {
        let ParseError { reason, offset: found_offset } = Condition::parse(text).expect_err(text);
        assert!(reason.contains(phrase), "`{text}`: reason `{reason}` lacks `{phrase}`");
        assert_eq!(found_offset, offset, "`{text}`: offset of `{reason}`");
    }
}

#[test]
fn no_prefix_of_a_condition_panics_or_points_past_the_end() {
    let texts = MATCHES.iter().map(|row| row.0).chain(PARSE_ERRORS.iter().map(|row| row.0));
    for text in texts {
        for (cut, _) in text.char_indices() {
            let prefix = &text[..cut];
            if let Err(error) = Condition::parse(prefix) {
                assert!(error.offset <= prefix.len(), "`{prefix}`: {error}");
            }
        }
    }
}

#[test]
fn nesting_is_bounded() {
    let deep = format!("{}$.a == 1{}", "(".repeat(65), ")".repeat(65));
    let error = Condition::parse(&deep).expect_err("65 levels of parentheses");
    assert!(error.reason.contains("nested more than 64 levels"), "{error}");
    let negations = format!("{}$.a == 1", "!".repeat(65));
    assert!(Condition::parse(&negations).is_err());

    let fine = format!("{}$.a == 1{}", "(".repeat(64), ")".repeat(64));
    assert!(condition(&fine).matches(&Json(r#"{"a": 1}"#).payload()));
}

#[test]
fn source_is_the_text_as_written() {
    let text = "  $.a  ==  1 ";
    assert_eq!(condition(text).source(), text);
}

#[test]
fn blank_text_is_unconditional_and_nothing_else_is() {
    for text in ["", " ", "\t\r\n"] {
        assert!(condition(text).is_unconditional(), "{text:?}");
        assert!(condition(text).warnings().is_empty());
    }
    for text in ["$ == null", "!($.a == 1)", "> 0"] {
        assert!(!condition(text).is_unconditional(), "{text:?}");
    }
}

#[test]
fn each_unquoted_word_is_warned_about_in_order() {
    let warnings = condition("$.data.temp == critical || ($.level != low && $.ok == \"yes\")").warnings();
    assert_eq!(
        warnings,
        [
            "unquoted `critical` at offset 15 is read as the string \"critical\", as ZeroClaw reads it; \
             write \"critical\" to say so",
            "unquoted `low` at offset 39 is read as the string \"low\", as ZeroClaw reads it; write \"low\" to say so",
        ]
    );
    let warnings = condition("$.on == True").warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].ends_with("(for the literal true write `true`)"), "{warnings:?}");
    for quiet in ["$.a == \"critical\"", "$.a == true", "$.a == null && $.b == 1", "!($.a == false)"] {
        assert_eq!(condition(quiet).warnings(), Vec::<String>::new(), "{quiet}");
    }
}

#[test]
fn parse_error_displays_reason_and_offset() {
    let error = Condition::parse("$.a = 1").unwrap_err();
    assert_eq!(error.to_string(), "unknown operator `=`: did you mean `==`? at offset 4");
}

/// Counts this thread's allocations, to prove the hot path makes none.
mod allocations {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static COUNT: Cell<usize> = const { Cell::new(0) };
    }

    struct Counting;

    // SAFETY: defers every operation to `System`; only counts alongside.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = COUNT.try_with(|n| n.set(n.get() + 1));
            // SAFETY: same contract as our caller's.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from `System` through `alloc` or `realloc`.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let _ = COUNT.try_with(|n| n.set(n.get() + 1));
            // SAFETY: same contract as our caller's.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    pub(super) fn during(f: impl FnOnce()) -> usize {
        let before = COUNT.with(Cell::get);
        f();
        COUNT.with(Cell::get) - before
    }
}

#[test]
fn matches_does_not_allocate() {
    let rows: Vec<(Condition, Payload)> =
        MATCHES.iter().map(|&(text, payload, _)| (condition(text), payload.payload())).collect();
    let mut verdicts = [false; MATCHES.len()];
    let count = allocations::during(|| {
        for (verdict, (condition, payload)) in verdicts.iter_mut().zip(&rows) {
            *verdict = condition.matches(payload);
        }
    });
    assert_eq!(count, 0, "matches allocated");
    // The loop above really evaluated: the verdicts are the table's.
    let expected: Vec<bool> = MATCHES.iter().map(|row| row.2).collect();
    assert_eq!(verdicts.to_vec(), expected);
    // And the counter does see allocations when there are some.
    assert!(allocations::during(|| drop(rows[0].0.check(&Json("{}").payload()))) > 0);
}
