//! The `[upstreams.NAME]` and `[defaults]` sections: endpoints (IP literals, or host names
//! resolved now and kept from the serving table when DNS fails), balancing, timeouts, active
//! health checks and passive ejection.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::diagnostics::Issues;
use super::raw::{RawDefaults, RawUpstream};
use super::values::{dur, parse_endpoint, EndpointSpec, Resolve};
use crate::table::{Balance, EjectPolicy, Endpoint, HealthCheck, RouteTable, Upstream};

/// The compiled upstreams and their index by name.
pub(super) struct Upstreams {
    pub list: Vec<Arc<Upstream>>,
    pub index: HashMap<String, usize>,
}

impl Upstreams {
    /// Index of upstream `name`; an unknown name is reported at `at` with the known ones.
    pub fn lookup(&self, issues: &mut Issues<'_>, at: &Spanned<String>) -> Option<usize> {
        let name = at.get_ref();
        if let Some(i) = self.index.get(name) {
            return Some(*i);
        }
        let mut known: Vec<&str> = self.index.keys().map(String::as_str).collect();
        known.sort();
        issues.at(
            at,
            format!("unknown upstream {name:?}"),
            Some(format!("declare [upstreams.{name}] or use one of: {}", known.join(", "))),
        );
        None
    }
}

/// Compiles every `[upstreams.NAME]`. Endpoint state (health, ejection, in-flight counts) is
/// carried over from `previous` for the same upstream name and address.
pub(super) fn compile_upstreams(
    issues: &mut Issues<'_>,
    raw: &BTreeMap<String, Spanned<RawUpstream>>,
    previous: Option<&RouteTable>,
    resolve: Resolve<'_>,
) -> Upstreams {
    let prev_endpoints: HashMap<(String, SocketAddr), Arc<Endpoint>> = previous
        .map(|p| {
            p.upstreams.iter().flat_map(|u| u.endpoints.iter().map(|e| ((u.name.clone(), e.addr), e.clone()))).collect()
        })
        .unwrap_or_default();
    let mut out = Upstreams { list: Vec::new(), index: HashMap::new() };
    for (name, u) in raw {
        let uv = u.get_ref();
        if uv.endpoints.is_empty() {
            issues.at(
                u,
                format!("upstream {name:?} has no endpoints"),
                Some("add endpoints = [\"127.0.0.1:8081\"]".into()),
            );
        }
        let endpoints = endpoints(issues, name, uv, previous, &prev_endpoints, resolve);
        let upstream = Upstream {
            name: name.clone(),
            endpoints,
            balance: balance(issues, uv),
            connect_timeout: dur(issues, &uv.connect_timeout, Duration::from_secs(1)),
            read_timeout: dur(issues, &uv.read_timeout, Duration::from_secs(30)),
            idle_timeout: dur(issues, &uv.idle_timeout, Duration::from_secs(60)),
            health: health_check(issues, uv),
            eject: eject(issues, uv),
            next: Default::default(),
        };
        out.index.insert(name.clone(), out.list.len());
        out.list.push(Arc::new(upstream));
    }
    out
}

/// `[defaults] upstream`: the legacy side (index 0 when unknown, after reporting it).
pub(super) fn default_upstream(issues: &mut Issues<'_>, d: &RawDefaults, upstreams: &Upstreams) -> usize {
    upstreams.lookup(issues, &d.upstream).unwrap_or(0)
}

fn endpoints(
    issues: &mut Issues<'_>,
    name: &str,
    uv: &RawUpstream,
    previous: Option<&RouteTable>,
    prev_endpoints: &HashMap<(String, SocketAddr), Arc<Endpoint>>,
    resolve: Resolve<'_>,
) -> Vec<Arc<Endpoint>> {
    let mut endpoints: Vec<Arc<Endpoint>> = Vec::new();
    for e in &uv.endpoints {
        let (addrs, host) = match parse_endpoint(e.get_ref()) {
            Err(msg) => {
                issues.at(e, msg, Some("use \"ip:port\" or \"host:port\", e.g. \"legacy-monolith:8081\"".into()));
                continue;
            }
            Ok(EndpointSpec::Addr(a)) => (vec![a], None),
            Ok(EndpointSpec::Host(host, port)) => {
                let spec = e.get_ref().as_str();
                match resolve(&host, port) {
                    Ok(mut addrs) if !addrs.is_empty() => {
                        addrs.sort();
                        addrs.dedup();
                        (addrs, Some(spec))
                    }
                    res => {
                        let why = match res {
                            Err(err) => err.to_string(),
                            Ok(_) => "no addresses".to_string(),
                        };
                        let kept: Vec<SocketAddr> = previous
                            .and_then(|p| p.upstreams.iter().find(|u| u.name == name))
                            .map(|u| {
                                u.endpoints.iter().filter(|x| x.host.as_deref() == Some(spec)).map(|x| x.addr).collect()
                            })
                            .unwrap_or_default();
                        if kept.is_empty() {
                            issues.at(
                                e,
                                format!("endpoint {spec:?} does not resolve: {why}"),
                                Some("check the host name (and the resolver), or use an ip:port address".into()),
                            );
                            continue;
                        }
                        tracing::warn!(upstream = %name, endpoint = spec, "cannot resolve ({why}); keeping the last addresses");
                        (kept, Some(spec))
                    }
                }
            }
        };
        for a in addrs {
            if endpoints.iter().any(|x| x.addr == a) {
                if host.is_none() {
                    issues.at(e, format!("duplicate endpoint {a} in upstream {name:?}"), None);
                }
                continue;
            }
            let ep = prev_endpoints
                .get(&(name.to_string(), a))
                .filter(|p| p.host.as_deref() == host)
                .cloned()
                .unwrap_or_else(|| Arc::new(Endpoint::with_host(a, host.map(str::to_string))));
            endpoints.push(ep);
        }
    }
    endpoints
}

fn balance(issues: &mut Issues<'_>, uv: &RawUpstream) -> Balance {
    match uv.balance.as_ref() {
        None => Balance::RoundRobin,
        Some(b) => match b.get_ref().as_str() {
            "round_robin" => Balance::RoundRobin,
            "least_conn" => Balance::LeastConn,
            other => {
                issues.at(
                    b,
                    format!("unknown balance policy {other:?}"),
                    Some("use \"round_robin\" or \"least_conn\"".into()),
                );
                Balance::RoundRobin
            }
        },
    }
}

fn health_check(issues: &mut Issues<'_>, uv: &RawUpstream) -> Option<HealthCheck> {
    let h = uv.health_check.as_ref()?;
    if !h.path.get_ref().starts_with('/') {
        issues.at(&h.path, "health check path must start with '/'", None);
    }
    Some(HealthCheck {
        path: h.path.get_ref().clone(),
        interval: dur(issues, &h.interval, Duration::from_secs(5)),
        timeout: dur(issues, &h.timeout, Duration::from_secs(1)),
    })
}

fn eject(issues: &mut Issues<'_>, uv: &RawUpstream) -> EjectPolicy {
    match &uv.eject {
        Some(e) => EjectPolicy {
            consecutive_failures: e.consecutive_failures.unwrap_or(5).max(1),
            duration: dur(issues, &e.duration, Duration::from_secs(10)),
        },
        None => EjectPolicy::default(),
    }
}
