//! Admission: what a route asks of a request before it may go upstream — its credentials
//! (`auth`), then its rate limits. Routes that ask nothing cost one `Option` check each. A
//! refusal is a [`Reply`] the proxy writes without contacting an upstream.

use std::net::IpAddr;
use std::sync::Arc;

use http::{header, HeaderName, HeaderValue};
use pingora::http::RequestHeader;

use crate::auth::{self, Denial};
use crate::client_ip::client_ip;
use crate::limits::{LimitService, Limited};
use crate::metrics::metrics;
use crate::respond::Reply;
use crate::table::RouteTable;

/// What admission learnt about a request it let in.
#[derive(Debug, Clone, Copy, Default)]
pub struct Admitted {
    /// The consumer it authenticated as (index into the table's consumers).
    pub consumer: Option<usize>,
}

/// Runs the checks of route `index` on `req` from `peer`; on success the request carries the
/// caller's identity (gateway-owned headers, the credential removed unless forwarded).
pub async fn admit(
    table: &Arc<RouteTable>,
    index: usize,
    req: &mut RequestHeader,
    peer: Option<IpAddr>,
    limits: &LimitService,
) -> Result<Admitted, Reply> {
    let route = &table.routes[index];
    let mut admitted = Admitted::default();
    if let Some(rule) = &route.auth {
        match auth::authenticate(&table.auth, rule, &req.headers) {
            Ok(id) => {
                auth::apply(&table.auth, rule, &id, req);
                admitted.consumer = id.consumer;
            }
            Err(denial) => {
                metrics().auth_denied.with_label_values(&[route.name.as_str(), denial.reason()]).inc();
                // a refused attempt still counts against the route's limits that do not need a
                // consumer (by ip, the route's own): guessing keys or tokens is throttled too
                if route.limits.is_some() {
                    charge(table, index, req, peer, limits, None).await?;
                }
                return Err(refusal(table, rule.methods, &denial));
            }
        }
    }
    if route.limits.is_some() {
        let consumer = admitted.consumer.and_then(|c| table.auth.consumers.get(c)).map(|c| c.name.as_str());
        charge(table, index, req, peer, limits, consumer).await?;
    }
    Ok(admitted)
}

/// Counts the request against route `index`'s limits; 429 when one is exhausted.
async fn charge(
    table: &Arc<RouteTable>,
    index: usize,
    req: &RequestHeader,
    peer: Option<IpAddr>,
    limits: &LimitService,
    consumer: Option<&str>,
) -> Result<(), Reply> {
    let route = &table.routes[index];
    let peer = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let xff = req.headers.get_all("x-forwarded-for").into_iter().map(|v| v.as_bytes());
    let ip = client_ip(peer, xff, &table.settings.trusted_proxies);
    limits.check(table, index, consumer, ip).await.map_err(|limited| {
        metrics().rate_limited.with_label_values(&[route.name.as_str(), consumer.unwrap_or("-")]).inc();
        too_many(&limited)
    })
}

/// 429 with `Retry-After` (whole seconds, at least 1) and the IETF httpapi draft's
/// `RateLimit-Policy` and `RateLimit` fields.
fn too_many(l: &Limited) -> Reply {
    let secs = l.wait.as_secs() + u64::from(l.wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let number = |n: u64| HeaderValue::from(n);
    let state = HeaderValue::from_str(&format!("\"{}\";r=0;t={secs}", l.rule.name)).unwrap_or(number(secs));
    Reply::new(429, "too_many_requests", "rate limit exceeded; retry later")
        .header(header::RETRY_AFTER, number(secs))
        .header(HeaderName::from_static("ratelimit-policy"), l.rule.policy.clone())
        .header(HeaderName::from_static("ratelimit"), state)
}

/// 401 with the challenges of the route's methods, or 403.
fn refusal(table: &RouteTable, methods: auth::Methods, denial: &Denial) -> Reply {
    match denial {
        Denial::Unauthorized { message, .. } => {
            let mut r = Reply::new(401, "unauthorized", message);
            for c in auth::challenges(&table.auth, methods, denial) {
                r = r.header(header::WWW_AUTHENTICATE, c);
            }
            r
        }
        Denial::Forbidden { message, .. } => Reply::new(403, "forbidden", message),
    }
}
