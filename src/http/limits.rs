//! Per-client limits on the gateway: GCRA rate limits (governor), the client
//! they are counted under (the one rule for who is calling, also used by the
//! pairing lockout and the `/admin` loopback check), and the shape an
//! idempotency key must have.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::HeaderMap;
use fanin_core::net::parse_proxy_net;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::{IpNet, Ipv4Net};

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

/// Which `X-Forwarded-For` entries are believed: only when
/// `trust_forwarded_headers` is on, and only those added by a trusted proxy.
/// With no proxies listed, a proxy on loopback is the trusted one (a local
/// reverse proxy, the usual reason to turn the header on).
#[derive(Clone, Debug, Default)]
pub struct Forwarding {
    /// `None`: the header is ignored and every client is its TCP peer.
    trusted: Option<Vec<IpNet>>,
}

impl Forwarding {
    /// From `trust_forwarded_headers` and `trusted_proxies` (already
    /// validated; an entry that does not parse is left out).
    pub fn new(trust_forwarded_headers: bool, trusted_proxies: &[String]) -> Forwarding {
        if !trust_forwarded_headers {
            return Forwarding { trusted: None };
        }
        let nets = if trusted_proxies.is_empty() {
            vec![
                IpNet::V4(Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).expect("/8 fits")),
                IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ]
        } else {
            trusted_proxies.iter().filter_map(|p| parse_proxy_net(p).ok()).collect()
        };
        Forwarding { trusted: Some(nets) }
    }

    fn trusts(nets: &[IpNet], ip: IpAddr) -> bool {
        nets.iter().any(|net| net.contains(&ip))
    }
}

/// Who a request comes from, as limits and the admin rule see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAddr {
    Ip(IpAddr),
    /// A trusted proxy forwarded an entry that is not an address: the
    /// client cannot be named. It is never loopback, and all such requests
    /// share one key.
    Unknown,
}

impl ClientAddr {
    pub fn is_loopback(&self) -> bool {
        matches!(self, ClientAddr::Ip(ip) if ip.is_loopback())
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAddr::Ip(ip) => ip.fmt(f),
            ClientAddr::Unknown => f.write_str("unknown"),
        }
    }
}

/// The client of a request from `peer` (already in canonical form): the
/// peer itself unless it is a trusted proxy; then the rightmost
/// `X-Forwarded-For` address that is not a trusted proxy (every header line,
/// in order, each a comma list). Entries to the left of that one are
/// whatever the client wrote and are never looked at. When every entry is
/// a trusted proxy, the leftmost one; with no entry at all, the peer.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, forwarding: &Forwarding) -> ClientAddr {
    let Some(nets) = &forwarding.trusted else { return ClientAddr::Ip(peer.ip()) };
    if !Forwarding::trusts(nets, peer.ip()) {
        return ClientAddr::Ip(peer.ip());
    }
    let lines = headers.get_all("x-forwarded-for").iter().rev();
    let mut leftmost_trusted = None;
    for line in lines {
        // A header value that is not text cannot be read: the chain ends there.
        let Ok(line) = line.to_str() else { return ClientAddr::Unknown };
        for entry in line.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some(ip) = parse_forwarded_entry(entry) else { return ClientAddr::Unknown };
            if !Forwarding::trusts(nets, ip) {
                return ClientAddr::Ip(ip);
            }
            leftmost_trusted = Some(ip);
        }
    }
    ClientAddr::Ip(leftmost_trusted.unwrap_or(peer.ip()))
}

