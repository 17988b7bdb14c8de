//! The raw `routes.toml` model: exactly what the file may contain, as serde reads it. Every
//! struct denies unknown fields and keeps the spans of the values that validation may blame.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

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
    /// (Boxed: serde grows the vector one route at a time, and moving boxes is cheaper than
    /// moving whole routes when it doubles; a 10,000-route file moved ~16 MB more otherwise.)
    #[allow(clippy::vec_box)]
    pub routes: Vec<Box<RawRoute>>,
    /// Who calls the API: API keys and JWT subjects by consumer name.
    #[serde(default)]
    pub consumers: BTreeMap<String, Spanned<RawConsumer>>,
    /// How credentials are presented and checked.
    pub auth: Option<RawAuth>,
}

/// `[consumers.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    /// Free text, shown by `check` and the admin API.
    pub description: Option<String>,
    /// API keys, never the key itself: `{ sha256 = "<64 hex digits>" }`, `{ env = "VAR" }` or
    /// `{ file = "/path" }` (the key is read and only its digest kept). Two at once to rotate.
    pub api_keys: Option<Vec<Spanned<RawApiKey>>>,
    /// Values of `[auth.jwt] consumer_claim` (default `sub`) that identify this consumer.
    pub jwt_subjects: Option<Vec<Spanned<String>>>,
}

/// One API key of a consumer: exactly one of the three keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    /// SHA-256 of the key, as 64 hex digits (`printf %s "$KEY" | sha256sum`).
    pub sha256: Option<Spanned<String>>,
    /// Environment variable holding the key.
    pub env: Option<Spanned<String>>,
    /// File holding the key (surrounding whitespace trimmed); reloaded when it changes.
    pub file: Option<Spanned<String>>,
}

/// `[auth]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub api_key: Option<RawApiKeyAuth>,
    pub jwt: Option<Spanned<RawJwtAuth>>,
}

/// `[auth.api_key]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeyAuth {
    /// Request header carrying the key (default "x-api-key").
    pub header: Option<Spanned<String>>,
}

/// `[auth.jwt]`: bearer tokens in `Authorization`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtAuth {
    /// Accepted algorithms: "HS256", "RS256", "ES256" (required).
    pub algorithms: Vec<Spanned<String>>,
    /// JWKS file with the verification keys (`oct` keys for HS256); reloaded when it changes.
    pub jwks_file: Spanned<String>,
    /// Accepted `iss` values (the claim is then required).
    pub issuer: Option<Vec<Spanned<String>>>,
    /// Accepted `aud` values (the claim is then required).
    pub audience: Option<Vec<Spanned<String>>>,
    /// Clock skew allowed on `exp` and `nbf` (default "30s").
    pub leeway: Option<Spanned<String>>,
    /// Claim naming the consumer (default "sub"), matched against `jwt_subjects`.
    pub consumer_claim: Option<Spanned<String>>,
    /// Claims forwarded upstream as `x-strangler-claim-<name>`.
    pub forward_claims: Option<Vec<Spanned<String>>>,
}

/// `auth = "jwt"` or `auth = ["api-key", "jwt"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawAuthMethods {
    One(String),
    Any(Vec<String>),
}

