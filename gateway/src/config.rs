//! The `routes.toml` model, its validation and its compilation into an immutable [`RouteTable`].
//!
//! Loading is pure (no I/O besides what the caller read): [`load_str`] parses, validates and
//! compiles in one step and reports *every* problem it finds, each with a place
//! (`file:line:col`) and a hint, instead of stopping at the first one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::router::{PathPattern, Router, RouterBuildError};
use crate::table::{
    Balance, CanaryPolicy, EjectPolicy, Endpoint, GatewaySettings, HeaderMatch, HealthCheck, RetryPolicy, Route,
    RouteTable, Side, Stage, StickyKey, Upstream,
};

// ---------------------------------------------------------------------------------------------
// Raw model: exactly what the file may contain.
// ---------------------------------------------------------------------------------------------

/// The whole `routes.toml` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Process-level settings: listen addresses, admin token, limits.
    #[serde(default)]
    pub gateway: RawGateway,
    /// Where unmatched requests go.
    pub defaults: RawDefaults,
    /// Named upstreams (the legacy monolith and each extracted service).
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    /// Routes, most specific pattern wins; see the README for the precedence rules.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// `[gateway]`: process-level settings. Address changes take effect only at restart.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// Proxy listen address, e.g. "127.0.0.1:8080" (default "127.0.0.1:8080").
    pub listen: Option<Spanned<String>>,
    /// Admin listen address (health, metrics, reload), e.g. "127.0.0.1:9901".
    pub admin_listen: Option<Spanned<String>>,
    /// Bearer token for the protected admin endpoints (prefer `admin_token_env`).
    pub admin_token: Option<String>,
    /// Name of the environment variable holding the admin token.
    pub admin_token_env: Option<String>,
    /// Largest accepted request head (request line + headers) in bytes; larger answers 431.
    pub max_header_bytes: Option<usize>,
    /// Largest request body kept for retries/fallback; larger bodies stream and are not retried.
    pub max_body_buffer_bytes: Option<usize>,
    /// Whole-request deadline for routes without their own `timeout` (default "30s").
    pub request_timeout: Option<Spanned<String>>,
    /// Worker threads of the proxy service (default 1).
    pub threads: Option<usize>,
    /// After SIGTERM, keep serving this long before draining (default "0s").
    pub shutdown_grace: Option<Spanned<String>>,
    /// After the grace period, wait at most this long for in-flight requests (default "10s").
    pub shutdown_timeout: Option<Spanned<String>>,
    /// OTLP/HTTP endpoint for request spans; tracing export is off when absent.
    pub otlp_endpoint: Option<String>,
    /// How often endpoint host names are resolved again (default "30s").
    pub resolve_interval: Option<Spanned<String>>,
    /// Directory for shadow samples (rotating JSONL) and report snapshots; off when absent.
    pub shadow_dir: Option<String>,
    /// Worker threads of the shadow runtime (default 1).
    pub shadow_threads: Option<Spanned<i64>>,
    /// Size in bytes at which the samples file is rotated (default 8 MiB).
    pub shadow_file_bytes: Option<Spanned<i64>>,
    /// Sample files kept, the current one included (default 4).
    pub shadow_files: Option<Spanned<i64>>,
    /// Nice value (0–19) of the shadow worker threads (default 10): the proxy wins the CPU.
    pub shadow_nice: Option<Spanned<i64>>,
    /// Name of the environment variable holding the dry-run secret shared with the extracted
    /// services (sent on mirrored writes; required by `writes = "dry-run"`). Never logged.
    pub shadow_secret_env: Option<Spanned<String>>,
    /// File holding the dry-run secret (e.g. a mounted Kubernetes Secret); reread on reload.
    pub shadow_secret_file: Option<Spanned<String>>,
}

/// `[defaults]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// The legacy upstream: unmatched requests and the legacy side of every route go here.
    pub upstream: Spanned<String>,
}

/// `[upstreams.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// One or more "ip:port" or "host:port" endpoints. A host name is resolved when the file is
    /// loaded (every address it resolves to becomes an endpoint) and again every
    /// `[gateway] resolve_interval`, so a Kubernetes Service whose IP changes is followed.
    pub endpoints: Vec<Spanned<String>>,
    /// "round_robin" (default) or "least_conn".
    pub balance: Option<Spanned<String>>,
    /// TCP connect timeout per attempt (default "1s").
    pub connect_timeout: Option<Spanned<String>>,
    /// Idle time allowed between two reads from the upstream (default "30s").
    pub read_timeout: Option<Spanned<String>>,
    /// How long an idle keep-alive connection to this upstream is kept (default "60s").
    pub idle_timeout: Option<Spanned<String>>,
    /// Active health check; endpoints failing it get no traffic.
    pub health_check: Option<RawHealthCheck>,
    /// Passive ejection after consecutive failures.
    pub eject: Option<RawEject>,
}

/// `[upstreams.NAME.health_check]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// HTTP path probed with GET; 2xx/3xx is healthy.
    pub path: Spanned<String>,
    /// Time between probes (default "5s").
    pub interval: Option<Spanned<String>>,
    /// Probe timeout (default "1s").
    pub timeout: Option<Spanned<String>>,
}

/// `[upstreams.NAME.eject]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEject {
    /// Consecutive connect failures or 5xx answers before an endpoint is ejected (default 5).
    pub consecutive_failures: Option<u32>,
    /// How long an ejected endpoint gets no traffic (default "10s").
    pub duration: Option<Spanned<String>>,
}

/// `[[routes]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique name, used in metrics and the admin API.
    pub name: Spanned<String>,
    /// What requests this route takes.
    #[serde(rename = "match")]
    pub matcher: Spanned<RawMatch>,
    /// The extracted upstream (required for every stage but `legacy`).
    pub to: Option<Spanned<String>>,
    /// "legacy" | "shadow" | "canary" | "extracted".
    pub stage: Spanned<String>,
    /// Canary: percentage 0–100 of requests sent to the extracted upstream.
    pub weight: Option<Spanned<i64>>,
    /// Canary: "header:NAME" or "cookie:NAME"; the same key always lands on the same side.
    pub sticky: Option<Spanned<String>>,
    /// "legacy": retry an idempotent request on legacy when extracted fails to connect or 5xx.
    pub fallback: Option<Spanned<String>>,
    /// Whole-request deadline, e.g. "2s"; past it the client gets 504.
    pub timeout: Option<Spanned<String>>,
    /// Retry policy (idempotent methods only).
    pub retry: Option<RawRetry>,
    /// Shadow traffic settings (stage "shadow", or "canary" with `on_canary = true`).
    pub shadow: Option<Spanned<RawShadow>>,
}

/// A number written as an integer or a float.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum RawNumber {
    Int(i64),
    Float(f64),
}

impl RawNumber {
    pub fn as_f64(self) -> f64 {
        match self {
            RawNumber::Int(i) => i as f64,
            RawNumber::Float(f) => f,
        }
    }
}

