//! Numbers as conditions see them: JSON number syntax everywhere (literals and
//! numeric strings alike), compared exactly when both sides are integers and
//! as `f64` otherwise.

use std::cmp::Ordering;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    pub(super) fn from_json(n: &serde_json::Number) -> Option<Num> {
        if let Some(i) = n.as_i64() {
            Some(Num::Int(i.into()))
        } else if let Some(u) = n.as_u64() {
            Some(Num::Int(u.into()))
        } else {
            n.as_f64().map(Num::Float)
        }
    }

    /// The number `text` holds when it is exactly one finite JSON number,
    /// e.g. `"2.5"`; `None` for `" 2"`, `"+2"`, `"inf"`, `"1e999"`.
    pub(super) fn parse_exact(text: &str) -> Option<Num> {
        match scan(text.as_bytes()) {
            Some((len, integral)) if len == text.len() => Num::from_scanned(text, integral),
            _ => None,
        }
    }

    /// Converts text that `scan` accepted whole; `None` when out of `f64` range.
    pub(super) fn from_scanned(text: &str, integral: bool) -> Option<Num> {
        if integral {
            if let Ok(i) = text.parse::<i128>() {
                return Some(Num::Int(i));
            }
        }
        let f: f64 = text.parse().ok()?;
        f.is_finite().then_some(Num::Float(f))
    }

    pub(super) fn compare(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// The length of the JSON number at the start of `bytes` and whether it is an
/// integer (no fraction, no exponent); `None` when no well-formed number starts
/// there (a dangling `.` or `e` makes the whole number malformed).
pub(super) fn scan(bytes: &[u8]) -> Option<(usize, bool)> {
    let mut at = usize::from(bytes.first() == Some(&b'-'));
    match bytes.get(at) {
        Some(b'0') => at += 1,
        Some(b'1'..=b'9') => at += digits(&bytes[at..]),
        _ => return None,
    }
    let mut integral = true;
    if bytes.get(at) == Some(&b'.') {
        let fraction = digits(&bytes[at + 1..]);
        if fraction == 0 {
            return None;
        }
        at += 1 + fraction;
        integral = false;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        let mut exponent = at + 1;
        if matches!(bytes.get(exponent), Some(b'+' | b'-')) {
            exponent += 1;
        }
        let count = digits(&bytes[exponent..]);
        if count == 0 {
            return None;
        }
        at = exponent + count;
        integral = false;
    }
    Some((at, integral))
}

pub(super) fn digits(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_digit()).count()
}