/// `claims = { scope = "orders:read", role = ["admin", "ops"] }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawClaimValues {
    One(String),
    Any(Vec<String>),
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
    /// The longest a client may take to send a request head (request line and headers), from
    /// the connection's accept for its first request and from the first byte of each later one;
    /// past it the gateway answers 408 and closes (default "60s", like nginx's
    /// `client_header_timeout`; "0s" = no deadline).
    pub client_header_timeout: Option<Spanned<String>>,
    /// How long a kept-alive HTTP/1 connection may stay silent between requests (from the end
    /// of a response to the first byte of the next request) before the gateway closes it,
    /// without a response (default "75s", like nginx's `keepalive_timeout`; "0s" = never).
    pub client_keepalive_timeout: Option<Spanned<String>>,
    /// Connections one client address (an IPv6 /64) may hold open at once; one more is answered
    /// 503 and closed (default 512; 0 = no cap). Addresses in `trusted_proxies` are not capped.
    pub max_connections_per_client: Option<Spanned<i64>>,
    /// Largest request body accepted, in bytes (default 16 MiB; 0 = no limit). A declared
    /// Content-Length over it gets 413 before any upstream is contacted; a chunked body that
    /// grows past it is cut off (413 when nothing was answered yet). Routes may set their own.
    pub max_body_bytes: Option<Spanned<i64>>,
    /// "on" (default) | "off". On: an HTTP/1 request body (chunked or with a Content-Length)
    /// is read and its framing checked, up to 32 KiB, before any upstream is contacted, so a
    /// malformed body gets 400 and one over `max_body_bytes` 413 with the upstream never seeing
    /// the request (nginx's `proxy_request_buffering`). A larger body streams on after its
    /// first 32 KiB (a later framing error aborts the upstream request). Routes may set their own.
    pub request_buffering: Option<Spanned<String>>,
    /// Whole-request deadline for routes without their own `timeout` (default "30s").
    pub request_timeout: Option<Spanned<String>>,
    /// WebSocket and server-sent-event streams: silence (in either direction) allowed before the
    /// stream is ended, for routes without their own (default "60s").
    pub stream_idle_timeout: Option<Spanned<String>>,
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
    /// Dedicated shadow threads, each running its own single-threaded runtime; a route's mirrors
    /// run on one of them (default 1).
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
    /// Accept cleartext HTTP/2 with prior knowledge (h2c) on `listen` (default false).
    pub h2c: Option<bool>,
    /// The HTTPS listener.
    pub tls: Option<Spanned<RawTls>>,
    /// One line per request; off when absent.
    pub access_log: Option<RawAccessLog>,
    /// Where rollout state and history are kept (default: `.strangler/` beside routes.toml;
    /// restart to change).
    pub rollout_state_dir: Option<String>,
    /// Where rollout state lives: "file" (default; one gateway, in `rollout_state_dir`) or
    /// "postgres" (several replicas share it: one leads, all serve the same step; restart to
    /// change).
    pub rollout_store: Option<Spanned<String>>,
    /// With `rollout_store = "postgres"`: the environment variable holding the connection string
    /// (a libpq "host=... dbname=..." string or a postgres:// URL). Never written in this file,
    /// never logged.
    pub rollout_store_url_env: Option<Spanned<String>>,
    /// Proxies whose `X-Forwarded-For` is believed for the client IP (rate limits per IP):
    /// addresses or CIDR networks, e.g. ["10.0.0.0/8"]. None by default.
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    /// Redis for rate limits shared by several gateways (`shared = true`); restart to change.
    pub redis: Option<Spanned<RawRedis>>,
}

/// `[gateway.redis]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// "redis://host:port[/db]".
    pub url: Spanned<String>,
    /// The longest a request waits for Redis; past it the request is let through (default "5ms").
    pub budget: Option<Spanned<String>>,
    /// Prefix of the keys (default "strangler:rl").
    pub key_prefix: Option<String>,
}

/// One `[[routes.rate_limit]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// What is counted separately: "route" (default: one bucket for the route), "consumer",
    /// "ip", or a list (e.g. ["consumer", "ip"]).
    pub by: Option<Spanned<RawAuthMethods>>,
    /// Requests per second (or `rpm`).
    pub rps: Option<Spanned<i64>>,
    /// Requests per minute (or `rps`).
    pub rpm: Option<Spanned<i64>>,
    /// Requests allowed at once (default: the rate).
    pub burst: Option<Spanned<i64>>,
    /// Count in `[gateway.redis]`, shared by every gateway using it (default false: local).
    pub shared: Option<Spanned<bool>>,
}

/// `[gateway.access_log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// File appended to, or "-" for stdout (default "-"; restart to change).
    pub path: Option<String>,
    /// "json" (default) or "combined" (NCSA combined plus route, side, upstream and ids).
    pub format: Option<Spanned<String>>,
    /// Share of requests logged, 0.0–1.0 (default 1.0; 0 turns it off).
    pub sample: Option<Spanned<RawNumber>>,
}

/// `[gateway.tls]`: terminate TLS 1.2/1.3 for clients.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// HTTPS listen address, e.g. "0.0.0.0:8443" (restart to change).
    pub listen: Spanned<String>,
    /// Certificate/key pairs; the one whose names match the client's SNI is used, the first one
    /// when none does. Files are reloaded when they change.
    pub certificates: Vec<Spanned<RawCertificate>>,
    /// Offer HTTP/2 by ALPN (default true).
    pub http2: Option<bool>,
    /// Answer plain-HTTP requests on `listen` with a redirect to HTTPS (default false).
    pub redirect_http: Option<bool>,
}