/// `[routes.shadow]`: mirror the request to `to`, compare the answers, report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    /// Share of eligible requests mirrored, 0.0–1.0 (default 1.0).
    pub sample: Option<Spanned<RawNumber>>,
    /// What to compare (default: status and body, no headers).
    pub compare: Option<RawShadowCompare>,
    /// Body paths not compared: JSON pointers, `*` = one level, `**` = any depth.
    pub ignore: Option<Vec<Spanned<String>>>,
    /// Numbers equal within this absolute difference (default 0).
    pub numeric_tolerance: Option<Spanned<RawNumber>>,
    /// "ordered" (default) or "multiset".
    pub array_order: Option<Spanned<String>>,
    /// Bodies kept up to this many bytes (default 262144).
    pub max_body: Option<Spanned<i64>>,
    /// Larger response bodies: "hash" (compare length + CRC-32, default) or "skip".
    pub oversize: Option<Spanned<String>>,
    /// "skip" (default: writes are not mirrored) or "dry-run" (mirrored with x-strangler-shadow: 1).
    pub writes: Option<Spanned<String>>,
    /// Replay safe requests to legacy a second time; differing fields are learnt as noise.
    pub learn_noise: Option<bool>,
    /// Headers whose values samples never show (default authorization, cookie, set-cookie).
    pub redact_headers: Option<Vec<Spanned<String>>>,
    /// On a canary route: mirror the requests legacy served.
    pub on_canary: Option<Spanned<bool>>,
    /// Deadline of one mirrored request (default "10s").
    pub timeout: Option<Spanned<String>>,
    /// Mirrors waiting for a worker; more are dropped and counted (default 1024).
    pub queue: Option<Spanned<i64>>,
    /// Mirrors in flight at once (default 32).
    pub concurrency: Option<Spanned<i64>>,
    /// Sample mismatches kept for the report (default 20).
    pub samples: Option<Spanned<i64>>,
}

/// `compare = { ... }` of a shadow table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadowCompare {
    /// Compare status codes (default true).
    pub status: Option<bool>,
    /// Response headers to compare (default none).
    pub headers: Option<Vec<Spanned<String>>>,
    /// Compare bodies (default true).
    pub body: Option<bool>,
}

/// `match = { ... }` of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Path pattern: "/api/orders/{id}", exact "/api/categories", prefix "/api/products/**".
    pub path: Spanned<String>,
    /// Allowed methods (any when absent).
    pub methods: Option<Vec<Spanned<String>>>,
    /// Header equality filters (all must match, header names are case-insensitive).
    pub headers: Option<BTreeMap<String, String>>,
}

/// `retry = { ... }` of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Extra attempts after the first (0–5).
    pub attempts: Spanned<i64>,
    /// Also retry when the upstream answers 502/503/504 (default false: only connect errors and
    /// connections lost before a response).
    #[serde(default)]
    pub on_5xx: bool,
    /// Retries allowed as a fraction of this route's requests, on top of 10 (default 0.2).
    pub budget: Option<Spanned<f64>>,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One problem in a config file, with its place.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConfigIssue {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: error: {}", self.file, self.line, self.column, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// Every problem found in one config file.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize)]
pub struct ConfigError {
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Collects issues while validating; converts byte offsets into line/column.
struct Issues<'a> {
    file: &'a str,
    src: &'a str,
    list: Vec<(usize, ConfigIssue)>,
}

impl<'a> Issues<'a> {
    fn new(file: &'a str, src: &'a str) -> Self {
        Self { file, src, list: Vec::new() }
    }

    fn push(&mut self, offset: usize, message: impl Into<String>, hint: Option<String>) {
        let (line, column) = line_col(self.src, offset);
        self.list
            .push((offset, ConfigIssue { file: self.file.to_string(), line, column, message: message.into(), hint }));
    }

    fn at<T>(&mut self, s: &Spanned<T>, message: impl Into<String>, hint: impl Into<Option<String>>) {
        self.push(s.span().start, message, hint.into());
    }

    fn into_error(mut self) -> Option<ConfigError> {
        if self.list.is_empty() {
            return None;
        }
        self.list.sort_by_key(|(o, _)| *o);
        Some(ConfigError { issues: self.list.into_iter().map(|(_, i)| i).collect() })
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..floor_char_boundary(src, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
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
    humantime::parse_duration(t).map_err(|e| format!("bad duration {t:?}: {e}"))
}

const DURATION_HINT: &str = "write a number with a unit, e.g. \"250ms\", \"2s\", \"1m\"";

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Parses, validates and compiles `src` (named `file` in messages) into a [`RouteTable`].
///
/// Returns every problem found. Endpoint health state is carried over from `previous` (same
/// upstream name and address) so a reload does not forget which endpoints are ejected.
pub fn load_str(file: &str, src: &str, previous: Option<&RouteTable>) -> Result<RouteTable, ConfigError> {
    load_str_with(file, src, previous, &system_resolve)
}

/// Resolves `host` (a name, not an IP literal) and `port` into addresses.
pub type Resolve<'a> = &'a dyn Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>>;

/// The system resolver (getaddrinfo), blocking: call it off the request path.
pub fn system_resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    Ok((host, port).to_socket_addrs()?.collect())
}

/// [`load_str`] with the resolver for endpoint host names given (tests, re-resolution).
///
/// A name that does not resolve is an error, unless `previous` has addresses for the same
/// upstream and name: then those are kept (and a warning logged), so a DNS hiccup during a
/// reload neither fails it nor empties the upstream.
pub fn load_str_with(
    file: &str,
    src: &str,
    previous: Option<&RouteTable>,
    resolve: Resolve<'_>,
) -> Result<RouteTable, ConfigError> {
    load(file, src, previous, resolve, Secrets::Read)
}

/// Validates and compiles `src` without touching the machine it runs on: host names are not
/// resolved (they become `0.0.0.0:PORT`) and secrets are not read (only whether one is
/// configured counts). For checking a file meant for another environment.
pub fn load_str_offline(file: &str, src: &str) -> Result<RouteTable, ConfigError> {
    load(file, src, None, &|_: &str, port: u16| Ok(vec![SocketAddr::from(([0, 0, 0, 0], port))]), Secrets::Skip)
}

/// Whether compiling reads the secrets the file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secrets {
    Read,
    Skip,
}

fn load(
    file: &str,
    src: &str,
    previous: Option<&RouteTable>,
    resolve: Resolve<'_>,
    secrets: Secrets,
) -> Result<RouteTable, ConfigError> {
    let (raw, structural) = parse_raw(file, src);
    let Some(raw) = raw else {
        return Err(structural.expect("a failed parse records an issue"));
    };
    match (compile(file, src, raw, previous, resolve, secrets), structural) {
        (Ok(table), None) => Ok(table),
        (Ok(_), Some(err)) => Err(err),
        (Err(err), None) => Err(err),
        (Err(mut err), Some(s)) => {
            err.issues.extend(s.issues);
            err.issues.sort_by_key(|i| (i.line, i.column));
            Err(err)
        }
    }
}

/// Deserializes the raw model. On unknown keys it keeps going by blanking the offending key
/// (same byte length, so positions stay valid) and parsing again, so several typos are
/// reported at once and the semantic checks still run on the rest.
fn parse_raw(file: &str, src: &str) -> (Option<RawConfig>, Option<ConfigError>) {
    let mut issues = Issues::new(file, src);
    let mut text = src.to_string();
    for _ in 0..32 {
        match toml::from_str::<RawConfig>(&text) {
            Ok(raw) => return (Some(raw), issues.into_error()),
            Err(e) => {
                let offset = e.span().map(|s| s.start).unwrap_or(0);
                let msg = e.message().trim().to_string();
                let unknown = msg.starts_with("unknown field");
                let hint = if unknown {
                    Some("remove the key or fix its spelling".to_string())
                } else if msg.contains("missing field") {
                    Some("add the required key".to_string())
                } else if msg.contains("invalid type") {
                    Some("check the value's type (string, number, table, array)".to_string())
                } else {
                    None
                };
                issues.push(offset, msg, hint);
                if !unknown || !(blank_line(&mut text, offset) || blank_inline_pair(&mut text, offset)) {
                    break;
                }
            }
        }
    }
    (None, issues.into_error())
}

/// Turns the line containing `offset` into a comment of the same length. Returns false if the
/// line cannot be blanked safely (e.g. inline tables or multi-line values).
fn blank_line(text: &mut String, offset: usize) -> bool {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let end = text[offset..].find('\n').map(|i| offset + i).unwrap_or(text.len());
    let line = &text[start..end];
    let trimmed = line.trim_start();
    // a key line in a table: `key = value` with balanced brackets
    // only when the offending key is the line's own key (not one inside an inline table)
    if trimmed.starts_with('[') || !trimmed.contains('=') || offset - start != line.len() - trimmed.len() {
        return false;
    }
    let opens = line.matches(['[', '{']).count();
    let closes = line.matches([']', '}']).count();
    if opens != closes || trimmed.contains("\"\"\"") || trimmed.contains("'''") {
        return false;
    }
    let blank: String = std::iter::once('#').chain(line.chars().skip(1).map(|_| ' ')).collect();
    // keep byte length identical so spans of later errors stay valid
    let pad = line.len() - blank.len();
    let blank = blank + &" ".repeat(pad);
    text.replace_range(start..end, &blank);
    true
}

/// Blanks `key = value` inside an inline table (and the comma that separated it), keeping byte
/// offsets. Returns false when the value's end cannot be found on the same line.
fn blank_inline_pair(text: &mut String, offset: usize) -> bool {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let bytes = text.as_bytes();
    let (mut depth, mut quote, mut i) = (0i32, None::<u8>, offset);
    let end = loop {
        let Some(&b) = bytes.get(i) else { return false };
        match (quote, b) {
            (_, b'\n') => return false,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'[' | b'{') => depth += 1,
            (None, b']' | b'}') if depth > 0 => depth -= 1,
            (None, b',' | b'}') if depth == 0 => break i,
            _ => {}
        }
        i += 1;
    };
    let mut start = offset;
    let mut stop = end;
    if bytes[end] == b',' {
        stop = end + 1;
    } else {
        // last pair: drop the comma before it instead
        let before = text[..offset].trim_end();
        if before.ends_with(',') {
            start = before.len() - 1;
        }
    }
    let blank = " ".repeat(stop - start);
    text.replace_range(start..stop, &blank);
    true
}

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

