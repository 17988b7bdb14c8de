//! The immutable, validated snapshot the proxy serves from ([`RouteTable`]), and the decisions
//! that depend only on it: which side a request goes to, which endpoint takes it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::auth::{AuthConfig, RouteAuth};
use crate::client_ip::Cidr;
use crate::cors::CorsPolicy;
use crate::limits::redis::RedisSettings;
use crate::limits::rules::RateLimit;
use crate::metrics::{RouteActivity, RouteMetrics};
use crate::rewrite::Rewrites;
use crate::rollout::plan::{Placement, RolloutPlan};
use crate::router::{HeaderMatch, HostMatch, PathPattern, RouteKey, Router};
use crate::shadow::policy::{ShadowSettings, ShadowSpec};
use crate::stage::{Side, Stage};

/// Process-level settings from `[gateway]`.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub admin_token: Option<String>,
    pub admin_token_env: Option<String>,
    pub max_header_bytes: usize,
    /// Deadline for receiving one request head (`Duration::ZERO`: none).
    pub client_header_timeout: Duration,
    /// Silence allowed on a kept-alive HTTP/1 connection before its next request
    /// (`Duration::ZERO`: none).
    pub client_keepalive_timeout: Duration,
    /// Open connections allowed per client address (0: no cap).
    pub max_connections_per_client: usize,
    /// Largest request body (bytes; `u64::MAX`: no limit).
    pub max_body_bytes: u64,
    /// Read the start of HTTP/1 request bodies before contacting an upstream (routes may say
    /// otherwise).
    pub request_buffering: bool,
    pub request_timeout: Duration,
    /// Silence allowed on WebSocket/SSE streams (routes may set their own).
    pub stream_idle_timeout: Duration,
    pub threads: usize,
    pub shutdown_grace: Duration,
    pub shutdown_timeout: Duration,
    pub otlp_endpoint: Option<String>,
    /// How often endpoint host names are resolved again.
    pub resolve_interval: Duration,
    /// Shadow runtime and persistence (`shadow_*` keys; restart only).
    pub shadow: ShadowSettings,
    /// The `x-strangler-shadow` value mirrored requests carry (with the shared secret), when a
    /// secret is configured. Marked sensitive.
    pub dry_run_header: Option<HeaderValue>,
    /// Accept cleartext HTTP/2 with prior knowledge on `listen`.
    pub h2c: bool,
    /// The HTTPS listener, when configured.
    pub tls: Option<TlsListener>,
    /// The access log, when configured.
    pub access_log: Option<AccessLogSettings>,
    /// Where rollout state and history are kept (None: beside routes.toml).
    pub rollout_state_dir: Option<std::path::PathBuf>,
    /// Where rollout state lives: a file (one gateway) or PostgreSQL (several replicas).
    pub rollout_store: crate::rollout::store::StoreSettings,
    /// Proxies whose X-Forwarded-For is believed for the client IP.
    pub trusted_proxies: Vec<Cidr>,
    /// Redis for shared rate limits (read at start).
    pub redis: Option<RedisSettings>,
}

/// `[gateway.access_log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogSettings {
    /// File, or "-" for stdout (restart to change).
    pub path: String,
    pub format: AccessLogFormat,
    /// Share of requests logged.
    pub sample: f64,
}

/// How an access log line looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// NCSA combined, then `route= side= upstream= request_id= trace_id= duration_ms=`.
    Combined,
}

/// `[gateway.tls]`, with its certificates loaded and checked.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    /// In file order; the first is used when no certificate matches the client's SNI. Empty
    /// only in offline checks (files not read).
    pub certificates: Vec<Certificate>,
    /// Every certificate and key file, and a checksum of their contents when loaded.
    pub files: Vec<std::path::PathBuf>,
    pub fingerprint: u32,
    /// Offer h2 by ALPN.
    pub http2: bool,
    /// Plain-HTTP requests get a redirect to HTTPS.
    pub redirect_http: bool,
}

/// A loaded certificate chain and key.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub cert_file: std::path::PathBuf,
    pub key: Arc<rustls::sign::CertifiedKey>,
}

/// Where the sticky key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    Header(HeaderName),
    Cookie(String),
}

/// Canary split settings.
#[derive(Debug, Clone, Default)]
pub struct CanaryPolicy {
    /// Share sent to extracted in basis points (0..=10000).
    pub weight_bp: u32,
    pub sticky: Option<StickyKey>,
}

