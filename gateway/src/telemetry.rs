//! Logging setup, request ids and W3C trace context, and the OTLP export of one span per
//! request.

use std::sync::OnceLock;
use std::time::SystemTime;

use strangler_wire::traceparent::put_hex;
use strangler_wire::TraceParent;

use crate::metrics::metrics;
use crate::stage::Side;

/// Sets up `tracing` (and routes the `log` records Pingora emits into it). `RUST_LOG` wins.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,pingora=warn"));
    // Plain text when stderr is not a terminal (log files, journald, kubectl logs).
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// W3C trace context for one proxied request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_id: Option<u64>,
    pub flags: u8,
}

/// A fast per-thread generator (wyrand) for span ids: seeded once per thread from the OS-backed
/// `rand` generator; not for secrets, just for ids that must not collide.
fn fast_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(rand::random::<u64>());
    }
    STATE.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

fn rand_nonzero_u64() -> u64 {
    loop {
        let v = fast_u64();
        if v != 0 {
            return v;
        }
    }
}

impl TraceContext {
    /// Continues an incoming `traceparent` (new span id, incoming span as parent) or starts a
    /// new trace when it is absent or malformed.
    pub fn continue_or_start(incoming: Option<&[u8]>) -> Self {
        if let Some(tp) = incoming.and_then(TraceParent::parse) {
            return Self {
                trace_id: tp.trace_id,
                span_id: rand_nonzero_u64(),
                parent_id: Some(tp.parent_id),
                flags: tp.flags,
            };
        }
        let mut trace_id = (u128::from(fast_u64()) << 64) | u128::from(fast_u64());
        if trace_id == 0 {
            trace_id = 1;
        }
        Self { trace_id, span_id: rand_nonzero_u64(), parent_id: None, flags: 1 }
    }

    /// The `traceparent` value to send upstream (this span as parent).
    pub fn header_value(&self) -> String {
        String::from_utf8_lossy(&self.header_bytes()).into_owned()
    }

    /// [`Self::header_value`] as a header value, formatted without `fmt`.
    pub fn to_header(&self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(&self.header_bytes()).expect("hex and dashes are a valid header value")
    }

    fn header_bytes(&self) -> [u8; 55] {
        TraceParent { trace_id: self.trace_id, parent_id: self.span_id, flags: self.flags }.to_bytes()
    }
}

/// A new request id: 32 lowercase hex digits.
pub fn new_request_id() -> String {
    String::from_utf8_lossy(&request_id_bytes()).into_owned()
}

/// [`new_request_id`] as a header value. The id is sent upstream and back to the client (two
/// clones): its bytes live in a shared allocation from the start (`Bytes::from_owner`), so a clone
/// is a reference count (a value made by `from_bytes` allocates again on its first clone).
pub fn new_request_id_value() -> http::HeaderValue {
    http::HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(request_id_bytes()))
        .expect("hex is a valid header value")
}

/// A random per-process prefix and a counter: unique within the process, unlikely to collide
/// across processes, and cheap (no RNG, no `fmt` per request).
fn request_id_bytes() -> [u8; 32] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut b = [0u8; 32];
    put_hex(&mut b, (u128::from(prefix) << 64) | u128::from(n));
    b
}

// ---------------------------------------------------------------------------------------------
// OpenTelemetry: one span per request, exported over OTLP/HTTP (protobuf). Off unless an
// endpoint is configured; then the request path only sends ids and timestamps into a bounded
// channel and a background thread builds, batches and exports the spans.
// ---------------------------------------------------------------------------------------------

/// What the request path records for one span. The span's ids are those of the request's
/// [`TraceContext`]: the trace id the client sent (or a new one) and the span id the gateway
/// forwarded upstream as `traceparent` parent-id, so the upstream's span is this span's child.
pub struct SpanRecord {
    pub trace: TraceContext,
    pub start: SystemTime,
    pub end: SystemTime,
    pub method: http::Method,
    /// Status sent to the client (0: none).
    pub status: u16,
    /// The snapshot and route the request used (names are read in the background).
    pub table: Option<std::sync::Arc<crate::table::RouteTable>>,
    pub route: Option<usize>,
    pub side: Side,
    pub upstream: Option<usize>,
    pub peer: Option<std::net::SocketAddr>,
}