fn dur(issues: &mut Issues<'_>, v: &Option<Spanned<String>>, default: Duration) -> Duration {
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

fn addr(issues: &mut Issues<'_>, v: &Option<Spanned<String>>, default: &str) -> SocketAddr {
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

const STAGES: &str = "legacy, shadow, canary, extracted";

fn compile(
    file: &str,
    src: &str,
    raw: RawConfig,
    previous: Option<&RouteTable>,
    resolve: Resolve<'_>,
    secrets: Secrets,
) -> Result<RouteTable, ConfigError> {
    let mut issues = Issues::new(file, src);

    // --- gateway
    let g = &raw.gateway;
    let listen = addr(&mut issues, &g.listen, "127.0.0.1:8080");
    let admin_listen = addr(&mut issues, &g.admin_listen, "127.0.0.1:9901");
    let admin_token = match (&g.admin_token, &g.admin_token_env) {
        (Some(t), _) if !t.is_empty() => Some(t.clone()),
        (_, Some(var)) => std::env::var(var).ok().filter(|t| !t.is_empty()),
        _ => None,
    };
    let settings = GatewaySettings {
        listen,
        admin_listen,
        admin_token,
        admin_token_env: g.admin_token_env.clone(),
        max_header_bytes: g.max_header_bytes.unwrap_or(16 * 1024),
        max_body_buffer_bytes: g.max_body_buffer_bytes.unwrap_or(64 * 1024),
        request_timeout: dur(&mut issues, &g.request_timeout, Duration::from_secs(30)),
        threads: g.threads.unwrap_or(1).max(1),
        shutdown_grace: dur(&mut issues, &g.shutdown_grace, Duration::ZERO),
        shutdown_timeout: dur(&mut issues, &g.shutdown_timeout, Duration::from_secs(10)),
        otlp_endpoint: g.otlp_endpoint.clone(),
        resolve_interval: dur(&mut issues, &g.resolve_interval, Duration::from_secs(30))
            .max(Duration::from_millis(100)),
        shadow: shadow_settings(&mut issues, g),
        dry_run_header: dry_run_header(&mut issues, g, secrets),
    };
    let dry_run_secret = g.shadow_secret_env.is_some() || g.shadow_secret_file.is_some();

    // --- upstreams
    let prev_endpoints: HashMap<(String, SocketAddr), Arc<Endpoint>> = previous
        .map(|p| {
            p.upstreams.iter().flat_map(|u| u.endpoints.iter().map(|e| ((u.name.clone(), e.addr), e.clone()))).collect()
        })
        .unwrap_or_default();
    let mut upstreams: Vec<Arc<Upstream>> = Vec::new();
    let mut upstream_index: HashMap<String, usize> = HashMap::new();
    for (name, u) in &raw.upstreams {
        let uv = u.get_ref();
        if uv.endpoints.is_empty() {
            issues.at(
                u,
                format!("upstream {name:?} has no endpoints"),
                Some("add endpoints = [\"127.0.0.1:8081\"]".into()),
            );
        }
        let mut endpoints = Vec::new();
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
                                .and_then(|p| p.upstreams.iter().find(|u| &u.name == name))
                                .map(|u| {
                                    u.endpoints
                                        .iter()
                                        .filter(|x| x.host.as_deref() == Some(spec))
                                        .map(|x| x.addr)
                                        .collect()
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
                if endpoints.iter().any(|x: &Arc<Endpoint>| x.addr == a) {
                    if host.is_none() {
                        issues.at(e, format!("duplicate endpoint {a} in upstream {name:?}"), None);
                    }
                    continue;
                }
                let ep = prev_endpoints
                    .get(&(name.clone(), a))
                    .filter(|p| p.host.as_deref() == host)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::with_host(a, host.map(str::to_string))));
                endpoints.push(ep);
            }
        }
        let balance = match uv.balance.as_ref().map(|b| b.get_ref().as_str()) {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("least_conn") => Balance::LeastConn,
            Some(other) => {
                issues.at(
                    uv.balance.as_ref().expect("checked"),
                    format!("unknown balance policy {other:?}"),
                    Some("use \"round_robin\" or \"least_conn\"".into()),
                );
                Balance::RoundRobin
            }
        };
        let health = uv.health_check.as_ref().map(|h| {
            if !h.path.get_ref().starts_with('/') {
                issues.at(&h.path, "health check path must start with '/'", None);
            }
            HealthCheck {
                path: h.path.get_ref().clone(),
                interval: dur(&mut issues, &h.interval, Duration::from_secs(5)),
                timeout: dur(&mut issues, &h.timeout, Duration::from_secs(1)),
            }
        });
        let eject = match &uv.eject {
            Some(e) => EjectPolicy {
                consecutive_failures: e.consecutive_failures.unwrap_or(5).max(1),
                duration: dur(&mut issues, &e.duration, Duration::from_secs(10)),
            },
            None => EjectPolicy::default(),
        };
        upstream_index.insert(name.clone(), upstreams.len());
        upstreams.push(Arc::new(Upstream::new(
            name.clone(),
            endpoints,
            balance,
            dur(&mut issues, &uv.connect_timeout, Duration::from_secs(1)),
            dur(&mut issues, &uv.read_timeout, Duration::from_secs(30)),
            dur(&mut issues, &uv.idle_timeout, Duration::from_secs(60)),
            health,
            eject,
        )));
    }

    let known = || {
        let mut v: Vec<&str> = upstream_index.keys().map(String::as_str).collect();
        v.sort();
        v.join(", ")
    };

    // --- defaults
    let legacy = match upstream_index.get(raw.defaults.upstream.get_ref()) {
        Some(i) => *i,
        None => {
            issues.at(
                &raw.defaults.upstream,
                format!("unknown upstream {:?}", raw.defaults.upstream.get_ref()),
                Some(format!("declare [upstreams.{}] or use one of: {}", raw.defaults.upstream.get_ref(), known())),
            );
            0
        }
    };

    // --- routes
    let mut routes: Vec<Route> = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut spans: Vec<usize> = Vec::new();
    for r in &raw.routes {
        let name = r.name.get_ref().clone();
        if name.is_empty() {
            issues.at(&r.name, "route name is empty", None);
        }
        if let Some(first) = names.get(&name) {
            let (l, c) = line_col(src, *first);
            issues.at(
                &r.name,
                format!("duplicate route name {name:?}"),
                Some(format!("first defined at {file}:{l}:{c}; names must be unique")),
            );
        } else {
            names.insert(name.clone(), r.name.span().start);
        }

        let stage = match r.stage.get_ref().as_str() {
            "legacy" => Stage::Legacy,
            "shadow" => Stage::Shadow,
            "canary" => Stage::Canary,
            "extracted" => Stage::Extracted,
            other => {
                issues.at(&r.stage, format!("unknown stage {other:?}"), Some(format!("use one of: {STAGES}")));
                Stage::Legacy
            }
        };

        let to = match &r.to {
            Some(t) => match upstream_index.get(t.get_ref()) {
                Some(i) => Some(*i),
                None => {
                    issues.at(
                        t,
                        format!("unknown upstream {:?}", t.get_ref()),
                        Some(format!("declare [upstreams.{}] or use one of: {}", t.get_ref(), known())),
                    );
                    None
                }
            },
            None => {
                if stage != Stage::Legacy {
                    issues.at(
                        &r.stage,
                        format!("stage {:?} needs `to` (the extracted upstream)", r.stage.get_ref()),
                        Some("add to = \"<upstream name>\"".into()),
                    );
                }
                None
            }
        };

        let weight_bp = match (&r.weight, stage) {
            (Some(w), _) if !(0..=100).contains(w.get_ref()) => {
                issues.at(
                    w,
                    format!("weight {} is outside 0–100", w.get_ref()),
                    Some("weight is the percentage sent to the extracted upstream".into()),
                );
                0
            }
            (Some(w), Stage::Canary) => (*w.get_ref() as u32) * 100,
            (Some(w), _) => {
                issues.at(
                    w,
                    "weight only applies to stage \"canary\"",
                    Some("remove it or set stage = \"canary\"".into()),
                );
                0
            }
            (None, Stage::Canary) => {
                issues.at(&r.stage, "stage \"canary\" needs a weight", Some("add weight = 10 (percent)".into()));
                0
            }
            (None, _) => 0,
        };

        let sticky = r.sticky.as_ref().and_then(|s| {
            let v = s.get_ref();
            let parsed = if let Some(h) = v.strip_prefix("header:") {
                http::HeaderName::from_bytes(h.trim().as_bytes()).ok().map(StickyKey::Header)
            } else if let Some(c) = v.strip_prefix("cookie:") {
                let c = c.trim();
                (!c.is_empty() && !c.contains([';', '=', ' '])).then(|| StickyKey::Cookie(c.to_string()))
            } else {
                None
            };
            if parsed.is_none() {
                issues.at(s, format!("bad sticky key {v:?}"), Some("use \"header:NAME\" or \"cookie:NAME\"".into()));
            } else if stage != Stage::Canary {
                issues.at(s, "sticky only applies to stage \"canary\"", None);
            }
            parsed
        });

        let fallback_legacy = match &r.fallback {
            None => false,
            Some(f) if f.get_ref() == "legacy" => {
                if to.is_none() {
                    issues.at(f, "fallback needs an extracted upstream (`to`)", None);
                }
                true
            }
            Some(f) => {
                issues.at(
                    f,
                    format!("unknown fallback {:?}", f.get_ref()),
                    Some("the only fallback is \"legacy\"".into()),
                );
                false
            }
        };

        let timeout = dur(&mut issues, &r.timeout, settings.request_timeout);
        let retry = match &r.retry {
            None => RetryPolicy::default(),
            Some(rr) => {
                let attempts = *rr.attempts.get_ref();
                if !(0..=5).contains(&attempts) {
                    issues.at(&rr.attempts, format!("retry attempts {attempts} outside 0–5"), None);
                }
                let budget = rr.budget.as_ref().map(|b| *b.get_ref()).unwrap_or(0.2);
                if let Some(b) = &rr.budget {
                    if !(0.0..=1.0).contains(b.get_ref()) {
                        issues.at(
                            b,
                            "retry budget must be between 0.0 and 1.0",
                            Some("0.2 allows retries for 20% of requests".into()),
                        );
                    }
                }
                RetryPolicy { attempts: attempts.clamp(0, 5) as u32, on_5xx: rr.on_5xx, budget_ratio: budget }
            }
        };

        // match
        let m = r.matcher.get_ref();
        let pattern = match PathPattern::parse(m.path.get_ref()) {
            Ok(p) => p,
            Err(e) => {
                issues.at(
                    &m.path,
                    e,
                    Some("patterns look like /api/orders/{id}, /api/categories or /api/products/**".into()),
                );
                PathPattern::parse("/").expect("root parses")
            }
        };
        let methods = m.methods.as_ref().map(|ms| {
            let mut out = Vec::new();
            for s in ms {
                let up = s.get_ref().to_ascii_uppercase();
                match http::Method::from_bytes(up.as_bytes()) {
                    Ok(mm) if KNOWN_METHODS.contains(&up.as_str()) => out.push(mm),
                    _ => issues.at(
                        s,
                        format!("unknown method {:?}", s.get_ref()),
                        Some(format!("use one of: {}", KNOWN_METHODS.join(", "))),
                    ),
                }
            }
            out
        });
        let mut headers = Vec::new();
        for (k, v) in m.headers.iter().flatten() {
            match (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v)) {
                (Ok(n), Ok(val)) => headers.push(HeaderMatch { name: n, value: val }),
                _ => issues.at(&r.matcher, format!("bad header filter {k:?} = {v:?}"), None),
            }
        }
        headers.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));

        let shadow = shadow_policy(&mut issues, &name, r, stage, to);
        if let Some(w) = r.shadow.as_ref().and_then(|t| t.get_ref().writes.as_ref()) {
            if w.get_ref() == "dry-run" && !dry_run_secret {
                issues.at(
                    w,
                    "writes = \"dry-run\" needs the dry-run secret shared with the extracted services",
                    Some(
                        "set [gateway] shadow_secret_env = \"STRANGLER_SHADOW_SECRET\" (or shadow_secret_file) and \
                         give the services the same value; without it they commit mirrored writes"
                            .into(),
                    ),
                );
            }
        }

        spans.push(r.matcher.span().start);
        routes.push(Route::new(
            name,
            pattern,
            methods,
            headers,
            stage,
            to,
            CanaryPolicy { weight_bp, sticky },
            fallback_legacy,
            timeout,
            retry,
        ));
        if let Some(route) = routes.last_mut() {
            route.shadow = shadow;
        }
    }

    // --- router (detects ambiguous overlaps)
    let router = match Router::build(&routes) {
        Ok(r) => Some(r),
        Err(errs) => {
            for e in errs {
                match e {
                    RouterBuildError::Ambiguous { route, other } => {
                        let (l, c) = line_col(src, spans[other]);
                        issues.push(
                            spans[route],
                            format!(
                                "route {:?} overlaps route {:?} ambiguously (same path pattern, overlapping methods, same header filters)",
                                routes[route].name, routes[other].name
                            ),
                            Some(format!("{:?} is at {file}:{l}:{c}; narrow `methods` or add a header filter to one of them", routes[other].name)),
                        );
                    }
                    RouterBuildError::Conflict { route, message } => issues.push(
                        spans[route],
                        format!("route {:?} conflicts with another pattern: {message}", routes[route].name),
                        Some("two patterns differ only in parameter names; use the same parameter name".into()),
                    ),
                }
            }
            None
        }
    };

    if let Some(err) = issues.into_error() {
        return Err(err);
    }
    let router = router.expect("no issues means the router was built");
    Ok(RouteTable::new(settings, upstreams, legacy, routes, router, src))
}