/// Retry settings of a route (idempotent methods only).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub on_5xx: bool,
    pub budget_ratio: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 0, on_5xx: false, budget_ratio: 0.2 }
    }
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    /// `match.host`; `None`: any host.
    pub host: Option<HostMatch>,
    pub pattern: PathPattern,
    pub methods: Option<Vec<Method>>,
    pub headers: Vec<HeaderMatch>,
    pub stage: Stage,
    /// Index of the extracted upstream.
    pub to: Option<usize>,
    pub canary: CanaryPolicy,
    pub fallback_legacy: bool,
    pub timeout: Duration,
    /// Silence allowed on a WebSocket/SSE stream; `timeout` covers only the time to its head.
    pub stream_idle_timeout: Duration,
    /// Response compression, when on.
    pub compression: Option<Compression>,
    /// Largest request body (bytes; `u64::MAX`: no limit).
    pub max_body_bytes: u64,
    /// Read the start of HTTP/1 request bodies before contacting the upstream.
    pub request_buffering: bool,
    pub retry: RetryPolicy,
    /// Shadow rules, when mirroring is active: stage `shadow`, or `canary` with
    /// `shadow.on_canary = true`. The queues and reports live in the proxy's shadow service.
    pub shadow: Option<Arc<ShadowSpec>>,
    /// The stage and weight routes.toml gives: where the route serves without a rollout, and
    /// how far its rollout may go with one (`stage` and `canary` are where it serves now).
    pub plan: Placement,
    /// The route's progressive rollout, if it has one.
    pub rollout: Option<Arc<RolloutPlan>>,
    /// Authentication rules (`auth`, `consumers`, `claims`); `None`: open (`auth = "none"`).
    pub auth: Option<Box<RouteAuth>>,
    /// Rate limits (`[[routes.rate_limit]]`); `None`: unlimited.
    pub limits: Option<Box<[RateLimit]>>,
    /// CORS (`[routes.cors]`).
    pub cors: Option<Box<CorsPolicy>>,
    /// Path and header rewrites per side (`[routes.rewrite]`).
    pub rewrite: Option<Box<Rewrites>>,
    /// Metadata: who owns the route, what it is, free-form labels.
    pub owner: Option<String>,
    pub description: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Metric handles, resolved once per route.
    pub metrics: RouteMetrics,
    /// What the request path counts for the canary split and the retry budget.
    pub counters: RouteCounters,
}

impl RouteKey for Route {
    fn host(&self) -> Option<&HostMatch> {
        self.host.as_ref()
    }
    fn pattern(&self) -> &PathPattern {
        &self.pattern
    }
    fn methods(&self) -> Option<&[Method]> {
        self.methods.as_deref()
    }
    fn headers(&self) -> &[HeaderMatch] {
        &self.headers
    }
}

/// `[routes.compression]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// 1–9 (gzip and zstd use it as is; Pingora caps brotli's).
    pub level: u32,
    /// Responses with a declared length below this are not compressed.
    pub min_bytes: u64,
}

/// Counters a route's requests update (atomics, reset by a reload).
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// Non-sticky canary sequence number.
    canary: AtomicU64,
    /// Requests and retries seen, for the retry budget.
    budget_requests: AtomicU64,
    budget_retries: AtomicU64,
}

/// 2^64 / golden ratio: successive multiples are a low-discrepancy (Weyl) sequence.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Bucket 0..10000 of a sticky key (FNV-1a, then a finaliser so short keys spread well).
pub fn sticky_bucket(key: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finaliser
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    ((u128::from(h) * 10_000) >> 64) as u32
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    for v in headers.get_all(http::header::COOKIE) {
        for pair in v.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            if let Some(rest) = pair.strip_prefix(name.as_bytes()) {
                if let Some(val) = rest.strip_prefix(b"=") {
                    return Some(val);
                }
            }
        }
    }
    None
}

impl Route {
    /// Which side takes this request.
    ///
    /// Canary: with a sticky key present, the key's bucket decides (bucket < weight), so raising
    /// the weight only moves keys from legacy to extracted. Without one, a per-route Weyl
    /// sequence decides, which keeps the aggregate split within a fraction of a point.
    #[inline]
    pub fn pick_side(&self, headers: &HeaderMap) -> Side {
        match self.stage {
            Stage::Legacy | Stage::Shadow => Side::Legacy,
            Stage::Extracted => Side::Extracted,
            Stage::Canary => {
                let w = self.canary.weight_bp;
                if w == 0 {
                    return Side::Legacy;
                }
                if w >= 10_000 {
                    return Side::Extracted;
                }
                let key = match &self.canary.sticky {
                    Some(StickyKey::Header(h)) => headers.get(h).map(|v| v.as_bytes()),
                    Some(StickyKey::Cookie(c)) => cookie_value(headers, c),
                    None => None,
                };
                let bucket = match key {
                    Some(k) if !k.is_empty() => sticky_bucket(k),
                    _ => {
                        let n = self.counters.canary.fetch_add(1, Ordering::Relaxed);
                        let x = n.wrapping_add(1).wrapping_mul(GOLDEN);
                        ((u128::from(x) * 10_000) >> 64) as u32
                    }
                };
                if bucket < w {
                    Side::Extracted
                } else {
                    Side::Legacy
                }
            }
        }
    }

