//! Pairing: one-time six-digit codes traded for bearer tokens (`POST
//! /pair`), issued by the daemon at start and by `fanin pair` at any time,
//! both writing the same store and reading the same key.
//!
//! A six-digit code's SHA-256 is undone by trying all million codes, so the
//! store keeps the code's HMAC-SHA256 under a key kept in a file beside the
//! store, never in it.
//!
//! Guessing is bounded per code, not per caller: every wrong code presented
//! is charged to every code live at that moment, and a code that has
//! absorbed [`PAIRING_CODE_BUDGET`] wrong guesses is retired, so no number of
//! addresses buys more than that many tries at one code. The per-client
//! lockout only answers a client's further wrong codes with 429; a live
//! code always pairs, so nobody sharing the operator's address can lock the
//! operator out.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use super::tokens::new_token;
use crate::store::{files, Store, StoreError};

/// How long a pairing code can be redeemed.
pub const PAIRING_CODE_TTL: Duration = Duration::from_secs(3600);
/// Wrong codes, from anyone, that retire every code live while they were
/// presented. The odds of one code falling to a guesser are at most this
/// many in a million.
pub const PAIRING_CODE_BUDGET: u32 = 100;
/// Wrong pairing codes from one client before its wrong codes get 429.
pub const MAX_PAIRING_FAILURES: u32 = 5;
pub const LOCKOUT: Duration = Duration::from_secs(300);
const CODE_DIGITS: usize = 6;

/// A fresh 6-digit one-time code, uniformly drawn.
pub fn new_pairing_code() -> String {
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

/// Six ASCII digits: only such a string can be a code, so only such a
/// string is a guess worth charging.
fn is_code_shaped(code: &str) -> bool {
    code.len() == CODE_DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

/// A pairing key that cannot be used, worded for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PairingKeyError(String);

/// The key pairing codes are MACed with, and the console's keys are
/// derived from: 32 random bytes in a file beside the store (`pairing.key`,
/// owner-only). Every process that issues or redeems codes on a store, and
/// every replica of it, reads the same file.
pub struct PairingKey([u8; PairingKey::LEN]);

impl std::fmt::Debug for PairingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairingKey(..)")
    }
}

impl PairingKey {
    pub const LEN: usize = 32;

    /// The key of the store at `db`; see [`PairingKey::load_or_create`].
    pub fn for_store(db: &Path) -> Result<PairingKey, PairingKeyError> {
        PairingKey::load_or_create(&files::pairing_key_path(db))
    }

