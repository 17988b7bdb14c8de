//! Logging, trace context and (optional) OpenTelemetry export.
//!
//! Every request gets a span carrying the W3C trace id taken from the gateway's `traceparent`
//! (or a new one), so one trace id joins the gateway's and the service's log lines. When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, the spans are
//! also exported over OTLP/HTTP (protobuf): the `request` span as a child of the gateway's span,
//! and a `db.transaction` span under it.

use axum::http::HeaderMap;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use strangler_wire::TraceParent;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber: `RUST_LOG`-style filter (default `info`), text or
/// JSON lines on stderr. No OTLP export. Safe to call more than once (later calls are ignored).
pub fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// The OTLP/HTTP traces URL from the standard environment variables: the signal-specific
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`.
/// `None` (no export) when neither is set or both are empty.
pub fn otlp_traces_url(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |k: &str| env(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    if let Some(url) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Some(url);
    }
    let base = set("OTEL_EXPORTER_OTLP_ENDPOINT")?;
    if base.trim_end_matches('/').ends_with("/v1/traces") {
        return Some(base);
    }
    Some(format!("{}/v1/traces", base.trim_end_matches('/')))
}

/// What [`init_telemetry`] set up; [`Telemetry::shutdown`] (or drop) flushes pending spans.
/// Call it outside any async runtime (the export client is blocking).
#[must_use = "dropping the guard shuts the span export down"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// True when spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is still queued and stops the exporter.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("OTLP span export shutdown: {e}");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Like [`init_tracing`], plus OTLP/HTTP span export (`service.name` = `service`) when the
/// standard `OTEL_EXPORTER_OTLP_*ENDPOINT` variables ask for it. A failure to set the exporter up
/// is logged and leaves logging working. Call before starting the async runtime.
pub fn init_telemetry(service: &'static str, json: bool) -> Telemetry {
    let url = otlp_traces_url(|k| std::env::var(k).ok());
    let (provider, error) = match url.as_deref().map(|u| otlp_provider(service, u)) {
        Some(Ok(p)) => (Some(p), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // colours only on a terminal: log files and collectors get plain text
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text = (!json).then(|| tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr));
    let json_lines = json.then(|| tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr));
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    let _ = tracing_subscriber::registry().with(filter).with(text).with(json_lines).with(otel).try_init();
    match (&url, error) {
        (Some(url), None) => tracing::info!(service, "exporting spans over OTLP/HTTP to {url}"),
        (Some(url), Some(e)) => tracing::warn!(service, "OTLP span export to {url} disabled: {e}"),
        (None, _) => {}
    }
    Telemetry { provider }
}

fn otlp_provider(service: &'static str, url: &str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(std::time::Duration::from_secs(5))
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder_empty().with_service_name(service).build();
    Ok(SdkTracerProvider::builder().with_resource(resource).with_batch_exporter(exporter).build())
}

/// Makes `span` a child of the caller's span in `incoming` (a remote parent from `traceparent`)
/// for the OTLP export. Returns the trace id the span ends up in (32 hex digits) when spans are
/// exported — the incoming one, or a new one if there was none — and `None` when they are not.
pub(crate) fn continue_trace(span: &tracing::Span, incoming: Option<&TraceContext>) -> Option<String> {
    if let Some(t) = incoming {
        let (Ok(trace_id), Ok(span_id)) = (TraceId::from_hex(&t.trace_id), SpanId::from_hex(&t.parent_id)) else {
            return None;
        };
        let parent = SpanContext::new(trace_id, span_id, TraceFlags::new(t.flags), true, TraceState::default());
        // Err when no OpenTelemetry layer is installed: nothing is exported then.
        span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent)).ok()?;
    }
    let cx = span.context();
    let id = cx.span().span_context().trace_id();
    (id != TraceId::INVALID).then(|| format!("{id:032x}"))
}

/// A W3C trace context (`traceparent: 00-<trace-id>-<parent-id>-<flags>`), as hex strings.
/// Parsing is [`strangler_wire::TraceParent`]'s, the same parser the gateway uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// 16 lowercase hex digits: the caller's span.
    pub parent_id: String,
    /// Trace flags (bit 0 = sampled).
    pub flags: u8,
}

impl From<TraceParent> for TraceContext {
    fn from(t: TraceParent) -> Self {
        Self { trace_id: t.trace_id_hex(), parent_id: t.parent_id_hex(), flags: t.flags }
    }
}

impl TraceContext {
    /// Parses a `traceparent` header value; `None` if it is not valid (a version-00 header with
    /// exactly four fields, or a later version's first four fields, as the W3C specification asks).
    pub fn parse(value: &str) -> Option<Self> {
        TraceParent::parse(value.as_bytes()).map(Self::from)
    }

    /// The incoming request's context, if it carries a valid `traceparent`.
    pub fn incoming(headers: &HeaderMap) -> Option<Self> {
        headers.get("traceparent").and_then(|v| TraceParent::parse(v.as_bytes())).map(Self::from)
    }

    /// The context of an incoming request, or a fresh one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::incoming(headers).unwrap_or_else(|| {
            let id = uuid::Uuid::new_v4().simple().to_string();
            Self { trace_id: id, parent_id: "0000000000000001".into(), flags: 1 }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{otlp_traces_url, TraceContext};

    #[test]
    fn otlp_url_from_env() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(otlp_traces_url(env(&[])), None);
        assert_eq!(otlp_traces_url(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])), None);
        assert_eq!(
            otlp_traces_url(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])).as_deref(),
            Some("http://c:4318/v1/traces")
        );
        assert_eq!(
            otlp_traces_url(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x")
            ]))
            .as_deref(),
            Some("http://t:1/x")
        );
    }

    #[test]
    fn parses_valid_traceparent() {
        let t = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id, "00f067aa0ba902b7");
        assert_eq!(t.flags, 1);
        // a later version: its first four fields, and whatever follows after a dash is ignored
        let later = TraceContext::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").unwrap();
        assert_eq!(later, t);
        assert_eq!(TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), Some(t));
    }

    #[test]
    fn rejects_invalid_traceparent() {
        for bad in [
            "",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad:?} accepted");
        }
    }
}