    /// Whether admission has anything to check (credentials or rate limits).
    #[inline]
    pub fn admits(&self) -> bool {
        self.auth.is_some() || self.limits.is_some()
    }

    /// Counts a request for the retry budget.
    #[inline]
    pub fn note_request(&self) {
        if self.retry.attempts > 0 || self.fallback_legacy {
            self.counters.budget_requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes one retry from the budget: at most 10 + ratio × requests retries per snapshot.
    pub fn take_retry(&self) -> bool {
        let req = self.counters.budget_requests.load(Ordering::Relaxed) as f64;
        let allowed = 10.0 + self.retry.budget_ratio * req;
        let used = self.counters.budget_retries.fetch_add(1, Ordering::Relaxed);
        if (used as f64) < allowed {
            true
        } else {
            self.counters.budget_retries.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }
}

/// Active health check settings.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failed probes before an endpoint leaves the rotation.
    pub unhealthy_threshold: u32,
    /// Consecutive good probes before it comes back.
    pub healthy_threshold: u32,
}

/// Passive ejection settings.
#[derive(Debug, Clone)]
pub struct EjectPolicy {
    pub consecutive_failures: u32,
    pub duration: Duration,
}

impl Default for EjectPolicy {
    fn default() -> Self {
        Self { consecutive_failures: 5, duration: Duration::from_secs(10) }
    }
}

/// Load-balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
}

fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One endpoint and its live state (shared across reloads when name and address stay).
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The "host:port" this address was resolved from (None for an ip:port endpoint).
    pub host: Option<String>,
    /// Result of the last active health check (true until one fails).
    pub healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    /// Consecutive probes with the same result, and that result (active health checks).
    probe_streak: AtomicU32,
    probe_last_ok: AtomicBool,
    /// Requests in flight (least-conn).
    pub inflight: AtomicUsize,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_host(addr, None)
    }

    /// An endpoint resolved from `host` ("name:port").
    pub fn with_host(addr: SocketAddr, host: Option<String>) -> Self {
        Self {
            addr,
            host,
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            probe_streak: AtomicU32::new(0),
            probe_last_ok: AtomicBool::new(true),
            inflight: AtomicUsize::new(0),
        }
    }

    /// Healthy and not ejected.
    #[inline]
    pub fn available(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms()
    }

    pub fn ejected(&self) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms()
    }

    /// An active health probe's result. The endpoint leaves the rotation after
    /// `unhealthy_threshold` failed probes in a row and comes back after `healthy_threshold`
    /// good ones, so one lost probe does not flip it. Returns the new state when it changed.
    /// (One prober per endpoint: the background task.)
    pub fn record_probe(&self, ok: bool, hc: &HealthCheck) -> Option<bool> {
        let streak = if self.probe_last_ok.swap(ok, Ordering::Relaxed) == ok {
            self.probe_streak.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.probe_streak.store(1, Ordering::Relaxed);
            1
        };
        let healthy = self.healthy.load(Ordering::Relaxed);
        let flip = match (healthy, ok) {
            (true, false) => streak >= hc.unhealthy_threshold,
            (false, true) => streak >= hc.healthy_threshold,
            _ => false,
        };
        if flip {
            self.healthy.store(ok, Ordering::Relaxed);
            return Some(ok);
        }
        None
    }

    /// Passive health: a connect failure or 5xx.
    pub fn record_failure(&self, policy: &EjectPolicy) -> bool {
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= policy.consecutive_failures {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.ejected_until_ms.store(now_ms() + policy.duration.as_millis() as u64, Ordering::Relaxed);
            return true;
        }
        false
    }

    #[inline]
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }
}

