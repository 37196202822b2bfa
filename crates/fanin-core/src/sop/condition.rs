//! The condition language of SOP triggers (docs/configuration.md): parsed once when a SOP
//! loads, evaluated against the payload of every event that reaches the
//! trigger.
//!
//! It is fanin's own small grammar, so it is parsed by hand here: a lexer
//! (`lex`), a singular-JSONPath parser and walker (`path`), a recursive-descent
//! parser (`parse`) and the evaluator (`eval`). Parsing does all the allocating;
//! [`Condition::matches`] only walks the pre-parsed tree and allocates nothing.
//!
//! # Grammar
//!
//! ```text
//! condition  := blank | or                   // blank: no condition at all
//! or         := and ( "||" and )*            // && binds tighter than ||
//! and        := unary ( "&&" unary )*
//! unary      := "!" unary | "(" or ")" | comparison
//! comparison := [ path ] op literal          // no path: the direct form
//! op         := "==" | "!=" | ">" | ">=" | "<" | "<="
//! literal    := JSON number | JSON string | true | false | null | word
//! word       := letter ( letter | digit | "_" | "-" | "." )*   // a string
//! path       := "$" segment*                 // an RFC 9535 singular query
//! segment    := "." name | "." digits | "[" quoted-name "]" | "[" index "]"
//! ```
//!
//! - A path is an RFC 9535 *singular* query: `$.a`, `$['a b']`, `$["a"]`,
//!   `$[0]`, `$[-1]` (from the end), chained. Two ZeroClaw spellings are
//!   accepted too: a purely numeric dot segment (`$.a.0`) names element 0
//!   of an array and the member `"0"` of an object, and a dot name may hold
//!   `-` after its first character (`$.error-rate`). `$` alone is the whole
//!   payload. Wildcards, `..`, slices, filters and unions are rejected as
//!   "not a singular query".
//! - The direct form leaves the path out (`> 0`, `== "on"`): the left value is
//!   the whole payload, so a bare peripheral value can be tested. A leading
//!   `!=` is that operator, not a negation; `!==` is rejected as ambiguous
//!   (write `!(== 0)` or `! == 0`).
//! - A word on the right of an operator other than `true`, `false` and
//!   `null` is a string: `$.level == critical` means `$.level == "critical"`,
//!   which is how ZeroClaw reads it and what its condition builder writes.
//!   [`Condition::warnings`] names each one, so `fanin validate` can say so.
//!   Anywhere else a word is an error; `and`, `or` and `not` always are.
//! - Blank text (empty, or only whitespace) is no condition, as in ZeroClaw:
//!   it holds for every payload ([`Condition::is_unconditional`]).
//! - Whitespace (space, tab, CR, LF) is insignificant outside strings. Text in
//!   quotes, in a literal or in a bracketed name, is never read as an operator
//!   or a parenthesis.
//!
//! # Semantics
//!
//! Each comparison is decided by the first rule that applies:
//!
//! 1. A missing path, or any `$` path on a payload that is not JSON, makes the
//!    comparison false — whatever the operator, `!=` included (fail closed).
//! 2. If both sides are numeric they compare as numbers. Numeric means a JSON
//!    number, or a string (a JSON string, a string literal, or a text payload
//!    in the direct form) that is exactly one JSON number, e.g. `"2.5"` (no
//!    whitespace, no `+`, no `inf`). Two integers compare exactly (up to
//!    128 bits); otherwise both sides become `f64`, so integers beyond 2^53
//!    compared with a fraction may round.
//! 3. Else, if the literal is a string and the value is a string, or a JSON
//!    `true`, `false` or `null` (taken as that text, so `$.active == "true"`
//!    holds for `{"active": true}` as ZeroClaw's docs promise), they compare
//!    as strings with all six operators, ordered by Unicode code points.
//! 4. Else booleans with booleans and null with null support `==` and `!=`;
//!    the ordering operators are false for them.
//! 5. Anything else is a type mismatch — arrays, objects, a number against a
//!    non-numeric string, a string against the literal `true`: false for
//!    every operator, `!=` included.
//!
//! A text (non-JSON) payload in the direct form is a string value, so
//! `== "on"` and `> 0` work on a payload of `on` or `1` sent as plain text.
//!
//! `&&`, `||` and `!` combine the verdicts as usual. Note that `!` negates a
//! fail-closed comparison too: `!($.a == 1)` holds when `$.a` is missing;
//! `$.a != 1` is the form that requires `$.a` to exist.
//!
//! Where this differs from ZeroClaw's evaluator on purpose (operators inside
//! quotes, `== null`, arrays and numbers against text, unparsable
//! conditions), `docs/operations.md` ("Coming from ZeroClaw") lists it; the
//! table in `tests.rs` holds ZeroClaw's own test expectations.

mod ast;
mod eval;
mod lex;
mod number;
mod parse;
mod path;
#[cfg(test)]
mod props;
mod scan;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod zeroclaw;

use crate::event::Payload;

/// A parsed condition. Cheap to evaluate; never re-parsed.
#[derive(Clone, Debug)]
pub struct Condition {
    source: String,
    expr: ast::Expr,
}

/// Why a condition did not hold, for `fanin explain`.
#[derive(Clone, Debug, PartialEq)]
pub struct Miss(pub String);

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A condition that does not parse: the reason and the byte offset.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{reason} at offset {offset}")]
pub struct ParseError {
    pub reason: String,
    pub offset: usize,
}

impl Condition {
    /// Parses `text`; every syntax problem is an error naming what is wrong and
    /// the byte offset where it is, never a condition that silently never matches.
    pub fn parse(text: &str) -> Result<Condition, ParseError> {
        let expr = parse::parse(text)?;
        Ok(Condition { source: text.to_string(), expr })
    }

    /// The condition as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True for a blank condition, which holds for every payload: the
    /// trigger is as if it had none.
    pub fn is_unconditional(&self) -> bool {
        matches!(&self.expr.kind, ast::ExprKind::All(parts) if parts.is_empty())
    }

    /// What the condition means that its text may not say plainly: each
    /// unquoted word read as a string. For `fanin validate` and start-up.
    pub fn warnings(&self) -> Vec<String> {
        parse::bare_words(&self.expr)
            .into_iter()
            .map(|comparison| {
                let word = comparison.literal_span.text(&self.source);
                let quoted = serde_json::Value::from(word).to_string();
                let lower = word.to_ascii_lowercase();
                let literal_hint = if matches!(lower.as_str(), "true" | "false" | "null") {
                    format!(" (for the literal {lower} write `{lower}`)")
                } else {
                    String::new()
                };
                format!(
                    "unquoted `{word}` at offset {} is read as the string {quoted}, as ZeroClaw reads it; \
                     write {quoted} to say so{literal_hint}",
                    comparison.literal_span.start
                )
            })
            .collect()
    }

    /// True when the condition holds. Allocation-free on the hot path.
    pub fn matches(&self, payload: &Payload) -> bool {
        eval::holds(&self.expr, payload)
    }

    /// `Ok` when the condition holds, else why not. Same verdict as
    /// [`Condition::matches`]; slower, since it builds the explanation.
    pub fn check(&self, payload: &Payload) -> Result<(), Miss> {
        eval::explain(&self.expr, &self.source, payload).map_err(Miss)
    }
}
