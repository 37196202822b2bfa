//! Bearer tokens: their format, checking one a request presents, listing
//! and revoking them (`fanin tokens list|revoke`).
//!
//! Tokens are `fanin_<64 hex>` from 32 random bytes and exist in clear only
//! in the `/pair` reply; the store keeps their SHA-256 (a 256-bit random
//! secret needs no key to be safe in a digest) and compares it in constant
//! time. Operators name a token by its prefix, the first 8 hex digits.

use chrono::{DateTime, Utc};
use rand::Rng;

use super::{OpError, Thing};
use crate::http::auth::TOKEN_PREFIX;
pub use crate::http::auth::{sha256_hex, verify_token as verify};
use crate::store::{Store, TokenRecord};

/// The shortest prefix `revoke` takes, so one typo cannot revoke every
/// token.
pub const MIN_REVOKE_PREFIX: usize = 4;

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

/// Every token, revoked ones too.
pub async fn list(store: &dyn Store) -> Result<Vec<TokenRecord>, OpError> {
    store.list_tokens().await.map_err(OpError::store)
}

/// Revokes every live token whose prefix starts with `prefix`, at `now`;
/// returns how many. A prefix shorter than [`MIN_REVOKE_PREFIX`] is
/// refused, and so is one that matches no live token.
pub async fn revoke(store: &dyn Store, prefix: &str, now: DateTime<Utc>) -> Result<usize, OpError> {
    if prefix.len() < MIN_REVOKE_PREFIX {
        return Err(OpError::Invalid {
            field: "prefix",
            reason: format!(
                "a prefix needs at least {MIN_REVOKE_PREFIX} characters, so one typo cannot revoke every token"
            ),
        });
    }
    match store.revoke_tokens(prefix, now).await.map_err(OpError::store)? {
        0 => Err(OpError::not_found(Thing::Token, prefix)),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn only_a_live_well_formed_token_verifies_and_revoking_needs_a_real_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("fanin.db")).unwrap();
        let now = Utc::now();
        let (token, record) = new_token(now);
        store.add_pairing_code("mac", now, now + chrono::Duration::hours(1)).await.unwrap();
        assert!(store.redeem_pairing_code("mac", now, &record).await.unwrap());
        assert_eq!(verify(&store, &token).await.unwrap().map(|r| r.prefix), Some(record.prefix.clone()));
        for bad in ["", "fanin_", &token[..token.len() - 1], &token.replace("fanin_", "fanon_")] {
            assert_eq!(verify(&store, bad).await.unwrap(), None, "{bad:?}");
        }
        let short = revoke(&store, &record.prefix[..3], now).await.unwrap_err();
        assert!(matches!(short, OpError::Invalid { field: "prefix", .. }), "{short:?}");
        assert_eq!(revoke(&store, &record.prefix, now).await, Ok(1));
        assert_eq!(verify(&store, &token).await.unwrap(), None, "revoked");
        assert_eq!(revoke(&store, &record.prefix, now).await, Err(OpError::not_found(Thing::Token, &record.prefix)));
        assert_eq!(list(&store).await.unwrap().len(), 1);
    }
}