/// An integer setting that must lie in `range`.
fn int_in(
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

/// Reads the dry-run secret `[gateway]` names and turns it into the header value mirrored writes
/// carry (marked sensitive, so `Debug` never shows it).
fn dry_run_header(issues: &mut Issues<'_>, g: &RawGateway, secrets: Secrets) -> Option<http::HeaderValue> {
    let (env, file) = (g.shadow_secret_env.as_ref(), g.shadow_secret_file.as_ref());
    if let (Some(_), Some(f)) = (env, file) {
        issues.at(f, "set only one of shadow_secret_env and shadow_secret_file", None);
        return None;
    }
    let at = env.or(file)?;
    if secrets == Secrets::Skip {
        return None;
    }
    let loaded = strangler_wire::SharedSecret::load(
        env.map(|e| e.get_ref().as_str()),
        file.map(|f| std::path::Path::new(f.get_ref().as_str())),
    );
    match loaded {
        Ok(Some(secret)) => {
            let mut v = http::HeaderValue::from_str(&strangler_wire::DryRun::header_value(&secret))
                .expect("a validated secret is a valid header value");
            v.set_sensitive(true);
            Some(v)
        }
        Ok(None) => None,
        Err(e) => {
            issues.at(
                at,
                format!("cannot read the dry-run secret: {e}"),
                Some("the gateway and the extracted services must be given the same secret".into()),
            );
            None
        }
    }
}

fn shadow_settings(issues: &mut Issues<'_>, g: &RawGateway) -> crate::shadow::ShadowSettings {
    let d = crate::shadow::ShadowSettings::default();
    crate::shadow::ShadowSettings {
        dir: g.shadow_dir.as_ref().filter(|s| !s.is_empty()).map(std::path::PathBuf::from),
        threads: int_in(issues, &g.shadow_threads, "shadow_threads", 1..=64, d.threads as i64) as usize,
        file_bytes: int_in(issues, &g.shadow_file_bytes, "shadow_file_bytes", 4096..=(1 << 40), d.file_bytes as i64)
            as u64,
        files: int_in(issues, &g.shadow_files, "shadow_files", 1..=1000, d.files as i64) as usize,
        nice: int_in(issues, &g.shadow_nice, "shadow_nice", 0..=19, i64::from(d.nice)) as i32,
    }
}

/// Compiles a route's `[routes.shadow]` table (or the defaults for stage `shadow`) into the
/// policy the proxy runs. A table on a route at stage `legacy` or `extracted` is validated and
/// kept for [`compare_rules`] (prepare the rules, then flip the stage), but mirrors nothing.
fn shadow_policy(
    issues: &mut Issues<'_>,
    name: &str,
    r: &RawRoute,
    stage: Stage,
    to: Option<usize>,
) -> Option<Arc<crate::shadow::ShadowPolicy>> {
    let spec = shadow_spec(issues, r, stage).unwrap_or_default();
    let active = match stage {
        Stage::Shadow => true,
        Stage::Canary => spec.on_canary,
        _ => false,
    };
    (active && to.is_some()).then(|| Arc::new(crate::shadow::ShadowPolicy::new(name, spec)))
}

/// Validates and compiles a route's `[routes.shadow]` table; `None` when the route has none.
fn shadow_spec(issues: &mut Issues<'_>, r: &RawRoute, stage: Stage) -> Option<crate::shadow::policy::ShadowSpec> {
    use crate::shadow::compare::{ArrayOrder, PathPattern as IgnorePattern};
    use crate::shadow::policy::{Oversize, ShadowSpec, Writes};
    let mut spec = ShadowSpec::default();
    let raw = r.shadow.as_ref()?;
    let t = raw.get_ref();
    let on_canary = t.on_canary.as_ref().is_some_and(|b| *b.get_ref());
    match (stage, &t.on_canary) {
        (Stage::Shadow, None) | (Stage::Canary, Some(_)) => {}
        (_, Some(b)) if stage != Stage::Canary => {
            issues.at(b, "on_canary only applies to stage \"canary\"", Some("remove it".into()))
        }
        // legacy / extracted, or canary without on_canary: the rules are prepared (and used by
        // contract checks) but inactive.
        _ => {}
    }
    spec.on_canary = on_canary;
    if let Some(s) = &t.sample {
        let v = s.get_ref().as_f64();
        if (0.0..=1.0).contains(&v) {
            spec.sample = v;
        } else {
            issues.at(
                s,
                format!("sample {v} is outside 0.0–1.0"),
                Some("sample is the share of requests mirrored, e.g. 0.1 for 10%".into()),
            );
        }
    }
    if let Some(c) = &t.compare {
        spec.rules.status = c.status.unwrap_or(true);
        spec.rules.body = c.body.unwrap_or(true);
        for h in c.headers.iter().flatten() {
            match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(n) => spec.rules.headers.push(n.as_str().to_string()),
                Err(_) => issues.at(h, format!("bad header name {:?}", h.get_ref()), None),
            }
        }
    }
    for i in t.ignore.iter().flatten() {
        match IgnorePattern::parse(i.get_ref()) {
            Ok(p) => spec.rules.ignore.push(p),
            Err(e) => {
                issues.at(i, e, Some("e.g. \"/generated_at\", \"/items/*/updated_at\", \"/**/request_id\"".into()))
            }
        }
    }
    if let Some(n) = &t.numeric_tolerance {
        let v = n.get_ref().as_f64();
        if v >= 0.0 && v.is_finite() {
            spec.rules.numeric_tolerance = v;
        } else {
            issues.at(n, format!("numeric_tolerance {v} must be a finite number >= 0"), None);
        }
    }
    if let Some(a) = &t.array_order {
        spec.rules.array_order = match a.get_ref().as_str() {
            "ordered" => ArrayOrder::Ordered,
            "multiset" => ArrayOrder::Multiset,
            other => {
                issues.at(a, format!("unknown array_order {other:?}"), Some("use \"ordered\" or \"multiset\"".into()));
                ArrayOrder::Ordered
            }
        };
    }
    spec.max_body = int_in(issues, &t.max_body, "max_body", 1..=(64 << 20), spec.max_body as i64) as usize;
    if let Some(o) = &t.oversize {
        spec.oversize = match o.get_ref().as_str() {
            "hash" => Oversize::Hash,
            "skip" => Oversize::Skip,
            other => {
                issues.at(o, format!("unknown oversize policy {other:?}"), Some("use \"hash\" or \"skip\"".into()));
                Oversize::Hash
            }
        };
    }
    if let Some(w) = &t.writes {
        spec.writes = match w.get_ref().as_str() {
            "dry-run" => Writes::DryRun,
            "skip" => Writes::Skip,
            other => {
                issues.at(
                    w,
                    format!("unknown writes mode {other:?}"),
                    Some("use \"dry-run\" (mirror writes with x-strangler-shadow: 1) or \"skip\"".into()),
                );
                Writes::Skip
            }
        };
    }
    spec.learn_noise = t.learn_noise.unwrap_or(false);
    if let Some(list) = &t.redact_headers {
        spec.redact_headers.clear();
        for h in list {
            match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(n) => spec.redact_headers.push(n.as_str().to_string()),
                Err(_) => issues.at(h, format!("bad header name {:?}", h.get_ref()), None),
            }
        }
    }
    spec.timeout = dur(issues, &t.timeout, spec.timeout);
    spec.queue = int_in(issues, &t.queue, "queue", 1..=1_000_000, spec.queue as i64) as usize;
    spec.concurrency = int_in(issues, &t.concurrency, "concurrency", 1..=4096, spec.concurrency as i64) as usize;
    spec.samples = int_in(issues, &t.samples, "samples", 0..=10_000, spec.samples as i64) as usize;
    Some(spec)
}

