//! What a request presents to prove who it is: a bearer token
//! (`Authorization: Bearer …`, checked against the store) and the shared
//! webhook secret. Secrets are compared in constant time.
//!
//! A token is `fanin_<64 hex>`; the store keeps its SHA-256, looked up by
//! its prefix and compared in constant time. Issuing, listing and revoking
//! tokens, and pairing codes, are operations (`crate::operations`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::limits::{client_ip, retry_after_secs, Forwarding, RateLimit};
use super::ApiError;
use crate::config::GatewayConfig;
use crate::store::{Store, StoreError, TokenRecord};

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "fanin_";

/// The digest a token is stored and compared as.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The live token `token` is, if any: well-formed, stored, not revoked.
pub async fn verify_token(store: &dyn Store, token: &str) -> Result<Option<TokenRecord>, StoreError> {
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
        Some(token) => verify_token(store, token).await,
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

/// Who is calling an authenticated route, and whether they may: the rate
/// limit per caller, then bearer and secret, as every authenticated ingest
/// route and the agent loop check them.
pub struct Callers {
    store: Arc<dyn Store>,
    limit: RateLimit,
    forwarding: Forwarding,
    require_pairing: bool,
    webhook_secret: String,
}

impl Callers {
    pub fn new(config: &GatewayConfig, store: Arc<dyn Store>) -> Callers {
        Callers {
            store,
            limit: RateLimit::per_minute(config.webhook_rate_limit_per_minute),
            forwarding: Forwarding::new(config.trust_forwarded_headers, &config.trusted_proxies),
            require_pairing: config.require_pairing,
            webhook_secret: config.webhook_secret.clone(),
        }
    }

    /// Whose `X-Forwarded-For` is believed (see [`client_ip`]).
    pub fn forwarding(&self) -> &Forwarding {
        &self.forwarding
    }

    /// Whether `/sop/*` and SOP-matching `/webhook` requests can be
    /// authenticated at all; without either layer they are refused.
    pub fn auth_configured(&self) -> bool {
        self.require_pairing || !self.webhook_secret.is_empty()
    }

    /// Rate limit, then bearer and secret. Returns the caller's key:
    /// `token:<prefix>` for a valid bearer, else `ip:<address>`; rate
    /// limits count per key.
    pub async fn admit(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<String, ApiError> {
        let token = match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            Some(value) => {
                verify_bearer(self.store.as_ref(), value).await.map_err(|_| ApiError::store_unavailable())?
            }
            None => None,
        };
        let authenticated = token.is_some();
        let key = match token {
            Some(t) => t.subject,
            None => format!("ip:{}", client_ip(peer, headers, &self.forwarding)),
        };
        self.limit.check(&key).map_err(|wait| ApiError::rate_limited(retry_after_secs(wait)))?;
        if self.require_pairing && !authenticated {
            return Err(ApiError::unauthorized());
        }
        if !self.webhook_secret.is_empty() {
            let presented = headers.get("x-webhook-secret").and_then(|v| v.to_str().ok()).unwrap_or("");
            if !secret_matches(presented, &self.webhook_secret) {
                return Err(ApiError::unauthorized());
            }
        }
        Ok(key)
    }
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