/// One `{ cert = "...", key = "..." }` of `[gateway.tls] certificates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM certificate chain, leaf first.
    pub cert: Spanned<String>,
    /// PEM private key.
    pub key: Spanned<String>,
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
    /// "http1" (default); "h2": HTTP/2 only (by ALPN over TLS, with prior knowledge in
    /// cleartext: what gRPC services speak); "auto": over TLS, offer h2 and http/1.1 by ALPN.
    pub protocol: Option<Spanned<String>>,
    /// Connect with TLS (`tls = {}` for the defaults).
    pub tls: Option<Spanned<RawUpstreamTls>>,
    /// Requests in flight to this upstream at once; more get 503 at once (default 1000), so a
    /// stalled service cannot tie up the gateway.
    pub max_pending: Option<Spanned<i64>>,
}

/// `tls = { ... }` of an upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// Name sent as SNI and checked against the certificate (default: the endpoint's host name;
    /// required for IP-literal endpoints).
    pub sni: Option<Spanned<String>>,
    /// PEM file of the CAs to trust (default: the system's roots).
    pub ca_file: Option<Spanned<String>>,
    /// PEM client certificate chain, for mTLS (with `client_key`).
    pub client_cert: Option<Spanned<String>>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<Spanned<String>>,
    /// Verify the certificate and its name (default true).
    pub verify: Option<bool>,
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
    /// Consecutive failed probes before an endpoint is taken out of rotation (default 3).
    pub unhealthy_threshold: Option<Spanned<i64>>,
    /// Consecutive good probes before it is put back (default 2).
    pub healthy_threshold: Option<Spanned<i64>>,
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
///
/// The sections most routes leave out are boxed: a file is a `Vec` of these, grown one element
/// at a time as it is parsed, and with every section inline an element was several KiB (a
/// 10,000-route file spent a third of `check` copying and page-faulting that vector).
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
    /// WebSocket/SSE streams of this route: silence allowed before they are ended (default
    /// `[gateway] stream_idle_timeout`). `timeout` then covers only the time to the response head.
    pub stream_idle_timeout: Option<Spanned<String>>,
    /// Largest request body for this route, in bytes (default `[gateway] max_body_bytes`).
    pub max_body_bytes: Option<Spanned<i64>>,
    /// "on" | "off": buffer the start of request bodies before contacting the upstream
    /// (default `[gateway] request_buffering`).
    pub request_buffering: Option<Spanned<String>>,
    /// Retry policy (idempotent methods only).
    pub retry: Option<Box<RawRetry>>,
    /// Shadow traffic settings (stage "shadow", or "canary" with `on_canary = true`).
    pub shadow: Option<Box<Spanned<RawShadow>>>,
    /// Compress responses for clients that accept it (gzip, brotli or zstd); off when absent.
    pub compression: Option<Box<RawCompression>>,
    /// A progressive rollout: steps the route moves through on evidence; the route's own
    /// `stage`/`weight` then cap how far it may go.
    pub rollout: Option<Box<Spanned<RawRollout>>>,
    /// "none" (default), "api-key", "jwt", or a list of those accepted (any one suffices).
    pub auth: Option<Box<Spanned<RawAuthMethods>>>,
    /// Consumers allowed (others get 403); any authenticated caller when absent.
    pub consumers: Option<Vec<Spanned<String>>>,
    /// JWT claims required, each with the values accepted.
    pub claims: Option<Box<Spanned<BTreeMap<String, RawClaimValues>>>>,
    /// Send the credential (Authorization / the API key header) upstream too (default false).
    pub forward_credentials: Option<bool>,
    /// Rate limits; every one must let a request through.
    pub rate_limit: Option<Vec<Spanned<RawRateLimit>>>,
    /// CORS: preflights answered by the gateway, headers added for allowed origins.
    pub cors: Option<Box<Spanned<RawCors>>>,
    /// Path and header rewrites per side.
    pub rewrite: Option<Box<RawRewrites>>,
    /// The team or person owning the route (shown by `check`, the admin API, a metric label).
    pub owner: Option<Spanned<String>>,
    /// Free text shown by `check` and the admin API.
    pub description: Option<String>,
    /// Free-form `key = "value"` pairs shown by `check` and the admin API.
    pub labels: Option<BTreeMap<String, String>>,
}

/// `[routes.rollout]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// In order of exposure, e.g. `[{ stage = "shadow", duration = "30m" }, { stage = "canary",
    /// weight = 5, duration = "15m" }, { stage = "extracted" }]`.
    pub steps: Vec<Spanned<RawStep>>,
    /// Time between two analyses (default "30s").
    pub interval: Option<Spanned<String>>,
    /// Consecutive failed analyses before the route rolls back and pauses (default 3).
    pub failure_limit: Option<Spanned<i64>>,
    /// The evidence a step needs; every gate is optional.
    pub gates: Option<RawGates>,
}

