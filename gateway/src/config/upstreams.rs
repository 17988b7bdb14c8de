//! The `[upstreams.NAME]` and `[defaults]` sections: endpoints (IP literals, or host names
//! resolved now and kept from the serving table when DNS fails), balancing, timeouts, active
//! health checks and passive ejection.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::diagnostics::Issues;
use super::raw::{RawDefaults, RawUpstream, RawUpstreamTls};
use super::values::Secrets;
use super::values::{dur, int_in, parse_endpoint, EndpointSpec, Resolve};
use crate::table::{Balance, EjectPolicy, Endpoint, HealthCheck, RouteTable, Upstream, UpstreamProtocol, UpstreamTls};

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
    secrets: Secrets,
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
            protocol: protocol(issues, uv),
            max_pending: int_in(issues, &uv.max_pending, "max_pending", 1..=1_000_000, 1000) as usize,
            tls: uv.tls.as_ref().and_then(|t| upstream_tls(issues, t, &uv.endpoints, secrets)),
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
        unhealthy_threshold: int_in(issues, &h.unhealthy_threshold, "unhealthy_threshold", 1..=100, 3) as u32,
        healthy_threshold: int_in(issues, &h.healthy_threshold, "healthy_threshold", 1..=100, 2) as u32,
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

/// `protocol = "http1" | "h2" | "auto"`.
fn protocol(issues: &mut Issues<'_>, uv: &RawUpstream) -> UpstreamProtocol {
    let Some(p) = uv.protocol.as_ref() else { return UpstreamProtocol::Http1 };
    match p.get_ref().as_str() {
        "http1" => UpstreamProtocol::Http1,
        "h2" => UpstreamProtocol::H2,
        "auto" if uv.tls.is_some() => UpstreamProtocol::Auto,
        "auto" => {
            issues.at(
                p,
                "protocol \"auto\" needs TLS (ALPN chooses the version)",
                Some("add tls = {} or use \"h2\" (prior knowledge) or \"http1\"".into()),
            );
            UpstreamProtocol::Http1
        }
        other => {
            issues.at(p, format!("unknown protocol {other:?}"), Some("use \"http1\", \"h2\" or \"auto\"".into()));
            UpstreamProtocol::Http1
        }
    }
}

/// `tls = { sni, ca_file, client_cert, client_key, verify }`: the files are read and checked now.
fn upstream_tls(
    issues: &mut Issues<'_>,
    t: &Spanned<RawUpstreamTls>,
    endpoints: &[Spanned<String>],
    secrets: Secrets,
) -> Option<UpstreamTls> {
    use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let raw = t.get_ref();
    let verify = raw.verify.unwrap_or(true);
    let sni = raw.sni.as_ref().map(|s| s.get_ref().clone());
    let ip_endpoint = endpoints.iter().any(|e| matches!(parse_endpoint(e.get_ref()), Ok(EndpointSpec::Addr(_))));
    if verify && sni.is_none() && ip_endpoint {
        issues.at(
            t,
            "TLS to an IP address needs `sni`: the name the upstream's certificate is checked against",
            Some("add sni = \"orders.internal\" (or verify = false, which trusts any certificate)".into()),
        );
    }
    if secrets == Secrets::Skip {
        // offline checks read no key material
        return Some(UpstreamTls { sni, ca: None, client: None, verify });
    }
    let read_chain = |issues: &mut Issues<'_>, f: &Spanned<String>| -> Option<Vec<Vec<u8>>> {
        let chain: Result<Vec<CertificateDer<'static>>, _> =
            CertificateDer::pem_file_iter(f.get_ref()).and_then(|it| it.collect::<Result<_, _>>());
        match chain {
            Ok(c) if !c.is_empty() => Some(c.into_iter().map(|c| c.to_vec()).collect()),
            Ok(_) => {
                issues.at(f, format!("no certificate in {}", f.get_ref()), None);
                None
            }
            Err(e) => {
                issues.at(f, format!("cannot read certificates from {}: {e}", f.get_ref()), None);
                None
            }
        }
    };
    let ca = raw.ca_file.as_ref().and_then(|f| read_chain(issues, f)).map(|ders| {
        let certs: Vec<WrappedX509> = ders.into_iter().map(|d| WrappedX509::new(d, parse_x509)).collect();
        Arc::<[WrappedX509]>::from(certs.into_boxed_slice())
    });
    let client = match (&raw.client_cert, &raw.client_key) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            let chain = read_chain(issues, c);
            let key = match PrivateKeyDer::from_pem_file(k.get_ref()) {
                Ok(key) => Some(key.secret_der().to_vec()),
                Err(e) => {
                    issues.at(k, format!("cannot read private key {}: {e}", k.get_ref()), None);
                    None
                }
            };
            chain.zip(key).map(|(chain, key)| Arc::new(CertKey::new(chain, key)))
        }
        (Some(c), None) => {
            issues.at(c, "client_cert needs client_key", None);
            None
        }
        (None, Some(k)) => {
            issues.at(k, "client_key needs client_cert", None);
            None
        }
    };
    Some(UpstreamTls { sni, ca, client, verify })
}
