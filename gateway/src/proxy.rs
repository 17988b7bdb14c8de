//! The Pingora `ProxyHttp` implementation: validate, route, pick a side and an endpoint, add
//! forwarding headers, enforce the per-route deadline, retry/fall back, map failures to JSON.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompression;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::access_log::{self, AccessLog};
use crate::admission;
use crate::cors;
use crate::forwarding::{
    self, has_hop_by_hop, has_internal_headers, is_websocket_value, strip_internal_headers, Forwarding, TRACEPARENT,
    X_REQUEST_ID,
};
use crate::limits::LimitService;
use crate::metrics::metrics;
use crate::reload::ConfigStore;
use crate::request_buffer;
use crate::respond::{https_location, redirect, reply, respond_json, Reply};
use crate::shadow::capture::{self, ShadowHook};
use crate::shadow::ShadowService;
use crate::stage::Side;
use crate::table::{AccessLogFormat, Endpoint, RouteTable};
use crate::telemetry::{new_request_id_value, span_sink, SpanRecord, TraceContext};
use crate::validate::check_request;

/// Per-request state.
pub struct RequestCtx {
    /// The snapshot this request started with; reloads never change it mid-request.
    pub table: Option<Arc<RouteTable>>,
    pub route: Option<usize>,
    pub side: Side,
    pub started: Instant,
    pub deadline: Instant,
    /// Endpoint of the current attempt (in-flight count held).
    pub endpoint: Option<Arc<Endpoint>>,
    pub upstream: usize,
    pub retries: u32,
    pub fell_back: bool,
    /// `upstream_response_filter` turned a 5xx into a retry that was already granted.
    retry_granted: bool,
    pub request_id: Option<HeaderValue>,
    pub trace: Option<TraceContext>,
    /// The client connection is TLS.
    pub tls: bool,
    /// The request had both Content-Length and Transfer-Encoding (seen in `early_request_filter`).
    pub smuggling: bool,
    /// The request may open a long-lived stream (WebSocket upgrade, or it accepts
    /// `text/event-stream`), and the silence it may keep.
    pub stream_idle: Option<Duration>,
    /// The response is such a stream (101, or `text/event-stream`): the request deadline no
    /// longer applies, only the idle timeout.
    pub streaming: bool,
    /// When the upstream's response head arrived (for the access log).
    pub upstream_header_at: Option<Instant>,
    /// Largest request body for this request's route, and the bytes of it seen so far.
    pub body_limit: u64,
    pub body_seen: u64,
    /// Set when this request is mirrored (see [`ShadowHook`]).
    pub shadow: Option<ShadowHook>,
    /// The consumer the request authenticated as (index into the table's consumers).
    pub consumer: Option<usize>,
    /// `Access-Control-Allow-Origin` for an allowed cross-origin request on a CORS route.
    pub cors_origin: Option<HeaderValue>,
}

/// The gateway's proxy logic.
pub struct GatewayProxy {
    pub store: Arc<ConfigStore>,
    /// Mirrors, compares and reports (queues and reports by route name).
    pub shadow: Arc<ShadowService>,
    /// One line per request, when `[gateway.access_log]` was configured at start.
    pub access_log: Option<Arc<AccessLog>>,
    /// Rate limit buckets (local, and the Redis connection when configured at start).
    pub limits: Arc<LimitService>,
}

