//! Character-level scanning shared by the lexer and the path parser: the
//! error at an offset, whitespace, and quoted strings with their escapes.
//! Below both, so neither has to reach into the other.

use super::ParseError;

pub(super) fn error(reason: impl Into<String>, offset: usize) -> ParseError {
    ParseError { reason: reason.into(), offset }
}

/// The offset of the first non-whitespace byte at or after `at`.
pub(super) fn skip_space(src: &str, at: usize) -> usize {
    let rest = &src.as_bytes()[at..];
    at + rest.iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')).count()
}

/// Scans the quoted string whose opening quote (`"` or `'`) is at `open`,
/// decoding JSON escapes; returns the text and the offset after the closing
/// quote. Only the string's own quote may be escaped, as in RFC 9535.
pub(super) fn scan_string(src: &str, open: usize) -> Result<(String, usize), ParseError> {
    let quote = char::from(src.as_bytes()[open]);
    let mut text = String::new();
    let mut at = open + 1;
    loop {
        let Some(c) = src[at..].chars().next() else {
            return Err(error("unterminated string", open));
        };
        if c == quote {
            return Ok((text, at + 1));
        }
        if c == '\\' {
            let (decoded, next) = escape(src, open, at, quote)?;
            text.push(decoded);
            at = next;
            continue;
        }
        if c < ' ' {
            return Err(error(
                format!("control character U+{:04X} in a string: write it as an escape", u32::from(c)),
                at,
            ));
        }
        text.push(c);
        at += c.len_utf8();
    }
}

/// Decodes the escape whose backslash is at `at`; returns it and the offset after it.
fn escape(src: &str, open: usize, at: usize, quote: char) -> Result<(char, usize), ParseError> {
    let Some(c) = src[at + 1..].chars().next() else {
        return Err(error("unterminated string", open));
    };
    let decoded = match c {
        '\\' => '\\',
        '/' => '/',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'u' => return unicode_escape(src, at),
        c if c == quote => quote,
        _ => {
            return Err(error(
                format!("bad escape `\\{c}`: escapes are \\{quote} \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX"),
                at,
            ))
        }
    };
    Ok((decoded, at + 2))
}

/// `\uXXXX` at `at`, or a UTF-16 surrogate pair `\uD83D\uDE00`.
fn unicode_escape(src: &str, at: usize) -> Result<(char, usize), ParseError> {
    let first = hex4(src, at)?;
    let (code, end) = match first {
        0xD800..=0xDBFF => (surrogate_pair(src, at, first)?, at + 12),
        0xDC00..=0xDFFF => {
            let reason = format!("bad escape `\\u{first:04X}`: a low surrogate without a high one before it");
            return Err(error(reason, at));
        }
        _ => (first, at + 6),
    };
    char::from_u32(code)
        .map(|c| (c, end))
        .ok_or_else(|| error(format!("bad escape: U+{code:X} is not a character"), at))
}

/// The code point of the high surrogate `high` at `at` and the low one that must follow it.
fn surrogate_pair(src: &str, at: usize, high: u32) -> Result<u32, ParseError> {
    let low = if src[at + 6..].starts_with("\\u") { Some(hex4(src, at + 6)?) } else { None };
    match low {
        Some(low @ 0xDC00..=0xDFFF) => Ok(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)),
        _ => {
            let reason =
                format!("bad escape `\\u{high:04X}`: a high surrogate must be followed by a low one (\\uDC00-\\uDFFF)");
            Err(error(reason, at))
        }
    }
}

/// The four hex digits after the `\u` whose backslash is at `at`.
fn hex4(src: &str, at: usize) -> Result<u32, ParseError> {
    src.get(at + 2..at + 6)
        .filter(|digits| digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|digits| u32::from_str_radix(digits, 16).ok())
        .ok_or_else(|| error("bad escape: `\\u` needs four hex digits", at))
}
