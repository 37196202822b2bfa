//! Per-client limits on the gateway: GCRA rate limits (governor), the client
//! key they are counted under, and the shape an idempotency key must have.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A keyed GCRA limiter; `None` inside means unlimited (a rate of 0).
pub struct RateLimit {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl RateLimit {
    pub fn per_minute(rate: u32) -> RateLimit {
        RateLimit { limiter: NonZeroU32::new(rate).map(|n| RateLimiter::keyed(Quota::per_minute(n))) }
    }

    /// `Err(retry_after)` when `key` is over its rate.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        // Keys are owned strings; look them up without allocating when known.
        let result = limiter.check_key(&key.to_string());
        if limiter.len() > 100_000 {
            limiter.retain_recent();
        }
        result.map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// The address a request comes from: the peer, or with
/// `trust_forwarded_headers` the first `X-Forwarded-For` entry.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trust_forwarded: bool) -> IpAddr {
    if trust_forwarded {
        let first = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        if let Some(ip) = first {
            return ip;
        }
    }
    peer.ip()
}

/// Seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

/// An `X-Idempotency-Key` must be 1–255 bytes with no control characters.
pub fn validate_idempotency_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("X-Idempotency-Key is empty");
    }
    if key.len() > 255 {
        return Err("X-Idempotency-Key is longer than 255 bytes");
    }
    if key.chars().any(char::is_control) {
        return Err("X-Idempotency-Key contains a control character");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_per_key_and_says_when_to_retry() {
        let limit = RateLimit::per_minute(2);
        assert!(limit.check("a").is_ok());
        assert!(limit.check("a").is_ok());
        let wait = limit.check("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(30), "{wait:?}");
        assert!(limit.check("b").is_ok(), "another client has its own budget");
    }

    #[test]
    fn zero_means_unlimited() {
        let limit = RateLimit::per_minute(0);
        for _ in 0..1000 {
            assert!(limit.check("a").is_ok());
        }
    }

    #[test]
    fn forwarded_for_only_when_trusted() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7, 10.0.0.1".parse().unwrap());
        assert_eq!(client_ip(peer, &h, false), peer.ip());
        assert_eq!(client_ip(peer, &h, true), "203.0.113.7".parse::<IpAddr>().unwrap());
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_ip(peer, &h, true), peer.ip());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn idempotency_key_shape() {
        assert!(validate_idempotency_key("abc-123").is_ok());
        assert!(validate_idempotency_key(&"k".repeat(255)).is_ok());
        assert!(validate_idempotency_key(&"k".repeat(256)).is_err());
        assert!(validate_idempotency_key("a\tb").is_err());
        assert!(validate_idempotency_key("").is_err());
    }
}