/// The access log line of a finished request.
fn access_entry(
    session: &Session,
    ctx: &RequestCtx,
    table: &RouteTable,
    status: u16,
    elapsed: Duration,
    peer: Option<std::net::SocketAddr>,
    e: Option<&Error>,
) -> access_log::Entry {
    let req = session.req_header();
    let header = |name: header::HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let route = ctx.route.map(|i| &table.routes[i]);
    access_log::Entry {
        time: access_log::rfc3339_now(),
        client: session.client_addr().and_then(|a| a.as_inet()).copied(),
        method: req.method.to_string(),
        target: String::from_utf8_lossy(req.raw_path()).into_owned(),
        protocol: match req.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2.0",
            _ => "HTTP/1.1",
        },
        host: header(header::HOST),
        status,
        bytes_received: session.as_ref().body_bytes_read(),
        bytes_sent: session.as_ref().body_bytes_sent(),
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        upstream_header_ms: ctx.upstream_header_at.map(|t| (t - ctx.started).as_secs_f64() * 1000.0),
        route: route.map(|r| r.name.clone()),
        stage: route.map(|r| r.stage.as_str()),
        side: ctx.side.as_str(),
        upstream: peer,
        request_id: ctx.request_id.as_ref().and_then(|v| v.to_str().ok()).map(str::to_string),
        trace_id: ctx.trace.map(|t| format!("{:032x}", t.trace_id)),
        user_agent: header(header::USER_AGENT),
        referer: header(header::REFERER),
        error: e.map(error_kind),
    }
}

/// The error a request to an upstream at its `max_pending` ends with (503).
const UPSTREAM_OVERLOADED: &str = "upstream_overloaded";

/// The error a request body over its route's `max_body_bytes` ends the request with.
const BODY_TOO_LARGE: &str = "body_too_large";

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// The client asks for server-sent events (the request's first `Accept`).
fn accepts_event_stream(accept: Option<&HeaderValue>) -> bool {
    accept.is_some_and(|v| v.as_bytes().windows(17).any(|w| w.eq_ignore_ascii_case(b"text/event-stream")))
}

fn error_kind(e: &Error) -> &'static str {
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError => "connect",
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
        ErrorType::HTTPStatus(_) => "5xx",
        _ => "other",
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Connect failed or the connection broke before a response: fallback or retry.
    Transport,
    /// The upstream answered with this 5xx status.
    Status(u16),
}

impl GatewayProxy {
    /// Decides (and books) one more attempt for an idempotent request. Fallback to legacy comes
    /// first; then the route's retry policy, within its budget and the request deadline.
    fn grant_retry(&self, session: &Session, ctx: &mut RequestCtx, failure: Failure) -> bool {
        let (Some(table), Some(ri)) = (ctx.table.as_ref(), ctx.route) else { return false };
        if !is_idempotent(&session.req_header().method) || session.as_ref().retry_buffer_truncated() {
            return false;
        }
        if session.response_written().is_some() || Instant::now() >= ctx.deadline {
            return false;
        }
        let route = &table.routes[ri];
        let m = metrics();
        if ctx.side == Side::Extracted && route.fallback_legacy && !ctx.fell_back {
            // the extracted attempt failed: count it on its side (rollout gates judge the
            // extracted service by it), though legacy will answer the client
            let status = match failure {
                Failure::Status(s) => s,
                Failure::Transport => 502,
            };
            route.metrics.observe(Side::Extracted, status, ctx.started.elapsed().as_secs_f64());
            ctx.fell_back = true;
            ctx.side = Side::Legacy;
            m.retries.with_label_values(&[route.name.as_str(), "fallback"]).inc();
            return true;
        }
        let eligible = match failure {
            Failure::Transport => true,
            Failure::Status(s) => route.retry.on_5xx && (502..=504).contains(&s),
        };
        if eligible && ctx.retries < route.retry.attempts && route.take_retry() {
            ctx.retries += 1;
            m.retries.with_label_values(&[route.name.as_str(), "retry"]).inc();
            return true;
        }
        false
    }

    fn note_upstream_failure(&self, ctx: &RequestCtx, kind: &str) {
        if let Some(t) = &ctx.table {
            let u = &t.upstreams[ctx.upstream];
            metrics().upstream_errors.with_label_values(&[u.name.as_str(), kind]).inc();
            if let Some(ep) = &ctx.endpoint {
                if kind != "timeout" && ep.record_failure(&u.eject) {
                    metrics().ejections.with_label_values(&[u.name.as_str()]).inc();
                    tracing::warn!(upstream = %u.name, endpoint = %ep.addr, "endpoint ejected after consecutive failures");
                }
            }
        }
    }

