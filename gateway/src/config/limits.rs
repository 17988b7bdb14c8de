//! Rate limits: `[gateway] trusted_proxies`, `[gateway.redis]` and a route's
//! `[[routes.rate_limit]]`.

use std::time::Duration;

use toml::Spanned;

use super::diagnostics::Issues;
use super::raw::{RawAuthMethods, RawGateway, RawRateLimit, RawRoute};
use super::values::dur;
use crate::client_ip::Cidr;
use crate::limits::redis::RedisSettings;
use crate::limits::RateLimit;

/// `[gateway] trusted_proxies`.
pub(super) fn trusted_proxies(issues: &mut Issues<'_>, g: &RawGateway) -> Vec<Cidr> {
    let mut out = Vec::new();
    for s in g.trusted_proxies.iter().flatten() {
        match Cidr::parse(s.get_ref()) {
            Some(c) => out.push(c),
            None => issues.at(
                s,
                format!("{:?} is not an address or CIDR network", s.get_ref()),
                Some("e.g. \"10.0.0.0/8\" or \"127.0.0.1\"".into()),
            ),
        }
    }
    out
}

/// `[gateway.redis]`.
pub(super) fn redis(issues: &mut Issues<'_>, g: &RawGateway) -> Option<RedisSettings> {
    let r = g.redis.as_ref()?.get_ref();
    if redis::Client::open(r.url.get_ref().as_str()).is_err() {
        issues.at(
            &r.url,
            format!("{:?} is not a Redis URL", r.url.get_ref()),
            Some("e.g. \"redis://127.0.0.1:6379\"".into()),
        );
    }
    Some(RedisSettings {
        url: r.url.get_ref().clone(),
        budget: dur(issues, &r.budget, Duration::from_millis(5)).max(Duration::from_micros(100)),
        prefix: r.key_prefix.clone().unwrap_or_else(|| "strangler:rl".into()),
    })
}

/// A route's `[[routes.rate_limit]]` tables; `None` when it has none.
pub(super) fn route_limits(issues: &mut Issues<'_>, r: &RawRoute, has_redis: bool) -> Option<Box<[RateLimit]>> {
    let list = r.rate_limit.as_ref()?;
    let out: Vec<RateLimit> = list.iter().map(|l| limit(issues, r, l, has_redis)).collect();
    (!out.is_empty()).then(|| out.into_boxed_slice())
}

fn limit(issues: &mut Issues<'_>, r: &RawRoute, raw: &Spanned<RawRateLimit>, has_redis: bool) -> RateLimit {
    let l = raw.get_ref();
    let (mut by_consumer, mut by_ip) = (false, false);
    if let Some(by) = &l.by {
        let names: Vec<&str> = match by.get_ref() {
            RawAuthMethods::One(s) => vec![s.as_str()],
            RawAuthMethods::Any(v) => v.iter().map(String::as_str).collect(),
        };
        for n in names {
            match n {
                "route" => {}
                "consumer" => by_consumer = true,
                "ip" => by_ip = true,
                other => issues.at(
                    by,
                    format!("unknown rate limit key {other:?}"),
                    Some("use \"route\", \"consumer\", \"ip\" or a list".into()),
                ),
            }
        }
        if by_consumer && r.auth.is_none() {
            issues.at(
                by,
                "a limit by consumer needs `auth` on the route",
                Some("add auth = \"api-key\" or \"jwt\", or limit by \"ip\"".into()),
            );
        }
    }
    let (rate, window) = match (&l.rps, &l.rpm) {
        (Some(n), None) => (positive(issues, n, "rps"), Duration::from_secs(1)),
        (None, Some(n)) => (positive(issues, n, "rpm"), Duration::from_secs(60)),
        _ => {
            issues.at(
                raw,
                "a rate limit needs exactly one of rps and rpm",
                Some("e.g. { rps = 10, burst = 20 }".into()),
            );
            (1, Duration::from_secs(1))
        }
    };
    let burst = l.burst.as_ref().map_or(rate, |b| positive(issues, b, "burst"));
    let shared = l.shared.as_ref().is_some_and(|s| *s.get_ref());
    if let Some(s) = l.shared.as_ref().filter(|s| *s.get_ref() && !has_redis) {
        issues.at(s, "shared = true needs [gateway.redis]", Some("add [gateway.redis] url = \"redis://...\"".into()));
    }
    RateLimit::new(by_consumer, by_ip, rate, window, burst, shared)
}

fn positive(issues: &mut Issues<'_>, v: &Spanned<i64>, what: &str) -> u32 {
    match u32::try_from(*v.get_ref()) {
        Ok(n) if (1..=1_000_000).contains(&n) => n,
        _ => {
            issues.at(v, format!("{what} {} is outside 1–1000000", v.get_ref()), None);
            1
        }
    }
}