/// The comparison rules of every route that has a `[routes.shadow]` table, at any stage, by
/// route name. Contract checks use this so they judge "the same answer" exactly as shadowing
/// will. Errors are the same as [`load_str`]'s.
pub fn compare_rules(
    file: &str,
    src: &str,
) -> Result<std::collections::BTreeMap<String, crate::shadow::compare::CompareRules>, ConfigError> {
    load_str_offline(file, src)?;
    let (raw, err) = parse_raw(file, src);
    let raw = match (raw, err) {
        (Some(raw), None) => raw,
        (_, Some(e)) => return Err(e),
        (None, None) => return Ok(Default::default()),
    };
    let mut issues = Issues::new(file, src);
    let mut out = std::collections::BTreeMap::new();
    for r in &raw.routes {
        let stage = match r.stage.get_ref().as_str() {
            "shadow" => Stage::Shadow,
            "canary" => Stage::Canary,
            "extracted" => Stage::Extracted,
            _ => Stage::Legacy,
        };
        if let Some(spec) = shadow_spec(&mut issues, r, stage) {
            out.insert(r.name.get_ref().clone(), spec.rules);
        }
    }
    match issues.into_error() {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Methods a route may name.
pub const KNOWN_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl Side {
    /// Label used in metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Legacy => "legacy",
            Side::Extracted => "extracted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[gateway]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9901"

[defaults]
upstream = "legacy"

[upstreams.legacy]
endpoints = ["127.0.0.1:8081"]

[upstreams.catalog]
endpoints = ["127.0.0.1:8091", "127.0.0.1:8093"]
balance = "least_conn"
connect_timeout = "250ms"

[[routes]]
name = "products"
match = { path = "/api/products/**" }
to = "catalog"
stage = "canary"
weight = 10
sticky = "header:x-user"
fallback = "legacy"
timeout = "2s"

[[routes]]
name = "order"
match = { path = "/api/orders/{id}", methods = ["GET"] }
stage = "legacy"
"#;

    #[test]
    fn good_config_compiles() {
        let t = load_str("routes.toml", GOOD, None).unwrap();
        assert_eq!(t.routes.len(), 2);
        assert_eq!(t.routes[0].canary.weight_bp, 1000);
        assert_eq!(t.routes[0].timeout, Duration::from_secs(2));
        assert_eq!(t.upstreams[t.routes[0].to.unwrap()].endpoints.len(), 2);
    }

    fn errors(src: &str) -> Vec<String> {
        load_str("r.toml", src, None).unwrap_err().issues.iter().map(|i| i.to_string()).collect()
    }

    #[test]
    fn unknown_keys_are_all_reported_with_positions() {
        let src = GOOD.replace("weight = 10", "weigth = 10").replace("timeout = \"2s\"", "timout = \"2s\"");
        let e = errors(&src);
        // the misspelt weight also leaves the canary without one
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("needs a weight"), "{e:?}");
        assert!(e[1].starts_with("r.toml:22:1: error: unknown field `weigth`"), "{e:?}");
        assert!(e[2].contains("unknown field `timout`"), "{e:?}");
        assert!(e[1].contains("hint:"));
    }

    #[test]
    fn semantic_errors_are_all_collected() {
        let src = GOOD
            .replace("to = \"catalog\"", "to = \"catalogue\"")
            .replace("weight = 10", "weight = 140")
            .replace("timeout = \"2s\"", "timeout = \"5x\"")
            .replace("name = \"order\"", "name = \"products\"");
        let e = errors(&src);
        assert_eq!(e.len(), 5, "{e:#?}");
        assert!(
            e[0].starts_with("r.toml:20:6: error: unknown upstream \"catalogue\"") && e[0].contains("catalog, legacy"),
            "{e:?}"
        );
        assert!(e[1].starts_with("r.toml:22:10: error: weight 140 is outside 0–100"), "{e:?}");
        assert!(e[2].contains("fallback needs an extracted upstream"), "{e:?}");
        assert!(e[3].starts_with("r.toml:25:11: error: bad duration \"5x\""), "{e:?}");
        assert!(
            e[4].contains("duplicate route name \"products\"") && e[4].contains("first defined at r.toml:18:8"),
            "{e:?}"
        );
    }

    #[test]
    fn ambiguous_overlap_is_rejected() {
        let src = format!(
            "{GOOD}\n[[routes]]\nname = \"order2\"\nmatch = {{ path = \"/api/orders/{{id}}\" }}\nstage = \"legacy\"\n"
        );
        let e = errors(&src);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("overlaps route \"order\""), "{e:?}");
        // different methods do not overlap
        let ok = src.replace(
            "match = { path = \"/api/orders/{id}\" }",
            "match = { path = \"/api/orders/{id}\", methods = [\"DELETE\"] }",
        );
        load_str("r.toml", &ok, None).unwrap();
        // parameter names do not matter: same pattern, disjoint methods is fine
        let ok = src.replace(
            "match = { path = \"/api/orders/{id}\" }",
            "match = { path = \"/api/orders/{oid}\", methods = [\"PUT\"] }",
        );
        load_str("r.toml", &ok, None).unwrap();
    }

    #[test]
    fn unknown_keys_in_inline_tables_do_not_hide_other_errors() {
        let src = GOOD
            .replace(
                "match = { path = \"/api/products/**\" }",
                "match = { path = \"/api/products/**\", method = [\"GET\"] }",
            )
            .replace("methods = [\"GET\"] }", "methods = [\"GET\"], hedaers = 1 }")
            .replace("stage = \"legacy\"", "stage = \"legacyy\"");
        let e = errors(&src);
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(e[0].contains("unknown field `method`"), "{e:?}");
        assert!(e[1].contains("unknown field `hedaers`"), "{e:?}");
        assert!(e[2].contains("unknown stage \"legacyy\""), "{e:?}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é\nx", 3), (2, 1));
    }

    const SHADOW: &str = r#"
