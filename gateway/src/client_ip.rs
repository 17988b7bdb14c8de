//! The client's address: the peer's, or — when the peer is a trusted proxy — the right-most
//! `X-Forwarded-For` entry that is not itself a trusted proxy; and the key a client is counted
//! under (connections per client, rate limits by IP). Pure.

use std::net::{IpAddr, Ipv6Addr};

/// A network in CIDR form (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) if self.addr.is_ipv4() => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The client address of a request from `peer` with these `X-Forwarded-For` values.
pub fn client_ip<'a>(peer: IpAddr, forwarded_for: impl Iterator<Item = &'a [u8]>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return peer;
    }
    let entries: Vec<&[u8]> = forwarded_for.flat_map(|v| v.split(|b| *b == b',')).collect();
    let mut client = peer;
    for e in entries.iter().rev() {
        let Some(ip) = std::str::from_utf8(e).ok().and_then(|s| s.trim().parse::<IpAddr>().ok()) else {
            return client; // garbage: trust nothing further left
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// The address a client is counted under: an IPv6 client per /64 (one host commonly holds a
/// whole /64, so counting each address would give it a fresh count per address), an IPv4-mapped
/// IPv6 address as the IPv4 address it carries.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_clients() {
        let trusted = [Cidr::parse("127.0.0.1").unwrap(), Cidr::parse("10.0.0.0/8").unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases: &[(&str, &[&str], &str)] = &[
            ("203.0.113.9", &["1.2.3.4"], "203.0.113.9"), // untrusted peer: XFF ignored
            ("127.0.0.1", &[], "127.0.0.1"),
            ("127.0.0.1", &["1.2.3.4"], "1.2.3.4"),
            ("127.0.0.1", &["6.6.6.6, 1.2.3.4, 10.1.1.1"], "1.2.3.4"), // a client cannot skip the proxies
            ("127.0.0.1", &["6.6.6.6", "10.2.2.2"], "6.6.6.6"),
            ("127.0.0.1", &["10.2.2.2"], "10.2.2.2"),
            ("127.0.0.1", &["bogus, 10.2.2.2"], "10.2.2.2"),
        ];
        for (peer, xff, want) in cases {
            let got = client_ip(ip(peer), xff.iter().map(|s| s.as_bytes()), &trusted);
            assert_eq!(got, ip(want), "{peer} {xff:?}");
        }
        assert!(Cidr::parse("::1/129").is_none());
        assert!(Cidr::parse("::ffff:0:0/96").unwrap().contains(ip("::ffff:1.2.3.4")));
        assert!(Cidr::parse("10.0.0.0/8").unwrap().contains(ip("::ffff:10.9.9.9")));
    }
}
