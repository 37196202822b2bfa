//! Who may call the gateway: one-time pairing codes, bearer tokens, the
//! shared webhook secret, and the lockout after repeated wrong codes.
//!
//! Tokens are `fanin_<64 hex>` from 32 random bytes and exist in clear only in
//! the `/pair` reply; the store keeps their SHA-256. Secrets are compared in
//! constant time. Code and token generation is also used by the CLI
//! (`fanin pair`), which writes into the same store as the daemon.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{Store, StoreError, TokenRecord};

/// How long a pairing code can be redeemed.
pub const PAIRING_CODE_TTL: Duration = Duration::from_secs(3600);
/// Wrong pairing codes from one client before it is locked out.
pub const MAX_PAIRING_FAILURES: u32 = 5;
pub const LOCKOUT: Duration = Duration::from_secs(300);

const TOKEN_PREFIX: &str = "fanin_";

pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh 6-digit one-time code, uniformly drawn.
pub fn new_pairing_code() -> String {
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

/// Stores a new pairing code and returns it (the only time it is in clear).
pub async fn issue_pairing_code(store: &dyn Store, now: DateTime<Utc>) -> Result<String, StoreError> {
    let code = new_pairing_code();
    let ttl = chrono::Duration::from_std(PAIRING_CODE_TTL).expect("ttl fits");
    store.add_pairing_code(&sha256_hex(&code), now, now + ttl).await?;
    Ok(code)
}

/// A fresh token and the record that stores it.
pub fn new_token(now: DateTime<Utc>) -> (String, TokenRecord) {
    let bytes: [u8; 32] = rand::rng().random();
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let prefix = token[TOKEN_PREFIX.len()..TOKEN_PREFIX.len() + 8].to_string();
    let record = TokenRecord {
        subject: format!("token:{prefix}"),
        prefix,
        hash: sha256_hex(&token),
        created_at: now,
        revoked_at: None,
    };
    (token, record)
}

/// Redeems `code` for a new token: `None` when the code is not live.
pub async fn pair(store: &dyn Store, code: &str, now: DateTime<Utc>) -> Result<Option<String>, StoreError> {
    let hash = sha256_hex(code.trim());
    loop {
        let (token, record) = new_token(now);
        match store.redeem_pairing_code(&hash, now, &record).await {
            Ok(redeemed) => return Ok(redeemed.then_some(token)),
            // The new token's prefix collided with a stored one (about one
            // chance in 2^32 per token): the code is still unused, draw again.
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The credentials of an `Authorization` value using the Bearer scheme,
/// the one parser of that header. The scheme is case-insensitive and
/// separated from the credentials by one or more spaces (RFC 9110 §11.4).
pub fn bearer_credentials(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    let credentials = rest.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

/// The live token an `Authorization: Bearer …` header value carries, if any.
pub async fn verify_bearer(store: &dyn Store, header: &str) -> Result<Option<TokenRecord>, StoreError> {
    let Some(token) = bearer_credentials(header) else {
        return Ok(None);
    };
    let Some(body) = token.strip_prefix(TOKEN_PREFIX) else {
        return Ok(None);
    };
    if body.len() != 64 || !body.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let Some(record) = store.find_token(&body[..8]).await? else {
        return Ok(None);
    };
    let presented = sha256_hex(token);
    let same: bool = presented.as_bytes().ct_eq(record.hash.as_bytes()).into();
    Ok((same && record.revoked_at.is_none()).then_some(record))
}

/// Constant-time comparison of a presented secret with the configured one.
pub fn secret_matches(presented: &str, configured: &str) -> bool {
    // Hash both so the comparison does not reveal the configured length.
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(configured.as_bytes());
    a.ct_eq(&b).into()
}

/// Failed pairing attempts per client. Time is passed in, so the rule is
/// testable without waiting.
#[derive(Default)]
pub struct Lockouts {
    clients: Mutex<HashMap<String, Attempts>>,
}

#[derive(Clone, Copy, Default)]
struct Attempts {
    failures: u32,
    locked_until: Option<DateTime<Utc>>,
}

impl Lockouts {
    /// `Err(remaining)` while the client is locked out.
    pub fn check(&self, client: &str, now: DateTime<Utc>) -> Result<(), Duration> {
        let clients = self.clients.lock().expect("lockout lock");
        match clients.get(client).and_then(|a| a.locked_until) {
            Some(until) if until > now => Err((until - now).to_std().unwrap_or_default()),
            _ => Ok(()),
        }
    }

    /// Records a wrong code; returns the lockout if this one started it.
    pub fn fail(&self, client: &str, now: DateTime<Utc>) -> Option<Duration> {
        let mut clients = self.clients.lock().expect("lockout lock");
        // Forget clients whose lockout has passed, so the map stays small.
        clients.retain(|_, a| a.locked_until.is_none_or(|u| u > now));
        let attempts = clients.entry(client.to_string()).or_default();
        attempts.failures += 1;
        if attempts.failures >= MAX_PAIRING_FAILURES {
            attempts.failures = 0;
            attempts.locked_until = Some(now + chrono::Duration::from_std(LOCKOUT).expect("lockout fits"));
            return Some(LOCKOUT);
        }
        None
    }

    pub fn succeed(&self, client: &str) {
        self.clients.lock().expect("lockout lock").remove(client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn tokens_have_the_documented_shape_and_only_their_hash_is_kept() {
        let (token, record) = new_token(Utc::now());
        assert!(token.starts_with("fanin_"));
        assert_eq!(token.len(), 6 + 64);
        assert!(token[6..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(record.prefix, &token[6..14]);
        assert_eq!(record.hash, sha256_hex(&token));
        assert!(!record.hash.contains(&token[6..]));
        assert_ne!(new_token(Utc::now()).0, token);
    }

    #[test]
    fn pairing_codes_are_six_digits() {
        for _ in 0..100 {
            let code = new_pairing_code();
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let rows = [
            ("Bearer fanin_x", Some("fanin_x")),
            ("bearer fanin_x", Some("fanin_x")),
            ("BEARER fanin_x", Some("fanin_x")),
            ("bEaReR   fanin_x", Some("fanin_x")),
            ("  Bearer fanin_x  ", Some("fanin_x")),
            ("Bearer", None),
            ("Bearer ", None),
            ("Bearerfanin_x", None),
            ("Basic fanin_x", None),
            ("Bearer\tfanin_x", None),
            ("", None),
        ];
        for (header, want) in rows {
            assert_eq!(bearer_credentials(header), want, "{header:?}");
        }
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(secret_matches("s3cret", "s3cret"));
        assert!(!secret_matches("s3cret ", "s3cret"));
        assert!(!secret_matches("", "s3cret"));
    }

    #[test]
    fn five_wrong_codes_lock_a_client_out_for_300_seconds() {
        let t0 = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let l = Lockouts::default();
        for i in 0..4 {
            assert_eq!(l.fail("a", t0), None, "failure {i}");
            assert!(l.check("a", t0).is_ok());
        }
        assert_eq!(l.fail("a", t0), Some(LOCKOUT));
        assert_eq!(l.check("a", t0 + chrono::Duration::seconds(1)), Err(Duration::from_secs(299)));
        assert!(l.check("b", t0).is_ok(), "other clients are not affected");
        assert!(l.check("a", t0 + chrono::Duration::seconds(300)).is_ok());
    }

    #[test]
    fn a_right_code_clears_the_count() {
        let t0 = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let l = Lockouts::default();
        for _ in 0..4 {
            l.fail("a", t0);
        }
        l.succeed("a");
        assert_eq!(l.fail("a", t0), None);
    }
}