    /// Reads the key at `path`, or creates it there (whichever process
    /// needs it first; when two race, both end with the file that won).
    /// A file that cannot be read or is not exactly [`PairingKey::LEN`]
    /// bytes is refused: a different key would silently void every code.
    pub fn load_or_create(path: &Path) -> Result<PairingKey, PairingKeyError> {
        let unreadable = |e: std::io::Error| {
            PairingKeyError(format!(
                "pairing key {}: cannot read it ({e}); pairing codes are verified with it",
                path.display()
            ))
        };
        match std::fs::read(path) {
            Ok(bytes) => PairingKey::from_file(path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let cannot_create = |e: std::io::Error| {
                    PairingKeyError(format!("pairing key {}: cannot create it: {e}", path.display()))
                };
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    files::create_private_dir(dir).map_err(cannot_create)?;
                }
                let fresh: [u8; PairingKey::LEN] = rand::rng().random();
                files::write_private_once(path, &fresh).map_err(cannot_create)?;
                PairingKey::from_file(path, &std::fs::read(path).map_err(unreadable)?)
            }
            Err(e) => Err(unreadable(e)),
        }
    }

    fn from_file(path: &Path, bytes: &[u8]) -> Result<PairingKey, PairingKeyError> {
        let key = <[u8; PairingKey::LEN]>::try_from(bytes).map_err(|_| {
            PairingKeyError(format!(
                "pairing key {}: {} bytes, expected {}; restore the file, or remove it to have a new key made \
                 (codes issued so far then stop working)",
                path.display(),
                bytes.len(),
                PairingKey::LEN
            ))
        })?;
        Ok(PairingKey(key))
    }

    #[cfg(test)]
    pub fn from_bytes(key: [u8; PairingKey::LEN]) -> PairingKey {
        PairingKey(key)
    }

    /// A key for another use of this secret, named by `purpose`: every
    /// process reading the same file derives the same one, and a MAC made
    /// for one purpose (or a pairing code's) never stands for another's.
    pub fn derive(&self, purpose: &str) -> [u8; PairingKey::LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(b"fanin derived key\0");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// What the store keeps of `code`: HMAC-SHA256, hex.
    pub fn mac(&self, code: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(code.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Stores a new pairing code and returns it (the only time it is in clear).
pub async fn issue_pairing_code(store: &dyn Store, key: &PairingKey, now: DateTime<Utc>) -> Result<String, StoreError> {
    let code = new_pairing_code();
    let ttl = chrono::Duration::from_std(PAIRING_CODE_TTL).expect("ttl fits");
    store.add_pairing_code(&key.mac(&code), now, now + ttl).await?;
    Ok(code)
}

/// Redeems the code with MAC `mac` for a new token: `None` when it is not
/// live (any more).
async fn redeem(store: &dyn Store, mac: &str, now: DateTime<Utc>) -> Result<Option<String>, StoreError> {
    loop {
        let (token, record) = new_token(now);
        match store.redeem_pairing_code(mac, now, &record).await {
            Ok(redeemed) => return Ok(redeemed.then_some(token)),
            // The new token's prefix collided with a stored one (about one
            // chance in 2^32 per token): the code is still unused, draw again.
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What a `/pair` request gets.
#[derive(Debug, PartialEq, Eq)]
pub enum PairingOutcome {
    /// A live code, traded for this token.
    Paired(String),
    /// Not a live code. `locked_out`: what is left of this client's lockout,
    /// if it runs.
    Refused { locked_out: Option<Duration> },
}

/// Trades pairing codes for tokens under the limits on guessing (see the
/// module doc). One per gateway.
pub struct Pairing {
    key: PairingKey,
    lockouts: Lockouts,
}

impl Pairing {
    pub fn new(key: PairingKey) -> Pairing {
        Pairing { key, lockouts: Lockouts::default() }
    }

    pub fn key(&self) -> &PairingKey {
        &self.key
    }

    /// A live code pairs, whoever sends it. Anything else is refused, and
    /// charged to every live code if it could have been one (six digits):
    /// what the answer reveals (this was not a code) is paid for whatever
    /// the answer is, a 403 or a 429.
    pub async fn attempt(
        &self,
        store: &dyn Store,
        client: &str,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<PairingOutcome, StoreError> {
        let code = code.trim();
        if is_code_shaped(code) {
            let mac = self.key.mac(code);
            let lookup = store.pairing_lookup(&mac, now).await?;
            if lookup.matches {
                if let Some(token) = redeem(store, &mac, now).await? {
                    self.lockouts.succeed(client);
                    return Ok(PairingOutcome::Paired(token));
                }
            }
            // With no live code there is nothing to charge: this reads only.
            if lookup.live > 0 {
                let retired = store.charge_pairing_guess(now, PAIRING_CODE_BUDGET).await?;
                if retired > 0 {
                    tracing::warn!(
                        retired,
                        budget = PAIRING_CODE_BUDGET,
                        "pairing code retired: it absorbed its budget of wrong codes; `fanin pair` prints a new one"
                    );
                }
            }
        }
        if let Err(left) = self.lockouts.check(client, now) {
            return Ok(PairingOutcome::Refused { locked_out: Some(left) });
        }
        if self.lockouts.fail(client, now).is_some() {
            tracing::warn!(client, "repeated wrong pairing codes: this client's wrong codes now get 429");
        }
        Ok(PairingOutcome::Refused { locked_out: None })
    }
}

/// Failed pairing attempts per client: after [`MAX_PAIRING_FAILURES`], the
/// client's wrong codes are answered 429 for [`LOCKOUT`]. Time is passed in,
/// so the rule is testable without waiting.
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
    use crate::operations::tokens::sha256_hex;
    use chrono::TimeZone;

    #[test]
    fn pairing_codes_are_six_digits() {
        for _ in 0..100 {
            let code = new_pairing_code();
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
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

    fn key() -> PairingKey {
        PairingKey::from_bytes([7; PairingKey::LEN])
    }

    fn store() -> (tempfile::TempDir, crate::store::sqlite::SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("fanin.db")).unwrap();
        (dir, store)
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    /// A six-digit code none of `codes` is.
    fn wrong(codes: &[&str]) -> String {
        (0..).map(|n| format!("{n:06}")).find(|c| !codes.contains(&c.as_str())).unwrap()
    }

    fn refused() -> PairingOutcome {
        PairingOutcome::Refused { locked_out: None }
    }

    #[test]
    fn codes_are_kept_as_a_keyed_mac() {
        let (a, b) = (key(), PairingKey::from_bytes([8; PairingKey::LEN]));
        assert_eq!(a.mac("123456"), a.mac("123456"));
        assert_ne!(a.mac("123456"), b.mac("123456"), "another key, another MAC");
        assert_ne!(a.mac("123456"), sha256_hex("123456"));
        assert_eq!(a.mac("123456").len(), 64);
        assert_eq!(format!("{a:?}"), "PairingKey(..)", "the key never prints");
    }

    #[test]
    fn derived_keys_differ_by_purpose_and_by_key() {
        let (a, b) = (key(), PairingKey::from_bytes([8; PairingKey::LEN]));
        assert_eq!(a.derive("console csrf"), a.derive("console csrf"));
        assert_ne!(a.derive("console csrf"), a.derive("console session"));
        assert_ne!(a.derive("console csrf"), b.derive("console csrf"));
        assert_ne!(hex::encode(a.derive("123456")), a.mac("123456"), "never a pairing code's MAC");
    }

    #[test]
    fn the_key_file_is_made_once_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/pairing.key");
        let made = PairingKey::load_or_create(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), PairingKey::LEN);
        let read = PairingKey::load_or_create(&path).unwrap();
        assert_eq!(made.mac("000000"), read.mac("000000"), "the same key on every load");
        std::fs::write(&path, b"short").unwrap();
        let e = PairingKey::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("pairing.key") && e.contains("5 bytes, expected 32"), "{e}");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let e = PairingKey::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("cannot read it"), "{e}");
    }

    #[tokio::test]
    async fn a_live_code_pairs_whatever_the_clients_lockout() {
        let (_dir, store) = store();
        let pairing = Pairing::new(key());
        let code = issue_pairing_code(&store, pairing.key(), at(0)).await.unwrap();
        let bad = wrong(&[&code]);
        for _ in 0..MAX_PAIRING_FAILURES {
            assert_eq!(pairing.attempt(&store, "ip:proxy", &bad, at(1)).await.unwrap(), refused());
        }
        let locked = pairing.attempt(&store, "ip:proxy", &bad, at(2)).await.unwrap();
        assert_eq!(locked, PairingOutcome::Refused { locked_out: Some(LOCKOUT - Duration::from_secs(1)) });
        assert!(matches!(pairing.attempt(&store, "ip:proxy", &code, at(3)).await.unwrap(), PairingOutcome::Paired(_)));
        assert_eq!(pairing.attempt(&store, "ip:proxy", &code, at(4)).await.unwrap(), refused(), "once only");
    }

    #[tokio::test]
    async fn wrong_codes_from_any_clients_retire_a_code_at_its_budget() {
        let (_dir, store) = store();
        let pairing = Pairing::new(key());
        let first = issue_pairing_code(&store, pairing.key(), at(0)).await.unwrap();
        let mut bad = wrong(&[&first]);
        for i in 0..PAIRING_CODE_BUDGET - 1 {
            pairing.attempt(&store, &format!("ip:{i}"), &bad, at(1)).await.unwrap();
        }
        assert!(store.pairing_lookup(&pairing.key().mac(&first), at(1)).await.unwrap().matches, "one guess left");
        // Issued after those guesses: they do not count against it.
        let second = wrong(&[&first, &bad]);
        let ttl = chrono::Duration::from_std(PAIRING_CODE_TTL).unwrap();
        store.add_pairing_code(&pairing.key().mac(&second), at(2), at(2) + ttl).await.unwrap();
        bad = wrong(&[&first, &second]);
        pairing.attempt(&store, "ip:last", &bad, at(3)).await.unwrap();
        assert_eq!(pairing.attempt(&store, "ip:owner", &first, at(4)).await.unwrap(), refused(), "retired");
        let audit = store.audit(&crate::store::AuditQuery::default()).await.unwrap();
        let retired: Vec<_> = audit.iter().filter(|r| r.kind == crate::store::AuditKind::PairingCodeRetired).collect();
        assert_eq!(retired.len(), 1, "{audit:?}");
        assert_eq!(retired[0].detail["wrong_guesses"], serde_json::json!(PAIRING_CODE_BUDGET));
        assert!(matches!(
            pairing.attempt(&store, "ip:owner", &second, at(5)).await.unwrap(),
            PairingOutcome::Paired(_)
        ));
    }

    #[tokio::test]
    async fn what_cannot_be_a_code_is_not_charged() {
        let (_dir, store) = store();
        let pairing = Pairing::new(key());
        let code = issue_pairing_code(&store, pairing.key(), at(0)).await.unwrap();
        for (i, junk) in ["", "12345", "1234567", "abcdef", " 12a45 "]
            .iter()
            .cycle()
            .take(2 * PAIRING_CODE_BUDGET as usize)
            .enumerate()
        {
            assert_eq!(pairing.attempt(&store, &format!("ip:{i}"), junk, at(1)).await.unwrap(), refused());
        }
        assert!(matches!(
            pairing.attempt(&store, "ip:x", &format!(" {code} "), at(2)).await.unwrap(),
            PairingOutcome::Paired(_)
        ));
    }

    #[tokio::test]
    async fn an_expired_code_is_refused() {
        let (_dir, store) = store();
        let pairing = Pairing::new(key());
        let code = issue_pairing_code(&store, pairing.key(), at(0)).await.unwrap();
        let ttl = PAIRING_CODE_TTL.as_secs() as i64;
        assert_eq!(pairing.attempt(&store, "ip:a", &code, at(ttl)).await.unwrap(), refused());
    }
}
