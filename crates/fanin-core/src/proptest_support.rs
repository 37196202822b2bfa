//! Shared pieces of the property tests: one runner configuration and the
//! generators several parsers' tests need (arbitrary JSON, hostile text).
//!
//! The configuration keeps no failure file: a failing case is printed with
//! its seed by proptest, and nothing is written into the source tree.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Number, Value};

/// A runner configuration with `cases` cases (unless `PROPTEST_CASES` asks
/// for another number, for a longer soak) and no failure persistence.
pub fn config(cases: u32) -> Config {
    let defaults = Config::default();
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { defaults.cases } else { cases };
    Config { cases, failure_persistence: None, ..defaults }
}

/// Text that leans towards what parsers trip on: ASCII punctuation, digits,
/// whitespace and control characters, multi-byte characters and the odd
/// arbitrary code point.
pub fn hostile_text(max_chars: usize) -> impl Strategy<Value = String> {
    let char = prop_oneof![
        4 => proptest::char::range(' ', '~'),
        1 => prop::sample::select(vec!['\n', '\r', '\t', '\0', '\u{7f}', '\u{a0}', '\u{2028}', '\u{feff}']),
        1 => prop::sample::select(vec!['é', 'ß', '€', '𝄞', '😀', '\u{fffd}', '\u{10ffff}']),
        1 => any::<char>(),
    ];
    prop::collection::vec(char, 0..=max_chars).prop_map(|chars| chars.into_iter().collect())
}

/// Text made of `pieces` glued together: a grammar's own tokens in random
/// order reach far deeper into a parser than random characters do.
pub fn token_soup(pieces: &'static [&'static str], max_pieces: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(pieces), 0..=max_pieces).prop_map(|parts| parts.concat())
}

/// A JSON value at most `depth` containers deep, with about `size` nodes.
pub fn json_value(depth: u32, size: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON numbers are finite", |f| Number::from_f64(f).map(Value::Number)),
        hostile_text(12).prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, size, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((hostile_text(6), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A JSON object (the shape of step `params`).
pub fn json_object(depth: u32, size: u32) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((hostile_text(6), json_value(depth, size)), 0..5)
        .prop_map(|members| members.into_iter().collect())
}