/// A named upstream.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    pub health: Option<HealthCheck>,
    pub eject: EjectPolicy,
    /// Round-robin cursor (starts anywhere; `Default` is 0).
    pub next: AtomicUsize,
    /// HTTP version(s) spoken to this upstream.
    pub protocol: UpstreamProtocol,
    /// Requests in flight to this upstream at once; more get 503.
    pub max_pending: usize,
    /// TLS to this upstream, when configured.
    pub tls: Option<UpstreamTls>,
}

/// The HTTP version(s) the gateway speaks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 only.
    #[default]
    Http1,
    /// HTTP/2 only (ALPN over TLS, prior knowledge in cleartext).
    H2,
    /// Over TLS: h2 or http/1.1, as the upstream chooses by ALPN.
    Auto,
}

impl UpstreamProtocol {
    /// Pingora's (max, min) HTTP version.
    pub fn versions(self) -> (u8, u8) {
        match self {
            UpstreamProtocol::Http1 => (1, 1),
            UpstreamProtocol::H2 => (2, 2),
            UpstreamProtocol::Auto => (2, 1),
        }
    }
}

/// TLS settings of an upstream, with the files already loaded.
#[derive(Clone)]
pub struct UpstreamTls {
    /// SNI and the name verified (None: the endpoint's host name).
    pub sni: Option<String>,
    /// Trusted CAs (None: the system's roots).
    pub ca: Option<Arc<pingora::protocols::tls::CaType>>,
    /// Client certificate and key for mTLS.
    pub client: Option<Arc<pingora::utils::tls::CertKey>>,
    pub verify: bool,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("client_cert", &self.client.is_some())
            .field("verify", &self.verify)
            .finish()
    }
}

impl Upstream {
    /// Requests in flight to this upstream's endpoints.
    pub fn pending(&self) -> usize {
        self.endpoints.iter().map(|e| e.inflight.load(Ordering::Relaxed)).sum()
    }

    /// Picks an endpoint among the available ones; when none is available, any (fail open).
    #[inline]
    pub fn select(&self) -> Option<&Arc<Endpoint>> {
        self.select_avoiding(None)
    }

    /// [`Self::select`], skipping `avoid` (the endpoint a retry follows) while another endpoint
    /// is available: a retry goes to the next endpoint, as nginx's `proxy_next_upstream` does.
    #[inline]
    pub fn select_avoiding(&self, avoid: Option<SocketAddr>) -> Option<&Arc<Endpoint>> {
        let n = self.endpoints.len();
        if n <= 1 {
            return self.endpoints.first();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n).map(|i| &self.endpoints[(start + i) % n]).filter(|e| e.available());
        let pick = |avoiding: bool| {
            let mut c = candidates.clone().filter(|e| !avoiding || Some(e.addr) != avoid);
            match self.balance {
                Balance::RoundRobin => c.next(),
                Balance::LeastConn => c.min_by_key(|e| e.inflight.load(Ordering::Relaxed)),
            }
        };
        pick(avoid.is_some())
            .or_else(|| pick(false))
            // nothing available: fail open, still away from the one that just failed
            .or_else(|| (0..n).map(|i| &self.endpoints[(start + i) % n]).find(|e| Some(e.addr) != avoid))
            .or_else(|| self.endpoints.get(start % n))
    }
}

/// The validated, compiled configuration the proxy serves from. Immutable once built, apart
/// from counters and endpoint health.
#[derive(Debug)]
pub struct RouteTable {
    pub settings: GatewaySettings,
    pub upstreams: Vec<Arc<Upstream>>,
    /// Index of the legacy (default) upstream.
    pub legacy: usize,
    pub routes: Vec<Route>,
    /// Shared with the previous table when a reload left every route's host, path, methods and
    /// header filters (in file order) as they were: the router depends on nothing else.
    pub router: Arc<Router>,
    /// Metrics for requests no route took.
    pub default_metrics: RouteMetrics,
    /// Which routes recorded a request since the dashboard's sampler last looked (a bit per
    /// route, by index in `routes`).
    pub activity: Arc<RouteActivity>,
    /// Some route compresses responses.
    pub any_compression: bool,
    /// Consumers, API keys and JWT keys (`[consumers]`, `[auth]`).
    pub auth: AuthConfig,
    /// Hex hash of the source text.
    pub version: String,
    pub loaded_at: SystemTime,
    /// Route index by name (reloads, the rollout controller and the dashboard look routes up by
    /// name; a scan would make them quadratic in the route count).
    by_name: std::collections::HashMap<String, usize>,
    /// Indices of the routes with a rollout (the rollout controller looks at them every 200 ms;
    /// a scan of every route would cost what the route count does).
    with_rollout: Vec<usize>,
}

