//! Value syntax shared by every section: durations, addresses, endpoints, bounded integers, and
//! the resolver endpoint host names go through. Each helper reports a bad value at its place and
//! returns the default, so validation keeps going.

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::diagnostics::Issues;

/// Methods a route may name.
pub const KNOWN_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Whether compiling reads the secrets and key files the file names (offline checks do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Secrets {
    Read,
    Skip,
}

/// Resolves `host` (a name, not an IP literal) and `port` into addresses.
pub type Resolve<'a> = &'a dyn Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>>;

/// The system resolver (getaddrinfo), blocking: call it off the request path.
pub fn system_resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    Ok((host, port).to_socket_addrs()?.collect())
}

/// A resolver that resolves nothing: every name becomes `0.0.0.0:PORT` (offline checks).
pub fn unresolved(_: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok(vec![SocketAddr::from(([0, 0, 0, 0], port))])
}

/// Parses a duration such as "250ms", "2s", "1m 30s". Bare numbers are rejected (unit required).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("duration {t:?} has no unit"));
    }
    let d = humantime::parse_duration(t).map_err(|e| format!("bad duration {t:?}: {e}"))?;
    // far beyond any timeout or step; and `Instant + d` would overflow (a panic per request)
    if d > MAX_DURATION {
        return Err(format!("duration {t:?} is longer than 365 days"));
    }
    Ok(d)
}

/// The longest duration the file may give (365 days).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

pub(super) const DURATION_HINT: &str = "write a number with a unit, e.g. \"250ms\", \"2s\", \"1m\"";

/// An endpoint as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSpec {
    /// An IP literal and port.
    Addr(SocketAddr),
    /// A host name and port, resolved at load and periodically after.
    Host(String, u16),
}

/// Parses "ip:port", "[v6]:port" or "host:port" (host: letters, digits, '-', '_', '.').
pub fn parse_endpoint(s: &str) -> Result<EndpointSpec, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(EndpointSpec::Addr(a));
    }
    let bad = || format!("endpoint {s:?} is not an ip:port or host:port address");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    if port == 0
        || name.is_empty()
        || name.len() > 253
        || !name.split('.').all(label_ok)
        || name.parse::<std::net::IpAddr>().is_ok()
    {
        return Err(bad());
    }
    // an all-numeric dotted name is a malformed IPv4 literal, not a host
    if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    Ok(EndpointSpec::Host(host.to_string(), port))
}

pub(super) fn dur(issues: &mut Issues<'_>, v: &Option<Spanned<String>>, default: Duration) -> Duration {
    match v {
        None => default,
        Some(s) => match parse_duration(s.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                issues.at(s, e, Some(DURATION_HINT.to_string()));
                default
            }
        },
    }
}

pub(super) fn addr(issues: &mut Issues<'_>, v: &Option<Spanned<String>>, default: &str) -> SocketAddr {
    match v {
        None => default.parse().expect("default address parses"),
        Some(s) => match s.get_ref().parse() {
            Ok(a) => a,
            Err(_) => {
                issues.at(
                    s,
                    format!("{:?} is not an ip:port address", s.get_ref()),
                    Some("e.g. \"127.0.0.1:8080\"".to_string()),
                );
                default.parse().expect("default address parses")
            }
        },
    }
}

/// An integer setting that must lie in `range`.
pub(super) fn int_in(
    issues: &mut Issues<'_>,
    v: &Option<Spanned<i64>>,
    what: &str,
    range: std::ops::RangeInclusive<i64>,
    default: i64,
) -> i64 {
    match v {
        None => default,
        Some(s) if range.contains(s.get_ref()) => *s.get_ref(),
        Some(s) => {
            issues.at(s, format!("{what} {} is outside {}–{}", s.get_ref(), range.start(), range.end()), None);
            default
        }
    }
}
