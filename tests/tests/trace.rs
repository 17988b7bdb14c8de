//! One client request, one trace: the stack runs with OTLP export pointed at a receiver in this
//! test, route `products` is extracted, and one `GET /api/products/1` through the gateway must
//! yield spans of one trace — the gateway's span, the catalog service's `request` span as its
//! child, and the catalog's `db.transaction` span under that — with the trace id in the logs of
//! both the gateway and the catalog service.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Client;
use strangler_support::otlp::{hex, OtlpReceiver, ReceivedSpan, Span};
use strangler_support::stack::Observability;
use strangler_support::{Stack, StackOptions};

use common::{set_stage, Admin};

/// The spans of `trace_id` once the gateway's span, a catalog `request` span and a catalog
/// `db.transaction` span have all arrived (or whatever arrived by the deadline).
async fn wait_trace(otlp: &OtlpReceiver, trace_id: &str) -> Vec<ReceivedSpan> {
    let of_trace = |all: &[ReceivedSpan]| -> Vec<ReceivedSpan> {
        all.iter().filter(|r| hex(&r.span.trace_id) == trace_id).cloned().collect()
    };
    let spans = otlp
        .wait_until(Duration::from_secs(30), |all| {
            let spans = of_trace(all);
            let has =
                |svc: &str, db: bool| spans.iter().any(|r| r.service == svc && (r.span.name == "db.transaction") == db);
            has("strangler-gateway", false) && has("catalog", false) && has("catalog", true)
        })
        .await;
    of_trace(&spans)
}

/// The log file's text, waiting (bounded) until it mentions `needle` (log writes are buffered
/// by nothing here, but a line may land just after the response).
async fn log_mentioning(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_from_gateway_to_service_to_db() {
    let otlp = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = StackOptions::for_test(dir.path());
    let token = opts.admin_token.clone();
    let obs = Observability {
        otlp_endpoint: Some(otlp.endpoint()),
        // per-request lines: the kit's `request` line (debug, with trace_id) and, in the gateway,
        // Pingora's upstream request header (debug, with the forwarded traceparent)
        log_filter: Some("info,pingora=warn,strangler_gateway=debug,strangler_kit=debug".into()),
    };
    let stack = tokio::task::spawn_blocking(move || Stack::start_observed(opts, obs))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let http = Client::new();
    set_stage(stack.routes_path(), "products", "extracted", None);
    let admin = Admin { http: http.clone(), url: stack.admin_url(), token: token.clone() };
    admin.wait_stage("products", "extracted", None).await;

    // one client request, continuing a trace the client started
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let trace_id = format!("{:032x}", (nanos ^ (u128::from(std::process::id()) << 96)) | (1 << 127));
    let client_span = "00f067aa0ba902b7";
    let resp = http
        .get(format!("{}/api/products/1", stack.gateway_url()))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 200, "{body}");

    let spans = wait_trace(&otlp, &trace_id).await;
    let all = || format!("{:#?}", otlp.spans());
    let of = |svc: &str, db: bool| -> Vec<&Span> {
        spans.iter().filter(|r| r.service == svc && (r.span.name == "db.transaction") == db).map(|r| &r.span).collect()
    };
    let (gw, svc, db) = (of("strangler-gateway", false), of("catalog", false), of("catalog", true));
    assert_eq!(gw.len(), 1, "one gateway span in trace {trace_id}; received: {}", all());
    assert_eq!(svc.len(), 1, "one catalog request span in trace {trace_id}; received: {}", all());
    assert_eq!(db.len(), 1, "one catalog db.transaction span in trace {trace_id}; received: {}", all());
    assert_eq!(spans.len(), 3, "nothing else in the trace: {spans:#?}");
    // probes are not traffic: the stack's readiness waits and the gateway's active health checks
    // hit /health/* on every service, and none of that may show up as traces
    let probes: Vec<String> = otlp
        .spans()
        .iter()
        .filter(|r| r.span.name.contains("/health/") || r.span.name.ends_with("/metrics"))
        .map(|r| format!("{}: {}", r.service, r.span.name))
        .collect();
    assert!(probes.is_empty(), "health/metrics requests were traced: {probes:?}");
    let (gw, svc, db) = (gw[0], svc[0], db[0]);
    assert_eq!(hex(&gw.parent_span_id), client_span, "the gateway continues the client's trace");
    assert_eq!(hex(&svc.parent_span_id), hex(&gw.span_id), "the service's span is the gateway span's child");
    assert_eq!(hex(&db.parent_span_id), hex(&svc.span_id), "the db span is the service span's child");
    assert_eq!(svc.name, "GET /api/products/{id}");
    for s in [gw, svc, db] {
        assert!(s.start_time_unix_nano > 0 && s.end_time_unix_nano >= s.start_time_unix_nano, "{s:?}");
    }
    assert!(
        svc.start_time_unix_nano <= db.start_time_unix_nano && db.end_time_unix_nano <= svc.end_time_unix_nano,
        "the transaction lies within the request: {svc:?} {db:?}"
    );

    // the same trace id in the logs of both
    let needle = format!("trace_id={trace_id}");
    let gw_log = log_mentioning(&stack.log_path("strangler-gateway"), &needle).await;
    assert!(
        gw_log.lines().any(|l| l.contains(&needle) && l.contains("request")),
        "no request line with {needle} in the gateway's log:\n{gw_log}"
    );
    let svc_log = log_mentioning(&stack.log_path("catalog"), &needle).await;
    assert!(
        svc_log.lines().any(|l| l.contains(&needle) && l.contains("request")),
        "no request line with {needle} in the catalog's log:\n{svc_log}"
    );
}
