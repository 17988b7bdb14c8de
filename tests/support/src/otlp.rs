//! A minimal OTLP/HTTP trace receiver for tests (feature `otlp`): it accepts
//! `POST /v1/traces` with a protobuf `ExportTraceServiceRequest` and keeps every span with the
//! `service.name` of the resource that sent it. Point a binary's `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `[gateway] otlp_endpoint`) at [`OtlpReceiver::endpoint`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
pub use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// A received span and the `service.name` of the resource that exported it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub span: Span,
}

type Collected = Arc<Mutex<Vec<ReceivedSpan>>>;

/// The receiver: a server task on the current tokio runtime, on a free loopback port.
pub struct OtlpReceiver {
    addr: SocketAddr,
    got: Collected,
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let got: Collected = Arc::default();
        let app = axum::Router::new().route("/v1/traces", axum::routing::post(traces)).with_state(got.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the OTLP receiver");
        let addr = listener.local_addr().expect("receiver address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("OTLP receiver") });
        OtlpReceiver { addr, got }
    }

    /// The OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.got.lock().unwrap().clone()
    }

    /// Polls until `done(spans)` holds or `within` has passed; returns the spans either way, so
    /// the caller's assertions say what was missing.
    pub async fn wait_until(&self, within: Duration, done: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn traces(State(got): State<Collected>, body: Bytes) -> &'static str {
    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let mut got = got.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            got.extend(ss.spans.into_iter().map(|span| ReceivedSpan { service: service.clone(), span }));
        }
    }
    ""
}

/// Lower-case hex of an id (trace and span ids arrive as bytes).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
