//! Network names as config files write them: a trusted proxy entry (a CIDR
//! or one address). Config validation and the gateway's client rule read
//! them through the one parser here, so what loads is what is enforced.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// A `trusted_proxies` entry: a CIDR (`10.0.0.0/8`, `fd00::/8`) or one
/// address. Host bits are dropped (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_proxy_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(match net {
            // `::ffff:a.b.c.d/n` names IPv4 peers, which are compared in
            // their IPv4 form.
            IpNet::V6(v6) if v6.prefix_len() >= 96 && v6.addr().to_ipv4_mapped().is_some() => IpNet::V4(
                Ipv4Net::new(v6.addr().to_ipv4_mapped().expect("mapped"), v6.prefix_len() - 96).expect("prefix fits"),
            ),
            other => other,
        }
        .trunc());
    }
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip.to_canonical())),
        Err(_) => Err(format!("{text:?} is not a CIDR (e.g. \"10.0.0.0/8\", \"fd00::/8\") or an IP address")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_entries_parse_as_networks_or_addresses() {
        let net = |t: &str| parse_proxy_net(t).unwrap().to_string();
        assert_eq!(net("10.0.0.0/8"), "10.0.0.0/8");
        assert_eq!(net("10.1.2.3/8"), "10.0.0.0/8");
        assert_eq!(net("192.0.2.1"), "192.0.2.1/32");
        assert_eq!(net("fd00::/8"), "fd00::/8");
        assert_eq!(net("::1"), "::1/128");
        assert_eq!(net("::ffff:10.0.0.0/104"), "10.0.0.0/8");
        assert_eq!(net("::ffff:192.0.2.1"), "192.0.2.1/32");
        for bad in ["", "10.0.0.0/33", "localhost", "10.0.0/8", "fd00::/129", "10.0.0.1-10.0.0.9"] {
            let reason = parse_proxy_net(bad).unwrap_err();
            assert!(reason.contains("not a CIDR"), "{bad}: {reason}");
        }
    }
}
