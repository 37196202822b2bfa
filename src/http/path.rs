//! One spelling per request path, settled before routing.
//!
//! A path may spell a character either literally or percent-encoded
//! (RFC 3986 §2.1): `/sop/%64eploy` is `/sop/deploy`. Routing, SOP
//! matching, idempotency scopes and replies must all see the same path, so
//! the gateway rewrites each request path into one canonical form first:
//! every octet a path may hold literally is decoded, the others stay
//! encoded with upper-case hex. [`text`] then gives the path as the text a
//! SOP's `path` is written in.
//!
//! Refused (`400 invalid_path`), because no SOP path or route can mean them
//! and a proxy in front may read them differently: an encoded `/` (`%2F`
//! would turn one segment into two, or not, depending on who decodes), an
//! encoded control character (NUL included), bytes that are not UTF-8, and a
//! `%` not followed by two hex digits.

use std::borrow::Cow;
use std::fmt::Write;

/// Why a path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    BadEscape,
    EncodedSlash,
    ControlCharacter,
    NotUtf8,
}

impl PathError {
    pub fn reason(self) -> &'static str {
        match self {
            PathError::BadEscape => "a % in the path is not followed by two hex digits",
            PathError::EncodedSlash => "the path holds an encoded slash (%2F); send / or leave it out",
            PathError::ControlCharacter => "the path holds an encoded control character",
            PathError::NotUtf8 => "the path's percent-encoded bytes are not UTF-8",
        }
    }
}

/// Characters a path keeps literally: unreserved, sub-delims, `:`, `@`
/// (RFC 3986 `pchar`) and the segment separator `/`.
fn literal_in_path(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/".contains(c)
}

/// The canonical form of `raw` (a request's path, as sent), or `None` when
/// `raw` already is canonical. Pure; allocates only for paths holding `%`.
pub fn normalise(raw: &str) -> Result<Option<String>, PathError> {
    if !raw.contains('%') {
        // Without escapes the request line parser already admitted only
        // URI characters: nothing to rewrite.
        return Ok(None);
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            decoded.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = |b: u8| (b as char).to_digit(16);
        let (Some(hi), Some(lo)) = (bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b)))
        else {
            return Err(PathError::BadEscape);
        };
        let byte = (hi * 16 + lo) as u8;
        if byte == b'/' {
            return Err(PathError::EncodedSlash);
        }
        decoded.push(byte);
        i += 3;
    }
    let text = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    if text.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    let mut canonical = String::with_capacity(raw.len());
    for c in text.chars() {
        if literal_in_path(c) {
            canonical.push(c);
        } else {
            let mut utf8 = [0; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                write!(canonical, "%{b:02X}").expect("writing to a String");
            }
        }
    }
    Ok((canonical != raw).then_some(canonical))
}

/// A canonical path as text (what SOP paths are written in): its escapes
/// decoded. Borrows when there are none.
pub fn text(canonical: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(canonical).decode_utf8_lossy()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_have_one_spelling() {
        #[rustfmt::skip]
        let rows: &[(&str, Option<&str>)] = &[
            ("/sop/deploy", None),
            ("/sop/%64eploy", Some("/sop/deploy")),
            ("/sop/%64%65%70%6C%6F%79", Some("/sop/deploy")),
            ("/%77ebhook", Some("/webhook")),
            ("/peripheral/nucleo/pin_%33", Some("/peripheral/nucleo/pin_3")),
            ("/sop/a%3Bb%3D%40%3A", Some("/sop/a;b=@:")),
            ("/sop/caf%c3%a9", Some("/sop/caf%C3%A9")),
            ("/sop/caf%C3%A9", None),
            ("/sop/a%20b", None),
            ("/sop/100%25", None),
            ("/sop/%7e%2d", Some("/sop/~-")),
            ("/sop/%3F%23", None),
        ];
        for (raw, want) in rows {
            assert_eq!(normalise(raw).unwrap().as_deref(), *want, "{raw}");
        }
    }

    #[test]
    fn what_no_path_can_mean_is_refused() {
        let rows = [
            ("/sop/a%2Fb", PathError::EncodedSlash),
            ("/sop/a%2fb", PathError::EncodedSlash),
            ("/sop/%00", PathError::ControlCharacter),
            ("/sop/a%0Ab", PathError::ControlCharacter),
            ("/sop/%7F", PathError::ControlCharacter),
            ("/sop/%C2%85", PathError::ControlCharacter),
            ("/sop/%FF", PathError::NotUtf8),
            ("/sop/%C3", PathError::NotUtf8),
            ("/sop/%", PathError::BadEscape),
            ("/sop/%4", PathError::BadEscape),
            ("/sop/%zz", PathError::BadEscape),
            ("/sop/%%41", PathError::BadEscape),
        ];
        for (raw, want) in rows {
            assert_eq!(normalise(raw), Err(want), "{raw}");
        }
    }

    #[test]
    fn text_decodes_what_stayed_encoded() {
        assert_eq!(text("/sop/deploy"), "/sop/deploy");
        assert!(matches!(text("/sop/deploy"), Cow::Borrowed(_)));
        assert_eq!(text("/sop/caf%C3%A9"), "/sop/café");
        assert_eq!(text("/sop/100%25"), "/sop/100%");
        assert_eq!(text("/sop/a%20b"), "/sop/a b");
    }

    proptest! {
        /// Any input: no panic; a canonical form is a fixed point, stays a
        /// valid URI path, and means the same text as the input.
        #[test]
        fn normalising_is_idempotent_and_keeps_the_meaning(raw in "/([a-zA-Z0-9/._~;@-]|%[0-9a-fA-F]{2}|%){0,16}") {
            if let Ok(canonical) = normalise(&raw) {
                let canonical = canonical.unwrap_or_else(|| raw.clone());
                prop_assert_eq!(normalise(&canonical), Ok(None));
                prop_assert!(canonical.parse::<axum::http::uri::PathAndQuery>().is_ok(), "{}", canonical);
                prop_assert_eq!(text(&canonical), text(&raw));
            }
        }

        /// Every text a SOP path can hold survives encoding and normalising.
        #[test]
        fn encoded_text_comes_back(name in "[^/\\p{Cc}]{1,12}") {
            let encoded: String = percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC).collect();
            let raw = format!("/sop/{encoded}");
            let canonical = normalise(&raw).unwrap().unwrap_or(raw);
            prop_assert_eq!(text(&canonical), format!("/sop/{name}"));
        }
    }
}