/// FNV-1a 64 of a text, as 16 hex digits.
pub fn version_hash(src: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in src.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl RouteTable {
    pub fn new(
        settings: GatewaySettings,
        upstreams: Vec<Arc<Upstream>>,
        legacy: usize,
        mut routes: Vec<Route>,
        router: Arc<Router>,
        src: &str,
    ) -> Self {
        let activity = Arc::new(RouteActivity::new(routes.len()));
        for (i, r) in routes.iter_mut().enumerate() {
            r.metrics.report_activity(&activity, i);
        }
        Self {
            activity,
            settings,
            upstreams,
            legacy,
            any_compression: routes.iter().any(|r| r.compression.is_some()),
            by_name: routes.iter().enumerate().map(|(i, r)| (r.name.clone(), i)).collect(),
            with_rollout: routes.iter().enumerate().filter(|(_, r)| r.rollout.is_some()).map(|(i, _)| i).collect(),
            auth: AuthConfig::default(),
            routes,
            router,
            default_metrics: RouteMetrics::new("_default"),
            version: version_hash(src),
            loaded_at: SystemTime::now(),
        }
    }

    /// The route named `name`.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.route_index(name).map(|i| &self.routes[i])
    }

    /// The routes with a rollout, in file order.
    pub fn routes_with_rollout(&self) -> impl Iterator<Item = &Route> + '_ {
        self.with_rollout.iter().map(|&i| &self.routes[i])
    }

    /// The index in `routes` of the route named `name`.
    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The route taking this request, if any (`host`: the Host header or the authority).
    #[inline]
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method, headers: &HeaderMap) -> Option<usize> {
        self.router.find(&self.routes, host, path, method, headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_buckets_spread_and_are_stable() {
        let mut hits = 0;
        for i in 0..10_000 {
            let b = sticky_bucket(format!("user-{i}").as_bytes());
            assert!(b < 10_000);
            assert_eq!(b, sticky_bucket(format!("user-{i}").as_bytes()));
            if b < 1000 {
                hits += 1;
            }
        }
        assert!((800..1200).contains(&hits), "{hits}");
    }

    #[test]
    fn weyl_split_is_exact_in_aggregate() {
        for w in [1u32, 10, 33, 50, 90] {
            let mut n_ext = 0;
            for n in 0..10_000u64 {
                let x = (n + 1).wrapping_mul(GOLDEN);
                if (((u128::from(x)) * 10_000) >> 64) < u128::from(w * 100) {
                    n_ext += 1;
                }
            }
            let pct = f64::from(n_ext) / 100.0;
            assert!((pct - f64::from(w)).abs() < 0.1, "w={w} got {pct}");
        }
    }

    #[test]
    fn the_routes_with_a_rollout_are_listed_in_file_order() {
        let mut src = String::from(
            "[defaults]\nupstream = \"legacy\"\n[upstreams.legacy]\nendpoints = [\"127.0.0.1:1\"]\n\
             [upstreams.svc]\nendpoints = [\"127.0.0.1:2\"]\n",
        );
        for i in 0..6 {
            src.push_str(&format!(
                "[[routes]]\nname = \"r{i}\"\nmatch = {{ path = \"/r{i}\" }}\nto = \"svc\"\nstage = \"extracted\"\n"
            ));
            if i % 3 == 1 {
                src.push_str(
                    "[routes.rollout]\nsteps = [{ stage = \"canary\", weight = 10, duration = \"1m\" }, { stage = \"extracted\" }]\n",
                );
            }
        }
        let t = crate::config::load_str_offline("t.toml", &src).unwrap();
        let names: Vec<&str> = t.routes_with_rollout().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["r1", "r4"]);
        assert!(t.routes_with_rollout().all(|r| r.rollout.is_some()));
    }

    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; uid=abc; b=2".parse().unwrap());
        assert_eq!(cookie_value(&h, "uid"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(&h, "u"), None);
    }

    #[test]
    fn one_failed_probe_does_not_flip_an_endpoint() {
        let hc = HealthCheck {
            path: "/h".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        };
        let ep = Endpoint::new("127.0.0.1:1".parse().unwrap());
        // (probe result, state change expected)
        let script = [
            (false, None),
            (true, None),
            (false, None),
            (false, None),
            (false, Some(false)),
            (false, None),
            (true, None),
            (false, None),
            (true, None),
            (true, Some(true)),
            (true, None),
        ];
        for (i, (ok, want)) in script.into_iter().enumerate() {
            assert_eq!(ep.record_probe(ok, &hc), want, "probe {i}");
        }
        assert!(ep.available());
    }
}