    fn release_endpoint(ctx: &mut RequestCtx) {
        if let Some(ep) = ctx.endpoint.take() {
            ep.inflight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        let now = Instant::now();
        RequestCtx {
            table: None,
            route: None,
            side: Side::Legacy,
            started: now,
            deadline: now + Duration::from_secs(30),
            endpoint: None,
            upstream: 0,
            retries: 0,
            fell_back: false,
            retry_granted: false,
            request_id: None,
            trace: None,
            tls: false,
            smuggling: false,
            stream_idle: None,
            streaming: false,
            upstream_header_at: None,
            body_limit: u64::MAX,
            body_seen: 0,
            shadow: None,
            consumer: None,
            cors_origin: None,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        // RFC 9112 9.3.2: answer pipelined requests in order (Pingora closes after the first
        // one otherwise, dropping the rest).
        session.as_mut().set_pipelining_enabled(true);
        // Pingora drops Content-Length when Transfer-Encoding is present and turns keep-alive
        // off for that request; an HTTP/1.1 request with Transfer-Encoding whose keep-alive is
        // off without the client asking for it had both. nginx refuses those: so do we.
        // The compression module reads Accept-Encoding right after this callback, and only when
        // enabled: enable it when some route compresses; `response_filter` then sets the
        // route's level (0 for the others).
        let table = self.store.current();
        if table.any_compression {
            if let Some(m) = session.downstream_modules_ctx.get_mut::<ResponseCompression>() {
                m.adjust_level(1);
            }
        }
        ctx.table = Some(table);
        let req = session.req_header();
        if req.version == http::Version::HTTP_11
            && session.as_ref().get_keepalive().is_none()
            && req.headers.contains_key(header::TRANSFER_ENCODING)
            && !req
                .headers
                .get_all(header::CONNECTION)
                .iter()
                .any(|v| v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close")))
        {
            ctx.smuggling = true;
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // set in `early_request_filter`: `logging` (metrics, access log) also covers requests
        // answered here
        let table = match &ctx.table {
            Some(t) => t.clone(),
            None => {
                let t = self.store.current();
                ctx.table = Some(t.clone());
                t
            }
        };
        ctx.started = Instant::now();
        // The gateway owns x-strangler-*: nothing a client sends in that namespace reaches
        // routing, shadowing or an upstream.
        if has_internal_headers(&session.req_header().headers) {
            strip_internal_headers(session.req_header_mut());
        }
        let req = session.req_header();
        // one pass over the headers checks them and picks out what is read below
        let checked = match ctx.smuggling {
            true => Err((400, "bad_request", "both Content-Length and Transfer-Encoding")),
            false => check_request(req, table.settings.max_header_bytes),
        };
        let client_id = match &checked {
            Ok(seen) => seen.request_id,
            Err(_) => req.headers.get(&X_REQUEST_ID),
        };
        ctx.request_id = match client_id {
            Some(v) if !v.is_empty() && v.len() <= 200 => Some(v.clone()),
            _ => Some(new_request_id_value()),
        };
        let (mut traceparent, declared, mut long_lived) = match checked {
            Ok(seen) => (
                seen.traceparent.cloned(),
                seen.declared_length(),
                is_websocket_value(seen.upgrade) || accepts_event_stream(seen.accept),
            ),
            Err((status, code, msg)) => {
                let rid = ctx.request_id.clone();
                respond_json(session, status, code, msg, rid.as_ref()).await;
                return Ok(true);
            }
        };
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        if let Some(tls) = table.settings.tls.as_ref().filter(|t| t.redirect_http && !ctx.tls) {
            let location = https_location(session.req_header(), tls.listen.port());
            redirect(session, &location, ctx.request_id.as_ref()).await;
            return Ok(true);
        }
        let req = session.req_header();
        let path = std::str::from_utf8(req.raw_path()).unwrap_or("/");
        let path = path.split('?').next().unwrap_or(path);
        let host = match table.router.has_hosts() {
            true => req.headers.get(header::HOST).and_then(|h| h.to_str().ok()).or(req.uri.host()),
            false => None,
        };
        ctx.route = table.find(host, path, &req.method, &req.headers);
        if let Some(asked) = cors::preflight_method(&req.method, &req.headers) {
            // a preflight is the gateway's to answer, for the route the real request would take
            let route = ctx.route.filter(|&i| table.routes[i].cors.is_some());
            let route = route
                .or_else(|| table.find(host, path, &asked, &req.headers))
                .or_else(|| table.find(host, path, &Method::GET, &req.headers));
            if let Some(policy) = route.and_then(|i| table.routes[i].cors.as_deref()) {
                ctx.route = route;
                let r = match policy.preflight(&asked, &req.headers) {
                    Some(headers) => Reply { headers, ..Reply::new(204, "", "") },
                    None => Reply::new(403, "cors_rejected", "this cross-origin request is not allowed"),
                };
                let rid = ctx.request_id.clone();
                reply(session, &r, rid.as_ref()).await;
                return Ok(true);
            }
        }
        if let Some(policy) = ctx.route.and_then(|i| table.routes[i].cors.as_deref()) {
            ctx.cors_origin = policy.allow_origin(req.headers.get(header::ORIGIN));
        }
        ctx.body_limit = ctx.route.map_or(table.settings.max_body_bytes, |i| table.routes[i].max_body_bytes);
        if declared.is_some_and(|n| n > ctx.body_limit) {
            let rid = ctx.request_id.clone();
            let msg = "the request body is larger than this route accepts";
            respond_json(session, 413, "payload_too_large", msg, rid.as_ref()).await;
            return Ok(true);
        }
        if let Some(i) = ctx.route.filter(|&i| table.routes[i].admits()) {
            let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
            match admission::admit(&table, i, session.req_header_mut(), peer, &self.limits).await {
                Ok(a) => {
                    ctx.consumer = a.consumer;
                    // admission may remove and add headers: read again what is read below
                    let h = &session.req_header().headers;
                    traceparent = h.get(&TRACEPARENT).cloned();
                    long_lived =
                        is_websocket_value(h.get(header::UPGRADE)) || accepts_event_stream(h.get(header::ACCEPT));
                }
                Err(mut r) => {
                    // a browser must be able to read why (401, 403, 429)
                    if let (Some(o), Some(p)) = (&ctx.cors_origin, table.routes[i].cors.as_deref()) {
                        r.headers.extend(p.response_headers(o));
                    }
                    let rid = ctx.request_id.clone();
                    reply(session, &r, rid.as_ref()).await;
                    return Ok(true);
                }
            }
        }
        let req = session.req_header();
        let timeout = match ctx.route {
            Some(i) => {
                let route = &table.routes[i];
                ctx.side = route.pick_side(&req.headers);
                if route.shadow.is_some() {
                    if let Some(rs) = self.shadow.route(&table, i) {
                        ctx.shadow = capture::start(rs, route.to, ctx.side, req);
                    }
                }
                route.note_request();
                route.timeout
            }
            None => table.settings.request_timeout,
        };
        // validation bounds timeouts, but no config may make a request panic on overflow
        ctx.deadline = ctx.started.checked_add(timeout).unwrap_or_else(|| ctx.started + crate::config::MAX_DURATION);
        ctx.trace = Some(TraceContext::continue_or_start(traceparent.as_ref().map(|v| v.as_bytes())));
        if long_lived {
            let idle = ctx.route.map_or(table.settings.stream_idle_timeout, |i| table.routes[i].stream_idle_timeout);
            ctx.stream_idle = Some(idle);
            // a silent client must not be cut off by the default 60 s read timeout either
            session.set_read_timeout(Some(idle));
            session.set_write_timeout(Some(idle));
        }
        // a malformed or too large body is refused before the upstream is contacted
        let buffering = ctx.route.map_or(table.settings.request_buffering, |i| table.routes[i].request_buffering);
        let rid = ctx.request_id.clone();
        Ok(request_buffer::refused(session, buffering, ctx.body_limit, ctx.deadline, rid.as_ref()).await)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let Some(table) = ctx.table.clone() else {
            return Err(Error::new_in(ErrorType::InternalError));
        };
        let remaining = ctx.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Error::new_up(ErrorType::ReadTimedout));
        }
        let idx = match (ctx.side, ctx.route.and_then(|r| table.routes[r].to)) {
            (Side::Extracted, Some(to)) => to,
            _ => {
                ctx.side = Side::Legacy;
                table.legacy
            }
        };
        ctx.upstream = idx;
        let upstream = &table.upstreams[idx];
        // a retry goes to another endpoint of the upstream when there is one
        let previous = ctx.endpoint.as_ref().map(|e| e.addr);
        Self::release_endpoint(ctx);
        if upstream.pending() >= upstream.max_pending {
            metrics().upstream_errors.with_label_values(&[upstream.name.as_str(), "overloaded"]).inc();
            return Err(Error::explain(ErrorType::Custom(UPSTREAM_OVERLOADED), "max_pending reached"));
        }
        let Some(ep) = upstream.select_avoiding(previous) else {
            return Err(Error::new_up(ErrorType::ConnectNoRoute));
        };
        ep.inflight.fetch_add(1, Ordering::Relaxed);
        let mut peer = match &upstream.tls {
            None => HttpPeer::new(ep.addr, false, String::new()),
            Some(tls) => {
                // SNI: the configured name, else the endpoint's host name
                let host = ep.host.as_deref().and_then(|h| h.rsplit_once(':')).map(|(h, _)| h);
                let sni = tls.sni.as_deref().or(host).unwrap_or_default().to_string();
                let mut p = HttpPeer::new(ep.addr, true, sni);
                p.options.verify_cert = tls.verify;
                p.options.verify_hostname = tls.verify;
                p.options.ca = tls.ca.clone();
                p.client_cert_key = tls.client.clone();
                p
            }
        };
        let (max, min) = upstream.protocol.versions();
        peer.options.set_http_version(max, min);
        ctx.endpoint = Some(Arc::clone(ep));
        let o = &mut peer.options;
        o.connection_timeout = Some(upstream.connect_timeout.min(remaining));
        // a stream may stay silent up to its idle timeout; the head is still held to the
        // deadline by `upstream_response_filter` (a late head is refused there)
        let read = ctx.stream_idle.unwrap_or_else(|| upstream.read_timeout.min(remaining));
        o.read_timeout = Some(read);
        o.write_timeout = Some(read);
        o.idle_timeout = Some(upstream.idle_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if has_hop_by_hop(&req.headers) {
            forwarding::strip_hop_by_hop(req);
        }
        let client_ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let trusted = ctx.table.as_ref().map_or(&[][..], |t| &t.settings.trusted_proxies[..]);
        let forwarding = Forwarding {
            client_ip,
            tls: ctx.tls,
            from_trusted_proxy: client_ip.is_some_and(|ip| trusted.iter().any(|c| c.contains(ip))),
            request_id: ctx.request_id.as_ref(),
            traceparent: ctx.trace.map(|t| t.to_header()),
        };
        forwarding::add_forwarding_headers(req, forwarding)?;
        if let Some(rw) = ctx.table.as_ref().zip(ctx.route).and_then(|(t, i)| t.routes[i].rewrite.as_deref()) {
            if let Some(side) = rw.side(ctx.side) {
                side.apply_request(req);
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        let now = Instant::now();
        ctx.upstream_header_at = Some(now);
        if ctx.stream_idle.is_some() {
            let event_stream =
                resp.headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            ctx.streaming = status == 101 || event_stream;
            if now > ctx.deadline {
                return Err(Error::new_up(ErrorType::ReadTimedout));
            }
        }
        if status >= 500 {
            self.note_upstream_failure(ctx, "5xx");
            if self.grant_retry(session, ctx, Failure::Status(status)) {
                ctx.retry_granted = true;
                let mut e = Error::explain(ErrorType::HTTPStatus(status), "retrying after upstream 5xx");
                e.esource = ErrorSource::Upstream;
                e.set_retry(true);
                return Err(e);
            }
        } else if let Some(ep) = &ctx.endpoint {
            ep.record_success();
        }
        let strip = resp.headers.keys().any(|k| {
            *k == header::UPGRADE
                || *k == header::TRAILER
                || *k == header::PROXY_AUTHENTICATE
                || k.as_str() == "keep-alive"
                || k.as_str() == "proxy-connection"
        });
        if strip {
            for h in ["keep-alive", "proxy-connection", "proxy-authenticate", "trailer"] {
                resp.remove_header(h);
            }
            if status != 101 {
                resp.remove_header("upgrade");
            }
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        // the per-read timeout cannot express a whole-request deadline for slow bodies; a
        // WebSocket or event stream is held only to its idle timeout once its head arrived
        if !ctx.streaming && Instant::now() > ctx.deadline {
            return Err(Error::new_up(ErrorType::ReadTimedout));
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id {
            forwarding::add_response_request_id(resp, id)?;
        }
        if let Some(rw) = ctx.table.as_ref().zip(ctx.route).and_then(|(t, i)| t.routes[i].rewrite.as_deref()) {
            if let Some(side) = rw.side(ctx.side) {
                side.apply_response(resp);
            }
        }
        if let Some(p) = ctx.table.as_ref().zip(ctx.route).and_then(|(t, i)| t.routes[i].cors.as_deref()) {
            match &ctx.cors_origin {
                Some(origin) => {
                    for (k, v) in p.response_headers(origin) {
                        if k == header::VARY {
                            resp.append_header(k, v)?;
                        } else {
                            resp.insert_header(k, v)?;
                        }
                    }
                }
                // the answer depends on Origin also when this one gets no CORS headers (another
                // origin, or none): a shared cache must not hand it to an allowed origin
                None if !p.any_origin => {
                    resp.append_header(header::VARY, HeaderValue::from_static("Origin"))?;
                }
                None => {}
            }
        }
        // Pingora's compression module (every proxy service has it, level 0 = off) compresses by the
        // client's Accept-Encoding when the route asks for it and the body is large enough.
        if ctx.table.as_ref().is_some_and(|t| t.any_compression) {
            let compression = ctx.table.as_ref().zip(ctx.route).and_then(|(t, i)| t.routes[i].compression);
            let level = match compression {
                Some(c) if !ctx.streaming => {
                    let small = resp
                        .headers
                        .get(header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .is_some_and(|n| n < c.min_bytes);
                    if small {
                        0
                    } else {
                        c.level
                    }
                }
                _ => 0,
            };
            if let Some(m) = session.downstream_modules_ctx.get_mut::<ResponseCompression>() {
                m.adjust_level(level);
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.note_upstream_failure(ctx, "connect");
        let retry = !matches!(e.etype(), ErrorType::ConnectTimedout if Instant::now() >= ctx.deadline)
            && self.grant_retry(session, ctx, Failure::Transport);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if std::mem::take(&mut ctx.retry_granted) {
            e.set_retry(true);
            return e;
        }
        if *e.esource() == ErrorSource::Downstream {
            e.set_retry(false);
            return e;
        }
        let idempotent = is_idempotent(&session.req_header().method);
        if !idempotent || session.as_ref().retry_buffer_truncated() {
            e.set_retry(false);
            return e;
        }
        // a stale pooled connection: Pingora's own safe retry, not counted against the budget
        e.retry.decide_reuse(client_reused);
        if e.retry() {
            return e;
        }
        let timeout = matches!(e.etype(), ErrorType::ReadTimedout | ErrorType::WriteTimedout);
        self.note_upstream_failure(ctx, if timeout { "timeout" } else { "other" });
        let retry = !timeout && self.grant_retry(session, ctx, Failure::Transport);
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let (status, code, msg) = match (e.esource(), e.etype()) {
            _ if request_buffer::is_framing_error(e) => (400, "bad_request", "the request body is malformed"),
            (_, ErrorType::Custom(UPSTREAM_OVERLOADED)) => {
                (503, "upstream_overloaded", "the upstream service has too many requests in flight")
            }
            (_, ErrorType::Custom(BODY_TOO_LARGE)) => {
                (413, "payload_too_large", "the request body is larger than this route accepts")
            }
            (_, ErrorType::HTTPStatus(s)) if *s >= 500 => (502, "bad_gateway", "the upstream service failed"),
            (_, ErrorType::HTTPStatus(s)) => (*s, "bad_request", "the request was rejected"),
            (ErrorSource::Downstream, ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed) => {
                (0, "", "")
            }
            (ErrorSource::Downstream, ErrorType::ReadTimedout) => {
                (408, "request_timeout", "the request was not received in time")
            }
            (ErrorSource::Downstream, _) => (400, "bad_request", "the request could not be read"),
            (_, ErrorType::ReadTimedout | ErrorType::WriteTimedout | ErrorType::ConnectTimedout) => {
                (504, "gateway_timeout", "the upstream service did not answer in time")
            }
            (ErrorSource::Upstream, _) => (502, "bad_gateway", "the upstream service failed to answer"),
            _ => (500, "internal_error", "the gateway failed to process the request"),
        };
        if let Some(written) = session.response_written() {
            return FailToProxy { error_code: written.status.as_u16(), can_reuse_downstream: false };
        }
        if status > 0 {
            let rid = ctx.request_id.clone();
            respond_json(session, status, code, msg, rid.as_ref()).await;
        }
        FailToProxy { error_code: status, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let peer = ctx.endpoint.as_ref().map(|ep| ep.addr);
        Self::release_endpoint(ctx);
        let Some(table) = ctx.table.as_ref() else { return };
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
        let m = match ctx.route {
            Some(i) => &table.routes[i].metrics,
            None => &table.default_metrics,
        };
        let elapsed = ctx.started.elapsed();
        m.observe(ctx.side, status, elapsed.as_secs_f64());
        if let (Some(sink), Some(trace)) = (span_sink(), ctx.trace) {
            let end = std::time::SystemTime::now();
            sink.record(SpanRecord {
                trace,
                start: end - elapsed,
                end,
                method: session.req_header().method.clone(),
                status,
                table: Some(Arc::clone(table)),
                route: ctx.route,
                side: ctx.side,
                upstream: peer.map(|_| ctx.upstream),
                peer,
            });
        }
        if let Some(e) = e {
            tracing::debug!(request_id = ?ctx.request_id, kind = error_kind(e), "request failed: {e}");
        }
        if let Some(log) = &self.access_log {
            let settings = table.settings.access_log.as_ref();
            if log.wants(settings) {
                let format = settings.map_or(AccessLogFormat::Json, |s| s.format);
                log.log(&access_entry(session, ctx, table, status, elapsed, peer, e), format);
            }
        }
        // One line per request at debug only (an info line per request costs real throughput);
        // carries the W3C trace id so gateway and service logs join on it.
        if tracing::enabled!(tracing::Level::DEBUG) {
            let trace_id = ctx.trace.map(|t| format!("{:032x}", t.trace_id)).unwrap_or_default();
            let route = ctx.route.map_or("default", |i| table.routes[i].name.as_str());
            tracing::debug!(
                trace_id = %trace_id,
                request_id = ?ctx.request_id,
                route,
                side = ?ctx.side,
                status,
                elapsed_ms = elapsed.as_secs_f64() * 1000.0,
                "request"
            );
        }
        if let Some(hook) = ctx.shadow.take() {
            capture::finish(hook, session, e.is_some(), ctx.started, table, ctx.route, ctx.request_id.as_ref());
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // failures are counted in metrics and logged at debug in `logging`
        true
    }

    // shadow capture: references to the chunks only (no copies); nothing for unshadowed requests

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(b) = body {
            ctx.body_seen += b.len() as u64;
            if ctx.body_seen > ctx.body_limit {
                // a chunked body that grew past the limit: abort the upstream request
                return Err(Error::explain(ErrorType::Custom(BODY_TOO_LARGE), "request body over max_body_bytes"));
            }
        }
        if let Some(hook) = ctx.shadow.as_mut() {
            hook.capture.request_chunk(body);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(hook) = ctx.shadow.as_mut() {
            hook.capture.response_chunk(body);
        }
        Ok(None)
    }
}
