//! Evaluating a parsed condition against a payload.
//!
//! `holds` is the hot path: it borrows from the payload and the tree and
//! allocates nothing. `explain` reaches its verdict through the same
//! `compare`, so the two cannot disagree, and only then spends allocations on
//! putting a miss into words.

use std::cmp::Ordering;

use serde_json::Value;

use super::ast::{Comparison, Expr, ExprKind, Left, Literal, Op};
use super::number::Num;
use crate::event::Payload;

/// Longer payload values are cut in explanations; they are for reading.
const SHOWN_VALUE_MAX: usize = 60;

/// The left value of a comparison, borrowed from the payload.
#[derive(Clone, Copy)]
enum Operand<'a> {
    Json(&'a Value),
    /// A non-JSON payload, in the direct form.
    Text(&'a str),
}

/// How one comparison came out; every variant but `Holds` is a miss.
enum Outcome<'a> {
    Holds,
    NotJson,
    Missing,
    /// Comparable, but the comparison is false.
    Unmet(Operand<'a>),
    /// Booleans or nulls under an ordering operator.
    Unordered(Operand<'a>),
    Mismatch(Operand<'a>),
}

/// What kind of value an operand is, for choosing how to compare it.
enum Kind<'a> {
    Num(Num),
    Str(&'a str),
    Bool(bool),
    Null,
    Other,
}

pub(super) fn holds(expr: &Expr, payload: &Payload) -> bool {
    match &expr.kind {
        ExprKind::Compare(comparison) => matches!(compare(comparison, payload), Outcome::Holds),
        ExprKind::Not(inner) => !holds(inner, payload),
        ExprKind::All(parts) => parts.iter().all(|part| holds(part, payload)),
        ExprKind::Any(parts) => parts.iter().any(|part| holds(part, payload)),
    }
}

/// `Ok` exactly when `holds`; else the reason, quoting failed parts from `src`.
pub(super) fn explain(expr: &Expr, src: &str, payload: &Payload) -> Result<(), String> {
    match &expr.kind {
        ExprKind::Compare(comparison) => match compare(comparison, payload) {
            Outcome::Holds => Ok(()),
            miss => Err(describe(comparison, src, miss)),
        },
        ExprKind::Not(inner) => match explain(inner, src, payload) {
            Ok(()) => Err(format!("`{}` holds, and `!` negates it", inner.span.text(src))),
            Err(_) => Ok(()),
        },
        ExprKind::All(parts) => {
            parts.iter().try_for_each(|part| explain(part, src, payload).map_err(|why| name_part(part, src, why)))
        }
        ExprKind::Any(parts) => {
            let mut whys = Vec::with_capacity(parts.len());
            for part in parts {
                match explain(part, src, payload) {
                    Ok(()) => return Ok(()),
                    Err(why) => whys.push(name_part(part, src, why)),
                }
            }
            Err(format!("no side of || holds: {}", whys.join("; ")))
        }
    }
}

/// Says which part of a combination failed; a nested `&&` already names its own.
fn name_part(part: &Expr, src: &str, why: String) -> String {
    match part.kind {
        ExprKind::All(_) => why,
        _ => format!("`{}` fails: {why}", part.span.text(src)),
    }
}

fn compare<'a>(comparison: &Comparison, payload: &'a Payload) -> Outcome<'a> {
    let value = match (&comparison.left, payload) {
        (Left::Payload, Payload::Json(value)) => Operand::Json(value),
        (Left::Payload, Payload::Text(text)) => Operand::Text(text),
        (Left::Path(_), Payload::Text(_)) => return Outcome::NotJson,
        (Left::Path(path), Payload::Json(root)) => match path.walk(root) {
            Some(value) => Operand::Json(value),
            None => return Outcome::Missing,
        },
    };
    judge(value, comparison.op, &comparison.literal)
}

/// Rules 2 to 5 of the module documentation, in that order.
fn judge<'a>(value: Operand<'a>, op: Op, literal: &Literal) -> Outcome<'a> {
    let kind = kind_of(value);
    if let Some(want) = literal_number(literal) {
        if let Some(have) = number_of(&kind) {
            return match have.compare(want) {
                Some(order) => ordered(order, op, value),
                None => Outcome::Mismatch(value),
            };
        }
    }
    match (kind, literal) {
        (Kind::Str(have), Literal::Str { text, .. }) => ordered(have.cmp(text.as_str()), op, value),
        // ZeroClaw's docs test booleans as `$.active == "true"`: a JSON
        // boolean or null against a string compares as its JSON text.
        (Kind::Bool(have), Literal::Str { text, .. }) => {
            ordered(if have { "true" } else { "false" }.cmp(text.as_str()), op, value)
        }
        (Kind::Null, Literal::Str { text, .. }) => ordered("null".cmp(text.as_str()), op, value),
        (Kind::Bool(have), Literal::Bool(want)) => equality(have == *want, op, value),
        (Kind::Null, Literal::Null) => equality(true, op, value),
        _ => Outcome::Mismatch(value),
    }
}