/// The bounded hand-off from the request path to the exporter thread.
pub struct SpanSink {
    tx: std::sync::mpsc::SyncSender<SpanRecord>,
}

static SPANS: OnceLock<SpanSink> = OnceLock::new();

/// The span sink, when OTLP export is on. `None` (one atomic load) when it is off.
#[inline]
pub fn span_sink() -> Option<&'static SpanSink> {
    SPANS.get()
}

impl SpanSink {
    /// Queues a span; never blocks: when the queue is full the span is dropped and counted.
    pub fn record(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            metrics().spans_dropped.inc();
        }
    }
}

/// The OTLP/HTTP traces URL: `[gateway] otlp_endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT` (base
/// URLs, `/v1/traces` appended unless present), or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used
/// as is). `None`: export is off.
pub fn otlp_traces_url(configured: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let base = |b: &str| {
        let b = b.trim_end_matches('/');
        if b.ends_with("/v1/traces") {
            b.to_string()
        } else {
            format!("{b}/v1/traces")
        }
    };
    let nonempty = |v: &String| !v.trim().is_empty();
    if let Some(c) = configured.filter(|c| !c.trim().is_empty()) {
        return Some(base(c.trim()));
    }
    if let Some(t) = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").filter(nonempty) {
        return Some(t.trim().to_string());
    }
    env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(nonempty).map(|b| base(b.trim()))
}

/// Starts the exporter thread for `url` and turns span recording on. Call once, at start-up.
pub fn start_otlp_export(url: &str) -> anyhow::Result<()> {
    const QUEUE: usize = 8192;
    const BATCH: usize = 512;
    let (tx, rx) = std::sync::mpsc::sync_channel::<SpanRecord>(QUEUE);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let url = url.to_string();
    std::thread::Builder::new().name("otlp-export".into()).spawn(move || {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        use opentelemetry_sdk::trace::SpanExporter as _;
        let built = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(std::time::Duration::from_secs(5))
            .with_headers(Default::default())
            .build();
        let mut exporter = match built {
            Ok(e) => e,
            Err(e) => {
                let _ = ready_tx.send(Err(anyhow::anyhow!("cannot build the OTLP exporter for {url}: {e}")));
                return;
            }
        };
        exporter
            .set_resource(&opentelemetry_sdk::Resource::builder_empty().with_service_name("strangler-gateway").build());
        let scope = opentelemetry::InstrumentationScope::builder("strangler-gateway")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let _ = ready_tx.send(Ok(()));
        let mut failing = false;
        while let Ok(first) = rx.recv() {
            // gather a batch: whatever is queued, waiting at most 200 ms for more
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
            let mut batch = vec![first];
            while batch.len() < BATCH {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            let spans: Vec<_> = batch.into_iter().map(|r| span_data(r, &scope)).collect();
            let n = spans.len() as u64;
            match futures::executor::block_on(exporter.export(spans)) {
                Ok(()) => {
                    metrics().spans_exported.inc_by(n);
                    if std::mem::take(&mut failing) {
                        tracing::info!("OTLP span export to {url} works again");
                    }
                }
                Err(e) => {
                    metrics().spans_dropped.inc_by(n);
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!("OTLP span export to {url} failed: {e} (spans are dropped until it works)");
                    }
                }
            }
        }
    })?;
    ready_rx.recv().unwrap_or_else(|_| Err(anyhow::anyhow!("the OTLP exporter thread died")))?;
    let _ = SPANS.set(SpanSink { tx });
    Ok(())
}

