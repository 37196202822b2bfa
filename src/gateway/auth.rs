//! What a request presents to prove who it is: a bearer token
//! (`Authorization: Bearer …`, checked against the store) and the shared
//! webhook secret. Secrets are compared in constant time.
//!
//! Tokens themselves and pairing codes are operations
//! ([`crate::operations::tokens`], [`crate::operations::pairing`]), shared
//! with the CLI; the pairing items are named here too for the daemon, which
//! makes the key and prints the start-up code.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::operations::pairing::{issue_pairing_code, Pairing, PairingKey, PairingOutcome};
use crate::operations::tokens;
use crate::store::{Store, StoreError, TokenRecord};

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
    match bearer_credentials(header) {
        Some(token) => tokens::verify(store, token).await,
        None => Ok(None),
    }
}

/// Constant-time comparison of a presented secret with the configured one.
pub fn secret_matches(presented: &str, configured: &str) -> bool {
    // Hash both so the comparison does not reveal the configured length.
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(configured.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
