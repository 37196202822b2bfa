//! The left side of a comparison: an RFC 9535 singular query (`$.a['b'][0]`,
//! `$[-1]`) plus ZeroClaw's dot form: `$.a.0` names element 0 of an array
//! and the key `"0"` of an object, and a dot name may hold `-`
//! (`$.error-rate`), as ZeroClaw's paths do.
//!
//! Parsed once into segments; `walk` then follows them with borrowed lookups
//! only, so evaluating a path never allocates.

use serde_json::Value;

use super::number::digits;
use super::scan::{error, scan_string, skip_space};
use super::ParseError;

/// RFC 9535 keeps indices within I-JSON's exact integer range.
const MAX_INDEX: i64 = (1 << 53) - 1;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Segment {
    Name(String),
    /// Negative counts from the end: -1 is the last element.
    Index(i64),
    /// A numeric dot segment (`.0`): `index` in an array, the member `name`
    /// (the same digits) in an object. ZeroClaw's paths mean both.
    Numeric {
        index: i64,
        name: String,
    },
}

/// A singular query; no segments is `$`, the whole payload.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Path {
    pub(super) segments: Vec<Segment>,
}

impl Path {
    /// The value the path names in `root`, or `None` when it names nothing.
    pub(super) fn walk<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.segments.iter().try_fold(root, |value, segment| match (segment, value) {
            (Segment::Name(name), Value::Object(members)) => members.get(name.as_str()),
            (Segment::Index(index), Value::Array(items)) => items.get(array_position(*index, items.len())?),
            (Segment::Numeric { name, .. }, Value::Object(members)) => members.get(name.as_str()),
            (Segment::Numeric { index, .. }, Value::Array(items)) => items.get(array_position(*index, items.len())?),
            _ => None,
        })
    }
}

fn array_position(index: i64, len: usize) -> Option<usize> {
    if index >= 0 {
        usize::try_from(index).ok()
    } else {
        len.checked_sub(usize::try_from(index.unsigned_abs()).ok()?)
    }
}

/// Parses the query whose `$` is at `start`; returns it and the offset after it.
pub(super) fn parse(src: &str, start: usize) -> Result<(Path, usize), ParseError> {
    let mut at = start + 1;
    if src[at..].chars().next().is_some_and(is_name_char) {
        return Err(error("bad path: `$` must be followed by `.name` or `[...]`", at));
    }
    let mut segments = Vec::new();
    loop {
        // RFC 9535 allows blanks before a segment: `$ .a [0]`.
        let next = skip_space(src, at);
        let (segment, end) = match src.as_bytes().get(next) {
            Some(b'.') => dot_segment(src, next)?,
            Some(b'[') => bracket_segment(src, next)?,
            _ => return Ok((Path { segments }, at)),
        };
        segments.push(segment);
        at = end;
    }
}

fn not_singular(what: &str, at: usize) -> ParseError {
    error(format!("not a singular query: {what} can select several values"), at)
}

/// `.name` or `.0` with the dot at `dot`.
fn dot_segment(src: &str, dot: usize) -> Result<(Segment, usize), ParseError> {
    let start = dot + 1;
    let rest = &src[start..];
    match rest.chars().next() {
        Some('.') => Err(not_singular("`..` (descendants)", dot)),
        Some('*') => Err(not_singular("`.*` (a wildcard)", dot)),
        Some(c) if c.is_ascii_digit() => {
            let end = start + rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
            let name = &src[start..end];
            if name.bytes().all(|b| b.is_ascii_digit()) {
                Ok((Segment::Numeric { index: index(name, start)?, name: name.to_string() }, end))
            } else {
                Err(error(
                    format!("bad path: `.{name}` starts with a digit but is not an index; write ['{name}']"),
                    start,
                ))
            }
        }
        Some(c) if is_name_first(c) => {
            let end = start + rest.find(|c: char| !is_dot_name_char(c)).unwrap_or(rest.len());
            Ok((Segment::Name(src[start..end].to_string()), end))
        }
        _ => Err(error("bad path: `.` must be followed by a name or an index", start)),
    }
}

/// `['name']`, `["name"]` or `[index]` with the `[` at `open`.
fn bracket_segment(src: &str, open: usize) -> Result<(Segment, usize), ParseError> {
    let inside = skip_space(src, open + 1);
    let (segment, after) = match src[inside..].chars().next() {
        None => return Err(error("bad path: `[` is never closed", open)),
        Some('\'' | '"') => {
            let (name, end) = scan_string(src, inside)?;
            (Segment::Name(name), end)
        }
        Some(c) if c == '-' || c.is_ascii_digit() => {
            let sign = usize::from(c == '-');
            let end = inside + sign + digits(&src.as_bytes()[inside + sign..]);
            (Segment::Index(index(&src[inside..end], inside)?), end)
        }
        Some('*') => return Err(not_singular("`[*]` (a wildcard)", inside)),
        Some('?') => return Err(not_singular("`[?...]` (a filter)", inside)),
        Some(':') => return Err(not_singular("`[:...]` (a slice)", inside)),
        Some(_) => return Err(error("bad path: expected a quoted name or an index inside `[ ]`", inside)),
    };
    let close = skip_space(src, after);
    match src.as_bytes().get(close) {
        Some(b']') => Ok((segment, close + 1)),
        Some(b',') => Err(not_singular("`[a, b]` (a union)", close)),
        Some(b':') => Err(not_singular("`[start:end]` (a slice)", close)),
        Some(b'.' | b'e' | b'E') if matches!(segment, Segment::Index(_)) => {
            Err(error("bad path: an index must be a whole number", close))
        }
        None => Err(error("bad path: `[` is never closed", open)),
        Some(_) => Err(error("bad path: expected `]`", close)),
    }
}

/// An index as RFC 9535 writes it: no leading zeros, no `-0`, within ±(2^53-1).
fn index(text: &str, at: usize) -> Result<i64, ParseError> {
    let magnitude = text.strip_prefix('-').unwrap_or(text);
    if magnitude.is_empty() {
        return Err(error("bad path: `-` must be followed by the digits of an index", at));
    }
    if magnitude.len() > 1 && magnitude.starts_with('0') {
        return Err(error(format!("bad path: index `{text}` has a leading zero"), at));
    }
    if text == "-0" {
        return Err(error("bad path: index `-0` is not allowed; write 0", at));
    }
    text.parse::<i64>()
        .ok()
        .filter(|i| i.unsigned_abs() <= MAX_INDEX.unsigned_abs())
        .ok_or_else(|| error(format!("bad path: index `{text}` is out of range"), at))
}

/// RFC 9535 `name-first`: ALPHA, `_`, or any non-ASCII character.
fn is_name_first(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_name_char(c: char) -> bool {
    is_name_first(c) || c.is_ascii_digit()
}

/// After the first character a dot name may also hold `-`, as in ZeroClaw
/// (`$.error-rate`); RFC 9535 would need `$['error-rate']`.
fn is_dot_name_char(c: char) -> bool {
    is_name_char(c) || c == '-'
}