/// Whether a request from `peer` reached the proxy in front of fanin over
/// TLS: the peer is a trusted proxy (as for [`client_ip`]) and the
/// `X-Forwarded-Proto` it wrote (the rightmost entry) is `https`. fanin
/// itself serves plain HTTP, so this is the only way it can know; what a
/// client wrote there itself is never believed.
pub fn forwarded_https(peer: SocketAddr, headers: &HeaderMap, forwarding: &Forwarding) -> bool {
    let Some(nets) = &forwarding.trusted else { return false };
    if !Forwarding::trusts(nets, peer.ip()) {
        return false;
    }
    let nearest = headers.get_all("x-forwarded-proto").iter().next_back().and_then(|v| v.to_str().ok());
    nearest.and_then(|line| line.rsplit(',').next()).is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`203.0.113.9:4711`, `[2001:db8::1]:443`, `[2001:db8::1]`), canonical.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let ip = match entry.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match entry.parse::<SocketAddr>() {
            Ok(addr) => addr.ip(),
            Err(_) => entry.strip_prefix('[')?.strip_suffix(']')?.parse::<Ipv6Addr>().ok()?.into(),
        },
    };
    Some(ip.to_canonical())
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

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append("x-forwarded-for", line.parse().unwrap());
        }
        h
    }

    fn ip(text: &str) -> ClientAddr {
        ClientAddr::Ip(text.parse().unwrap())
    }

    #[test]
    fn the_client_is_the_rightmost_address_no_trusted_proxy_wrote() {
        let loopback_proxy = Forwarding::new(true, &[]);
        let listed = Forwarding::new(true, &["10.0.0.0/8".into(), "192.0.2.1".into(), "fd00::/8".into()]);
        let off = Forwarding::new(false, &["10.0.0.0/8".into()]);
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let proxy: SocketAddr = "10.0.0.5:5000".parse().unwrap();
        let outsider: SocketAddr = "198.51.100.20:5000".parse().unwrap();
        #[rustfmt::skip]
        let rows: &[(&Forwarding, SocketAddr, &[&str], ClientAddr)] = &[
            // The header is ignored when forwarding is off, or the peer is no proxy.
            (&off, proxy, &["203.0.113.9"], ip("10.0.0.5")),
            (&listed, outsider, &["127.0.0.1"], ip("198.51.100.20")),
            (&listed, local, &["203.0.113.9"], ip("127.0.0.1")),
            // The entry the proxy added decides; what the client wrote to its left does not.
            (&loopback_proxy, local, &["127.0.0.1, 203.0.113.9"], ip("203.0.113.9")),
            (&loopback_proxy, local, &["203.0.113.7, 10.9.9.9"], ip("10.9.9.9")),
            (&loopback_proxy, local, &["203.0.113.7, 127.8.8.8, ::1"], ip("203.0.113.7")),
            (&listed, proxy, &["127.0.0.1, 203.0.113.9, 10.1.1.1, 192.0.2.1"], ip("203.0.113.9")),
            // Every header line counts, the last one rightmost.
            (&listed, proxy, &["203.0.113.1", "198.51.100.7, 10.0.0.9"], ip("198.51.100.7")),
            (&listed, proxy, &["203.0.113.1", "10.0.0.9"], ip("203.0.113.1")),
            // All trusted: the leftmost; nothing forwarded: the peer.
            (&listed, proxy, &["10.0.0.8, 10.0.0.9"], ip("10.0.0.8")),
            (&listed, proxy, &[], ip("10.0.0.5")),
            (&listed, proxy, &[" , "], ip("10.0.0.5")),
            // Ports, brackets and IPv4-mapped forms are read as addresses.
            (&listed, proxy, &["[2001:db8::1]:443, 10.0.0.9:8080"], ip("2001:db8::1")),
            (&listed, proxy, &["203.0.113.9:4711"], ip("203.0.113.9")),
            (&listed, proxy, &["[2001:db8::2]"], ip("2001:db8::2")),
            (&listed, proxy, &["203.0.113.5, ::ffff:10.0.0.9"], ip("203.0.113.5")),
            (&loopback_proxy, local, &["::ffff:127.0.0.1"], ip("127.0.0.1")),
            (&listed, proxy, &["fd00::1, 2001:db8::9, fd12::3"], ip("2001:db8::9")),
            // Garbage where the chain is being followed: nobody can be named.
            (&listed, proxy, &["203.0.113.9, unknown"], ClientAddr::Unknown),
            (&listed, proxy, &["203.0.113.9, 10.0.0.1, 999.1.1.1"], ClientAddr::Unknown),
            // Garbage to the left of the client is never looked at.
            (&listed, proxy, &["garbage, 203.0.113.9, 10.0.0.1"], ip("203.0.113.9")),
        ];
        for (forwarding, peer, lines, want) in rows {
            assert_eq!(client_ip(*peer, &forwarded(lines), forwarding), *want, "{peer} {lines:?}");
        }
    }

    #[test]
    fn only_a_trusted_proxy_says_the_client_came_over_tls() {
        let trusting = Forwarding::new(true, &["10.0.0.0/8".into()]);
        let off = Forwarding::new(false, &[]);
        let proxy: SocketAddr = "10.0.0.5:5000".parse().unwrap();
        let outsider: SocketAddr = "198.51.100.20:5000".parse().unwrap();
        let proto = |lines: &[&str]| {
            let mut h = HeaderMap::new();
            for line in lines {
                h.append("x-forwarded-proto", line.parse().unwrap());
            }
            h
        };
        assert!(forwarded_https(proxy, &proto(&["https"]), &trusting));
        assert!(forwarded_https(proxy, &proto(&["HTTPS"]), &trusting));
        assert!(forwarded_https(proxy, &proto(&["http, https"]), &trusting), "the nearest proxy's entry");
        assert!(!forwarded_https(proxy, &proto(&["https, http"]), &trusting));
        assert!(!forwarded_https(proxy, &proto(&["https", "http"]), &trusting), "the last line is the nearest");
        assert!(!forwarded_https(proxy, &proto(&[]), &trusting));
        assert!(!forwarded_https(outsider, &proto(&["https"]), &trusting), "a client's own claim");
        assert!(!forwarded_https(proxy, &proto(&["https"]), &off));
    }

    #[test]
    fn unknown_clients_are_never_loopback() {
        assert!(!ClientAddr::Unknown.is_loopback());
        assert_eq!(ClientAddr::Unknown.to_string(), "unknown");
        assert!(ip("127.0.0.1").is_loopback() && ip("::1").is_loopback());
        assert!(!ip("203.0.113.9").is_loopback());
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