fn span_data(r: SpanRecord, scope: &opentelemetry::InstrumentationScope) -> opentelemetry_sdk::trace::SpanData {
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry::KeyValue;
    let route = r.table.as_ref().zip(r.route).map(|(t, i)| &t.routes[i]);
    let pattern = route.map(|r| r.pattern.source.as_str());
    let name = match pattern {
        Some(p) => format!("{} {p}", r.method),
        None => r.method.to_string(),
    };
    let mut attributes = vec![
        KeyValue::new("http.request.method", r.method.to_string()),
        KeyValue::new("http.response.status_code", i64::from(r.status)),
        KeyValue::new("strangler.side", if r.side == Side::Extracted { "extracted" } else { "legacy" }),
    ];
    if let (Some(route), Some(p)) = (route, pattern) {
        attributes.push(KeyValue::new("http.route", p.to_string()));
        attributes.push(KeyValue::new("strangler.route", route.name.clone()));
    }
    if let Some(u) = r.table.as_ref().zip(r.upstream).and_then(|(t, i)| t.upstreams.get(i)) {
        attributes.push(KeyValue::new("strangler.upstream", u.name.clone()));
    }
    if let Some(peer) = r.peer {
        attributes.push(KeyValue::new("server.address", peer.ip().to_string()));
        attributes.push(KeyValue::new("server.port", i64::from(peer.port())));
    }
    let status = if r.status == 0 || r.status >= 500 {
        Status::error(if r.status == 0 { "no response".to_string() } else { format!("HTTP {}", r.status) })
    } else {
        Status::Unset
    };
    opentelemetry_sdk::trace::SpanData {
        span_context: SpanContext::new(
            TraceId::from(r.trace.trace_id),
            SpanId::from(r.trace.span_id),
            TraceFlags::new(r.trace.flags),
            false,
            TraceState::default(),
        ),
        parent_span_id: r.trace.parent_id.map(SpanId::from).unwrap_or(SpanId::INVALID),
        parent_span_is_remote: r.trace.parent_id.is_some(),
        span_kind: SpanKind::Server,
        name: name.into(),
        start_time: r.start,
        end_time: r.end,
        attributes,
        dropped_attributes_count: 0,
        events: Default::default(),
        links: Default::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_continued() {
        let incoming = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::continue_or_start(Some(incoming));
        assert_eq!(t.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(t.parent_id, Some(0x00f067aa0ba902b7));
        assert_ne!(t.span_id, 0x00f067aa0ba902b7);
        let v = t.header_value();
        assert!(v.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && v.ends_with("-01"), "{v}");
        assert_eq!(v, format!("00-{:032x}-{:016x}-01", t.trace_id, t.span_id));
        assert_eq!(t.to_header().to_str().unwrap(), v);
        assert_eq!(
            TraceParent::parse(v.as_bytes()),
            Some(TraceParent { trace_id: t.trace_id, parent_id: t.span_id, flags: 1 })
        );
    }

    #[test]
    fn otlp_url_from_config_or_env() {
        let none = |_: &str| None;
        assert_eq!(otlp_traces_url(None, none), None);
        assert_eq!(otlp_traces_url(Some(""), none), None);
        assert_eq!(otlp_traces_url(Some("http://c:4318"), none).as_deref(), Some("http://c:4318/v1/traces"));
        assert_eq!(otlp_traces_url(Some("http://c:4318/v1/traces"), none).as_deref(), Some("http://c:4318/v1/traces"));
        let env = |k: &str| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://e:4318/".to_string());
        assert_eq!(otlp_traces_url(None, env).as_deref(), Some("http://e:4318/v1/traces"));
        assert_eq!(otlp_traces_url(Some("http://c:1"), env).as_deref(), Some("http://c:1/v1/traces"), "the file wins");
        let traces = |k: &str| (k == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").then(|| "http://t:1/x".to_string());
        assert_eq!(otlp_traces_url(None, traces).as_deref(), Some("http://t:1/x"));
    }

    #[test]
    fn request_ids_are_hex_and_distinct() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{a}");
        assert_ne!(a, b);
        assert_eq!(new_request_id_value().len(), 32);
    }

    #[test]
    fn malformed_traceparent_starts_new_trace() {
        for bad in [
            &b"garbage"[..],
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let t = TraceContext::continue_or_start(Some(bad));
            assert_eq!(t.parent_id, None);
            assert_eq!(t.header_value().len(), 55);
        }
    }
}