fn kind_of(value: Operand<'_>) -> Kind<'_> {
    match value {
        Operand::Text(text) => Kind::Str(text),
        Operand::Json(Value::Number(n)) => Num::from_json(n).map_or(Kind::Other, Kind::Num),
        Operand::Json(Value::String(s)) => Kind::Str(s),
        Operand::Json(Value::Bool(b)) => Kind::Bool(*b),
        Operand::Json(Value::Null) => Kind::Null,
        Operand::Json(Value::Array(_) | Value::Object(_)) => Kind::Other,
    }
}

fn number_of(kind: &Kind<'_>) -> Option<Num> {
    match kind {
        Kind::Num(n) => Some(*n),
        Kind::Str(s) => Num::parse_exact(s),
        _ => None,
    }
}

fn literal_number(literal: &Literal) -> Option<Num> {
    match literal {
        Literal::Num(n) => Some(*n),
        Literal::Str { num, .. } => *num,
        _ => None,
    }
}

fn ordered(order: Ordering, op: Op, value: Operand<'_>) -> Outcome<'_> {
    let holds = match op {
        Op::Eq => order == Ordering::Equal,
        Op::Ne => order != Ordering::Equal,
        Op::Gt => order == Ordering::Greater,
        Op::Ge => order != Ordering::Less,
        Op::Lt => order == Ordering::Less,
        Op::Le => order != Ordering::Greater,
    };
    if holds {
        Outcome::Holds
    } else {
        Outcome::Unmet(value)
    }
}

fn equality(equal: bool, op: Op, value: Operand<'_>) -> Outcome<'_> {
    let holds = match op {
        Op::Eq => equal,
        Op::Ne => !equal,
        Op::Gt | Op::Ge | Op::Lt | Op::Le => return Outcome::Unordered(value),
    };
    if holds {
        Outcome::Holds
    } else {
        Outcome::Unmet(value)
    }
}

/// A miss in words, e.g. `$.severity is 1, needs >= 2`.
fn describe(comparison: &Comparison, src: &str, outcome: Outcome<'_>) -> String {
    let left = match comparison.left {
        Left::Payload => "payload",
        Left::Path(_) => comparison.left_span.text(src),
    };
    let op = comparison.op.as_str();
    let literal = comparison.literal_span.text(src);
    match outcome {
        Outcome::Holds => format!("{left} {op} {literal} holds"),
        Outcome::NotJson => "payload is not JSON".to_string(),
        Outcome::Missing => format!("{left} is missing"),
        Outcome::Unmet(value) => format!("{left} is {}, needs {op} {literal}", show(value)),
        Outcome::Unordered(value) => format!(
            "{left} is {}, and `{op}` does not order {}: only == and != apply",
            show(value),
            if matches!(value, Operand::Json(Value::Null)) { "null" } else { "booleans" }
        ),
        Outcome::Mismatch(value) => {
            format!("{left} is {} ({}), not comparable with {literal}", show(value), type_name(value))
        }
    }
}

/// The value as compact JSON (text as a JSON string), cut to a readable length.
fn show(value: Operand<'_>) -> String {
    let mut shown = match value {
        Operand::Json(value) => value.to_string(),
        Operand::Text(text) => Value::from(text).to_string(),
    };
    if shown.len() > SHOWN_VALUE_MAX {
        let mut cut = SHOWN_VALUE_MAX;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
        shown.push('…');
    }
    shown
}

fn type_name(value: Operand<'_>) -> &'static str {
    match value {
        Operand::Text(_) => "text",
        Operand::Json(Value::Number(_)) => "a number",
        Operand::Json(Value::String(_)) => "a string",
        Operand::Json(Value::Bool(_)) => "a boolean",
        Operand::Json(Value::Null) => "null",
        Operand::Json(Value::Array(_)) => "an array",
        Operand::Json(Value::Object(_)) => "an object",
    }
}
