//! What of a webhook's request travels with its event beside the body: the
//! query and the headers, as Smart Office's webhook trigger hands them to
//! the next layer, minus every header that may carry a credential.
//!
//! The event goes into envelopes, the store and the audit, and from there to
//! other systems and their logs; a bearer token, a cookie or the webhook
//! secret copied into it would leave fanin with it. So headers are withheld
//! by what their name says, not only by a fixed list: a proxy's or a
//! client's own `X-Auth-Token` or `X-Api-Key` stays here as surely as
//! `Authorization`.

use axum::http::{HeaderMap, Uri};
use serde_json::{Map, Value};

use crate::event::Request;

/// A header whose lower-case name contains one of these is withheld. Covers
/// `authorization`, `proxy-authorization`, `cookie`, `set-cookie`,
/// `x-webhook-secret` and `x-pairing-code` (fanin's own credentials), and
/// the usual spellings of API keys, tokens, sessions and signatures.
pub const WITHHELD_NAME_PARTS: &[&str] = &[
    "auth",
    "cookie",
    "secret",
    "token",
    "password",
    "passwd",
    "credential",
    "session",
    "signature",
    "api-key",
    "apikey",
    "api_key",
    "pairing",
    "private",
];

/// The query and the headers of a webhook request that travel with its event.
pub fn of(uri: &Uri, headers: &HeaderMap) -> Request {
    Request { query: query(uri.query()), headers: passed_on(headers) }
}

/// Whether a header never leaves fanin.
pub fn withheld(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    WITHHELD_NAME_PARTS.iter().any(|part| name.contains(part))
}

/// `a=1&b=x+y&a=2` is `{"a": ["1", "2"], "b": "x y"}`: form decoding (`+`
/// is a space, `%XX` a byte, bytes that are not UTF-8 replaced), a name
/// given once is a string, a name repeated is the list of its values in
/// order. Names are taken as written (`a[]` is the name `a[]`).
fn query(query: Option<&str>) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let value = Value::String(value.into_owned());
        match out.get_mut(name.as_ref()) {
            None => {
                out.insert(name.into_owned(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    out
}

/// Every header not [`withheld`], by its lower-case name; a repeated header
/// is its values joined with `", "`, as HTTP allows a list to be sent
/// either way. Bytes that are not UTF-8 are replaced.
fn passed_on(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for name in headers.keys() {
        if withheld(name.as_str()) {
            continue;
        }
        let values: Vec<String> =
            headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        out.insert(name.as_str().to_string(), Value::String(values.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    #[test]
    fn the_query_is_decoded_and_repeated_names_collect_their_values() {
        let cases = [
            (None, json!({})),
            (Some(""), json!({})),
            (Some("campaign=spring"), json!({"campaign": "spring"})),
            (Some("a=1&b=x+y&a=2&a=3"), json!({"a": ["1", "2", "3"], "b": "x y"})),
            (Some("q=caf%C3%A9&empty=&flag"), json!({"q": "café", "empty": "", "flag": ""})),
            (Some("bad=%FF"), json!({"bad": "\u{fffd}"})),
            (Some("ids[]=1&ids[]=2"), json!({"ids[]": ["1", "2"]})),
        ];
        for (text, want) in cases {
            assert_eq!(Value::Object(query(text)), want, "{text:?}");
        }
    }

    #[test]
    fn credentials_are_withheld_by_name() {
        for name in [
            "authorization",
            "Proxy-Authorization",
            "cookie",
            "set-cookie",
            "x-webhook-secret",
            "x-pairing-code",
            "x-api-key",
            "x-auth-token",
            "x-hub-signature-256",
            "x-session-id",
            "x-csrf-token",
            "x-amz-security-token",
            "x-goog-api_key",
            "x-client-credentials",
        ] {
            assert!(withheld(name), "{name}");
        }
        for name in [
            "content-type",
            "user-agent",
            "x-idempotency-key",
            "x-request-id",
            "x-forwarded-for",
            "x-github-event",
            "accept",
        ] {
            assert!(!withheld(name), "{name}");
        }
    }

    #[test]
    fn headers_travel_by_lower_case_name_with_repeats_joined() {
        let mut headers = HeaderMap::new();
        headers.insert("Content-Type", HeaderValue::from_static("application/json"));
        headers.append("accept", HeaderValue::from_static("text/plain"));
        headers.append("accept", HeaderValue::from_static("application/json"));
        headers.insert("authorization", HeaderValue::from_static("Bearer zc_secret"));
        headers.insert("cookie", HeaderValue::from_static("sid=1"));
        headers.insert("x-webhook-secret", HeaderValue::from_static("s3cret"));
        headers.insert("x-label", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let uri: Uri = "/sop/deploy?env=prod".parse().unwrap();
        let request = of(&uri, &headers);
        assert_eq!(request.query, json!({"env": "prod"}).as_object().cloned().unwrap());
        assert_eq!(
            Value::Object(request.headers),
            json!({"content-type": "application/json", "accept": "text/plain, application/json",
                   "x-label": "caf\u{fffd}"})
        );
    }
}