/// One step of a rollout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// "shadow" | "canary" | "extracted".
    pub stage: Spanned<String>,
    /// Canary steps: percent to the extracted upstream.
    pub weight: Option<Spanned<i64>>,
    /// How long the step runs before promotion (every step but the last).
    pub duration: Option<Spanned<String>>,
}

/// `[routes.rollout.gates]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGates {
    /// `{ min = 0.99, min_comparisons = 100 }`: shadow match rate.
    pub match_rate: Option<Spanned<RawMatchRateGate>>,
    /// `{ max_delta = 0.01, min_requests = 100 }`: extracted 5xx rate vs legacy's.
    pub error_rate: Option<Spanned<RawErrorRateGate>>,
    /// `{ max_ratio = 1.5, min_requests = 100 }`: extracted p99 vs legacy's.
    pub latency: Option<Spanned<RawLatencyGate>>,
    /// `{ status = ["http://127.0.0.1:9903/status"], max = "10s" }`: cdc-sync lag.
    pub cdc_lag: Option<Spanned<RawCdcLagGate>>,
    /// `{ url = "http://127.0.0.1:9090", query = "...", min = 0.0, max = 0.05 }`.
    pub prometheus: Option<Spanned<RawPrometheusGate>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatchRateGate {
    pub min: Spanned<RawNumber>,
    pub min_comparisons: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawErrorRateGate {
    pub max_delta: Spanned<RawNumber>,
    pub min_requests: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLatencyGate {
    pub max_ratio: Spanned<RawNumber>,
    pub min_requests: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCdcLagGate {
    pub status: Vec<Spanned<String>>,
    pub max: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrometheusGate {
    pub url: Spanned<String>,
    pub query: Spanned<String>,
    pub min: Option<Spanned<RawNumber>>,
    pub max: Option<Spanned<RawNumber>>,
}

/// `[routes.rewrite]`: one table per side.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrites {
    /// Requests to (and answers from) the legacy upstream.
    pub legacy: Option<RawSideRewrite>,
    /// Requests to (and answers from) the extracted upstream, the shadow mirror included.
    pub extracted: Option<RawSideRewrite>,
}

/// `[routes.rewrite.legacy]` / `[routes.rewrite.extracted]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSideRewrite {
    /// New path from the match's parameters, e.g. "/products/{id}" (`{**}`: what `/**` matched).
    pub path: Option<Spanned<String>>,
    /// Removed from the front of the path when present.
    pub strip_prefix: Option<Spanned<String>>,
    /// Put in front of the path (after `strip_prefix`).
    pub add_prefix: Option<Spanned<String>>,
    /// Headers of the request sent to this side.
    pub request_headers: Option<RawHeaderOps>,
    /// Headers of this side's answer.
    pub response_headers: Option<RawHeaderOps>,
}

/// `{ set = {..}, add = {..}, remove = [..] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderOps {
    /// Replace (or create) these headers.
    pub set: Option<BTreeMap<String, Spanned<String>>>,
    /// Append these values.
    pub add: Option<BTreeMap<String, Spanned<String>>>,
    /// Remove these headers.
    pub remove: Option<Vec<Spanned<String>>>,
}

/// `[routes.cors]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Allowed origins ("https://shop.example.com"), or ["*"] for any (not with credentials).
    pub allow_origins: Vec<Spanned<String>>,
    /// Allowed methods (default: the route's `methods`, else GET, HEAD, POST).
    pub allow_methods: Option<Vec<Spanned<String>>>,
    /// Request headers allowed (default: whatever the preflight asks for).
    pub allow_headers: Option<Vec<Spanned<String>>>,
    /// Response headers the browser may read.
    pub expose_headers: Option<Vec<Spanned<String>>>,
    /// Allow cookies and credentials (default false).
    pub allow_credentials: Option<bool>,
    /// How long a browser may cache a preflight answer, e.g. "10m".
    pub max_age: Option<Spanned<String>>,
}

/// `[routes.compression]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    /// Compression level, 1–9 (default 5).
    pub level: Option<Spanned<i64>>,
    /// Responses with a declared length below this are sent as they are (default 1024).
    pub min_bytes: Option<Spanned<i64>>,
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
    /// Host: "api.example.com" or "*.example.com" (any name under it); any host when absent.
    pub host: Option<Spanned<String>>,
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
