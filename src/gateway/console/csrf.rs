//! Cross-site request forgery tokens for the console's forms: a page sets a
//! random value in the `fanin_csrf` cookie and puts HMAC-SHA256(daemon
//! secret, that value) in every form it renders; a POST is served only when
//! the form's token is the MAC of the cookie it came with. Another site can
//! make a browser send the cookie (SameSite=Strict already stops most of
//! that) but cannot read it or the page, so it cannot forge the token.
//!
//! The secret is derived from the store's pairing key, so a page rendered
//! by one replica posts to another, and a restart leaves open pages'
//! forms working.

use axum::http::{HeaderMap, HeaderValue};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const COOKIE: &str = "fanin_csrf";
/// Random bytes behind a cookie value (hex on the wire).
const NONCE_BYTES: usize = 32;

/// The daemon's secret that tokens are derived under.
pub struct CsrfKey {
    secret: [u8; 32],
}

impl CsrfKey {
    pub fn new(secret: [u8; 32]) -> CsrfKey {
        CsrfKey { secret }
    }

    #[cfg(test)]
    fn random() -> CsrfKey {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        CsrfKey { secret }
    }

    fn mac(&self, nonce: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(nonce.as_bytes());
        mac
    }

    /// The token a form carries for the cookie value `nonce`.
    pub fn token(&self, nonce: &str) -> String {
        hex::encode(self.mac(nonce).finalize().into_bytes())
    }

    /// Whether `token` was made for `nonce` under this key, compared in
    /// constant time.
    pub fn verify(&self, nonce: &str, token: &str) -> bool {
        match hex::decode(token) {
            Ok(bytes) => self.mac(nonce).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }

    /// The session of a page request: the browser's cookie when it holds a
    /// well-formed value, else a fresh one the response must set (`Secure`
    /// when the request came over TLS).
    pub fn session(&self, headers: &HeaderMap, secure: bool) -> Session {
        let (nonce, fresh) = match cookie_nonce(headers) {
            Some(nonce) => (nonce, false),
            None => {
                let mut bytes = [0u8; NONCE_BYTES];
                rand::rng().fill_bytes(&mut bytes);
                (hex::encode(bytes), true)
            }
        };
        Session { token: self.token(&nonce), nonce, fresh, secure, signed_in: false }
    }

    /// Whether a POST with `headers` and the form field `token` may act.
    pub fn check(&self, headers: &HeaderMap, token: Option<&str>) -> bool {
        match (cookie_nonce(headers), token) {
            (Some(nonce), Some(token)) => self.verify(&nonce, token),
            _ => false,
        }
    }
}

/// The cookie and the token of one page.
pub struct Session {
    nonce: String,
    /// What the page's forms carry in their `csrf` field.
    pub token: String,
    fresh: bool,
    /// The request came over TLS: cookies set in answer are `Secure`.
    pub secure: bool,
    /// The caller holds a console sign-in (pages offer to sign out).
    pub signed_in: bool,
}

impl Session {
    /// The `Set-Cookie` header the response needs, if the browser had no
    /// usable cookie. Scoped to the console, unreadable to script, and not
    /// sent on requests that start on another site.
    pub fn set_cookie(&self) -> Option<HeaderValue> {
        self.fresh.then(|| super::set_cookie(COOKIE, &self.nonce, None, self.secure))
    }
}

/// The `fanin_csrf` value of the request's cookies, if one is well formed.
fn cookie_nonce(headers: &HeaderMap) -> Option<String> {
    super::cookie(headers, COOKIE)
        .filter(|v| v.len() == 2 * NONCE_BYTES && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_token_holds_only_for_its_cookie_and_its_key() {
        let key = CsrfKey::random();
        let session = key.session(&HeaderMap::new(), false);
        let cookie = session.set_cookie().expect("a new session sets its cookie");
        let cookie = cookie.to_str().unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/ui"));
        assert!(!cookie.contains("Secure"), "plain HTTP cannot keep a Secure cookie");
        let over_tls = key.session(&HeaderMap::new(), true).set_cookie().unwrap();
        assert!(over_tls.to_str().unwrap().ends_with("; Secure"), "{over_tls:?}");
        let pair = cookie.split(';').next().unwrap();
        let headers = with_cookie(&format!("theme=dark; {pair}"));
        assert!(key.check(&headers, Some(&session.token)));

        let again = key.session(&headers, false);
        assert!(again.set_cookie().is_none(), "a usable cookie is kept");
        assert_eq!(again.token, session.token);

        assert!(!key.check(&headers, None), "no token");
        assert!(!key.check(&headers, Some("")), "empty token");
        assert!(!key.check(&headers, Some("not hex")));
        let mut wrong = session.token.clone().into_bytes();
        wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
        assert!(!key.check(&headers, Some(std::str::from_utf8(&wrong).unwrap())), "one digit changed");
        assert!(!key.check(&HeaderMap::new(), Some(&session.token)), "no cookie");
        let other = key.session(&HeaderMap::new(), false);
        let other_cookie = other.set_cookie().unwrap();
        let other_headers = with_cookie(other_cookie.to_str().unwrap().split(';').next().unwrap());
        assert!(!key.check(&other_headers, Some(&session.token)), "another cookie's token");
        assert!(!CsrfKey::random().check(&headers, Some(&session.token)), "another daemon's key");
    }

    #[test]
    fn malformed_cookies_start_a_new_session() {
        let key = CsrfKey::random();
        for cookie in ["fanin_csrf=", "fanin_csrf=abc", &format!("fanin_csrf={}", "g".repeat(64)), "other=1"] {
            let session = key.session(&with_cookie(cookie), false);
            assert!(session.set_cookie().is_some(), "{cookie}");
            assert!(!key.check(&with_cookie(cookie), Some(&session.token)), "{cookie}");
        }
    }
}