[defaults]
upstream = "legacy"

[upstreams.legacy]
endpoints = ["127.0.0.1:8081"]

[upstreams.catalog]
endpoints = ["127.0.0.1:8091"]

[[routes]]
name = "products"
match = { path = "/api/products/**" }
to = "catalog"
stage = "shadow"

[routes.shadow]
sample = 0.5
compare = { status = true, headers = ["content-type"], body = true }
ignore = ["/generated_at", "/items/*/updated_at"]
numeric_tolerance = 0.01
array_order = "multiset"
max_body = 65536
writes = "dry-run"
learn_noise = true
redact_headers = ["authorization", "x-api-key"]

[[routes]]
name = "orders"
match = { path = "/api/orders/**" }
to = "catalog"
stage = "shadow"
"#;

    /// SHADOW with a dry-run secret configured (a `[gateway]` table at the end, so the line
    /// numbers of SHADOW stay).
    fn shadow_src() -> String {
        static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
        let file = FILE.get_or_init(|| {
            let f = std::env::temp_dir().join(format!("strangler-config-test-{}.secret", std::process::id()));
            std::fs::write(&f, "config-test-secret-0123456789").unwrap();
            f
        });
        format!("{SHADOW}\n[gateway]\nshadow_secret_file = \"{}\"\n", file.display())
    }

    #[test]
    fn shadow_tables_compile() {
        use crate::shadow::compare::ArrayOrder;
        use crate::shadow::policy::Writes;
        let t = load_str_offline("r.toml", &shadow_src()).unwrap();
        let p = t.routes[0].shadow.as_ref().unwrap();
        assert_eq!(p.spec.sample, 0.5);
        assert_eq!(p.spec.rules.headers, ["content-type"]);
        assert_eq!(p.spec.rules.ignore.len(), 2);
        assert_eq!(p.spec.rules.array_order, ArrayOrder::Multiset);
        assert_eq!((p.spec.max_body, p.spec.writes, p.spec.learn_noise), (65536, Writes::DryRun, true));
        assert_eq!(p.spec.redact_headers, ["authorization", "x-api-key"]);
        // stage shadow without a table mirrors with the defaults
        let d = t.routes[1].shadow.as_ref().unwrap();
        assert_eq!((d.spec.sample, d.spec.writes), (1.0, Writes::Skip));
        assert_eq!(d.spec.redact_headers, ["authorization", "cookie", "set-cookie"]);
    }

    #[test]
    fn shadow_errors_have_places_and_hints() {
        let src = shadow_src()
            .replace("sample = 0.5", "sample = 1.5")
            .replace("\"/generated_at\"", "\"generated_at\"")
            .replace("\"multiset\"", "\"bag\"")
            .replace("\"dry-run\"", "\"yes\"")
            .replace("learn_noise = true", "learn_noise = true\nlearn_nosie = true");
        let e = errors(&src);
        assert_eq!(e.len(), 5, "{e:#?}");
        assert!(
            e[0].starts_with("r.toml:18:10: error: sample 1.5 is outside 0.0–1.0") && e[0].contains("hint:"),
            "{e:?}"
        );
        assert!(e[1].contains("must start with '/'"), "{e:?}");
        assert!(e[2].contains("unknown array_order \"bag\"") && e[2].contains("multiset"), "{e:?}");
        assert!(e[3].contains("unknown writes mode \"yes\"") && e[3].contains("dry-run"), "{e:?}");
        assert!(e[4].contains("unknown field `learn_nosie`"), "{e:?}");
        // a table on a legacy route, on_canary on a shadow route, a canary table without on_canary
        // a table on a legacy route is accepted and kept for contract checks, but mirrors nothing
        let src =
            shadow_src().replace("stage = \"shadow\"\n\n[routes.shadow]", "stage = \"legacy\"\n\n[routes.shadow]");
        let t = load_str("r.toml", &src, None).unwrap();
        assert!(t.routes[0].shadow.is_none(), "inactive at stage legacy");
        let rules = compare_rules("r.toml", &src).unwrap();
        assert_eq!(rules.len(), 1);
        assert!(rules.values().next().unwrap().ignore.iter().any(|p| p.as_str() == "/generated_at"));
        let src = shadow_src().replace("sample = 0.5", "sample = 0.5\non_canary = true");
        assert!(errors(&src)[0].contains("on_canary only applies"));
        let src = shadow_src()
            .replace("stage = \"shadow\"\n\n[routes.shadow]", "stage = \"canary\"\nweight = 5\n\n[routes.shadow]");
        assert!(
            load_str("r.toml", &src, None).unwrap().routes[0].shadow.is_none(),
            "canary without on_canary: inactive"
        );
        let ok = src.replace("sample = 0.5", "sample = 0.5\non_canary = true");
        let t = load_str("r.toml", &ok, None).unwrap();
        assert!(t.routes[0].shadow.as_ref().unwrap().spec.on_canary);
    }

    #[test]
    fn dry_run_writes_need_the_shared_secret() {
        // SHADOW mirrors writes as dry runs: without a secret the services would commit them
        let e = errors(SHADOW);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("r.toml:24:10: error: writes = \"dry-run\" needs the dry-run secret"), "{e:?}");
        assert!(e[0].contains("shadow_secret_env"), "{e:?}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "a-shared-secret-0123456789\n").unwrap();
        let with_file = format!("[gateway]\nshadow_secret_file = \"{}\"\n{SHADOW}", file.display());
        let t = load_str("r.toml", &with_file, None).unwrap();
        let v = t.settings.dry_run_header.as_ref().unwrap();
        assert_eq!(v.to_str().unwrap(), "1; secret=a-shared-secret-0123456789");
        assert!(v.is_sensitive() && !format!("{:?}", t.settings).contains("a-shared-secret"));

        // unreadable or unset: an error at the key, and `check --no-resolve` does not read it
        let unset = format!("[gateway]\nshadow_secret_env = \"STRANGLER_CONFIG_TEST_UNSET\"\n{SHADOW}");
        let e = errors(&unset);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("r.toml:2:21: error: cannot read the dry-run secret: environment variable"), "{e:?}");
        assert!(load_str_offline("r.toml", &unset).unwrap().settings.dry_run_header.is_none());
        std::fs::write(&file, "short").unwrap();
        assert!(errors(&with_file)[0].contains("16–512 characters"));
        let both = format!("[gateway]\nshadow_secret_env = \"X\"\nshadow_secret_file = \"/x\"\n{SHADOW}");
        assert!(errors(&both)[0].contains("only one of"));
    }

    #[test]
    fn stage_needs_to_and_canary_needs_weight() {
        let src = GOOD.replace("to = \"catalog\"\n", "").replace("weight = 10\n", "");
        let e = errors(&src);
        assert!(e.iter().any(|m| m.contains("needs `to`")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("needs a weight")), "{e:?}");
    }

    const NAMED: &str = r#"
