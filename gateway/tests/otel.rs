//! OpenTelemetry: one client request → one span exported over OTLP/HTTP (protobuf) whose trace id
//! and span id are those the upstream saw in its `traceparent`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use strangler_support::otlp::{hex, OtlpReceiver, Span};

/// The spans once at least `n` have arrived (or whatever arrived within 10 s).
async fn wait_spans(otlp: &OtlpReceiver, n: usize) -> Vec<Span> {
    otlp.wait_until(Duration::from_secs(10), |s| s.len() >= n).await.into_iter().map(|r| r.span).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_span_is_exported_with_the_forwarded_trace_context() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let otlp = OtlpReceiver::start().await;
    let endpoint = otlp.endpoint();
    let cfg = format!(
        "{}[[routes]]\nname = \"orders\"\nmatch = {{ path = \"/api/orders/{{id}}\" }}\nto = \"svc\"\nstage = \"extracted\"\n",
        upstreams(legacy.addr, svc.addr)
    );
    let gw = Gateway::start_with_env(&cfg, &[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]);

    // a continued trace: the client's trace id, the client's span as parent
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, v) = gw.get("/api/orders/7", &[("traceparent", incoming)]).await;
    assert_eq!(status, 200);
    let seen = v["headers"]["traceparent"].as_str().unwrap().to_string();
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "{seen}");

    let spans = wait_spans(&otlp, 1).await;
    assert_eq!(spans.len(), 1, "one request, one span: {spans:?}");
    let s = &spans[0];
    assert_eq!(hex(&s.trace_id), parts[1]);
    assert_eq!(hex(&s.span_id), parts[2], "the upstream's parent-id is the exported span");
    assert_eq!(hex(&s.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(s.name, "GET /api/orders/{id}");
    assert!(s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0);
    let attr = |k: &str| {
        s.attributes.iter().find(|a| a.key == k).and_then(|a| a.value.clone()).map(|v| format!("{:?}", v.value))
    };
    assert!(attr("http.response.status_code").unwrap().contains("200"), "{:?}", s.attributes);
    assert!(attr("strangler.route").unwrap().contains("orders"), "{:?}", s.attributes);

    // a new trace: no parent, the trace id the upstream saw
    let (_, v) = gw.get("/other", &[]).await;
    let seen = v["headers"]["traceparent"].as_str().unwrap().to_string();
    let parts: Vec<&str> = seen.split('-').collect();
    let spans = wait_spans(&otlp, 2).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    let s = spans.iter().find(|s| hex(&s.trace_id) == parts[1]).expect("span with the upstream's trace id");
    assert_eq!(hex(&s.span_id), parts[2]);
    assert!(s.parent_span_id.is_empty() || s.parent_span_id.iter().all(|b| *b == 0), "{:?}", s.parent_span_id);
    // counted once the export call returns, just after the receiver has the spans
    let t0 = Instant::now();
    while !gw.metrics().await.contains("strangler_gateway_otlp_spans_exported_total 2") {
        assert!(t0.elapsed() < Duration::from_secs(5), "{}", gw.metrics().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoint_no_export_and_no_error() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let gw = Gateway::start(&upstreams(legacy.addr, svc.addr));
    let (status, _) = gw.get("/x", &[]).await;
    assert_eq!(status, 200);
    assert!(gw.metrics().await.contains("strangler_gateway_otlp_spans_exported_total 0"));
    let log = gw.log();
    assert!(!log.contains("OTLP") && !log.contains("ERROR"), "{log}");
}