[defaults]
upstream = "legacy"

[upstreams.legacy]
endpoints = ["legacy-monolith:8081", "10.0.0.9:8081"]

[upstreams.svc]
endpoints = ["nowhere.invalid:8091"]
"#;

    fn fake_dns(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        match host {
            "legacy-monolith" => {
                Ok(vec![SocketAddr::from(([10, 0, 0, 2], port)), SocketAddr::from(([10, 0, 0, 1], port))])
            }
            _ => Err(std::io::Error::other("no such host")),
        }
    }

    #[test]
    fn endpoint_syntax_table() {
        use EndpointSpec::*;
        let cases: &[(&str, Option<EndpointSpec>)] = &[
            ("127.0.0.1:8081", Some(Addr("127.0.0.1:8081".parse().unwrap()))),
            ("[::1]:8081", Some(Addr("[::1]:8081".parse().unwrap()))),
            ("legacy-monolith:8081", Some(Host("legacy-monolith".into(), 8081))),
            ("orders.shop.svc.cluster.local:80", Some(Host("orders.shop.svc.cluster.local".into(), 80))),
            ("localhost:1", Some(Host("localhost".into(), 1))),
            ("legacy-monolith", None),
            ("legacy-monolith:0", None),
            ("legacy-monolith:http", None),
            ("legacy monolith:80", None),
            ("-bad:80", None),
            ("a..b:80", None),
            ("300.1.1.1:80", None),
            (":80", None),
            ("http://x:80", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_endpoint(s).ok(), *want, "{s}");
        }
    }

    #[test]
    fn host_names_resolve_at_load_and_unresolvable_ones_are_errors_with_a_place() {
        let err = load_str_with("r.toml", NAMED, None, &fake_dns).unwrap_err();
        assert_eq!(err.issues.len(), 1, "{err}");
        let i = &err.issues[0];
        assert_eq!((i.line, i.column), (9, 14), "{err}");
        assert!(i.message.contains("\"nowhere.invalid:8091\" does not resolve"), "{err}");

        let ok = NAMED.replace("nowhere.invalid:8091", "legacy-monolith:8091");
        let t = load_str_with("r.toml", &ok, None, &fake_dns).unwrap();
        let addrs: Vec<String> = t.upstreams[0].endpoints.iter().map(|e| e.addr.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.1:8081", "10.0.0.2:8081", "10.0.0.9:8081"]);
        assert_eq!(t.upstreams[0].endpoints[0].host.as_deref(), Some("legacy-monolith:8081"));
        assert_eq!(t.upstreams[0].endpoints[2].host, None);

        // a reload while DNS fails keeps the addresses the serving table has for that name
        let down = |_: &str, _: u16| -> std::io::Result<Vec<SocketAddr>> { Err(std::io::Error::other("timeout")) };
        let t2 = load_str_with("r.toml", &ok, Some(&t), &down).unwrap();
        assert_eq!(t2.upstreams[0].endpoints.len(), 3);
        assert!(
            Arc::ptr_eq(&t2.upstreams[0].endpoints[0], &t.upstreams[0].endpoints[0]),
            "endpoint state carried over"
        );
    }

    #[test]
    fn localhost_resolves_with_the_system_resolver() {
        let src =
            NAMED.replace("nowhere.invalid:8091", "localhost:8091").replace("legacy-monolith:8081", "localhost:8081");
        let t = load_str("r.toml", &src, None).unwrap();
        assert!(t.upstreams[1].endpoints.iter().all(|e| e.addr.ip().is_loopback() && e.addr.port() == 8091));
    }
}
