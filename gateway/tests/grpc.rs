//! gRPC through the real gateway binary: a real tonic server (the standard `grpc.health.v1`
//! service) behind an upstream with `protocol = "h2"`, a real tonic client speaking h2c to the
//! gateway. Unary and server-streaming calls pass with their trailers and `grpc-status`, routing
//! by `/package.Service/Method` uses the ordinary path matcher, and a canary splits calls.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Gateway;
use tonic::transport::{Channel, Server};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::server::HealthReporter;

/// A tonic health server on 127.0.0.1:0 where service "orders" has `status`.
async fn grpc_server(status: tonic_health::ServingStatus) -> (SocketAddr, HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("orders", status).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        Server::builder().add_service(service).serve_with_incoming(tokio_stream_of(listener)).await.unwrap();
    });
    (addr, reporter)
}

fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}

async fn client(gw: &Gateway) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", gw.port))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("h2c to the gateway");
    HealthClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_calls_pass_with_trailers_and_canary_splits_them() {
    let (legacy_grpc, _r1) = grpc_server(tonic_health::ServingStatus::Serving).await;
    let (extracted_grpc, reporter) = grpc_server(tonic_health::ServingStatus::NotServing).await;
    let cfg = |weight: u32| {
        format!(
            "h2c = true\n\n[defaults]\nupstream = \"legacy\"\n\n\
             [upstreams.legacy]\nendpoints = [\"{legacy_grpc}\"]\nprotocol = \"h2\"\n\n\
             [upstreams.orders]\nendpoints = [\"{extracted_grpc}\"]\nprotocol = \"h2\"\n\n\
             [[routes]]\nname = \"health-check\"\nmatch = {{ path = \"/grpc.health.v1.Health/Check\" }}\n\
             to = \"orders\"\nstage = \"canary\"\nweight = {weight}\n"
        )
    };
    let gw = Gateway::start(&cfg(0));
    let mut c = client(&gw).await;

    // unary, legacy side: SERVING
    let r = c.check(HealthCheckRequest { service: "orders".into() }).await.expect("unary call");
    assert_eq!(r.get_ref().status(), ServingStatus::Serving);
    // an error status travels in the trailers: unknown service -> NOT_FOUND
    let e = c.check(HealthCheckRequest { service: "nope".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    // server-streaming (Watch: unmatched by the route, so the default upstream = legacy)
    let mut stream = c.watch(HealthCheckRequest { service: "orders".into() }).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    // the canary at 100%: Check goes to the extracted server (NOT_SERVING there)
    let old = gw.version().await;
    gw.write_config(&cfg(100));
    gw.wait_version_change(&old).await;
    let r = c.check(HealthCheckRequest { service: "orders".into() }).await.unwrap();
    assert_eq!(r.get_ref().status(), ServingStatus::NotServing, "routed by /package.Service/Method");
    reporter.set_service_status("orders", tonic_health::ServingStatus::Serving).await;
    let r = c.check(HealthCheckRequest { service: "orders".into() }).await.unwrap();
    assert_eq!(r.get_ref().status(), ServingStatus::Serving);

    // the streaming call opened before the reload keeps streaming from legacy
    let m = gw.metrics().await;
    assert!(
        m.contains("strangler_gateway_requests_total{class=\"2xx\",route=\"health-check\",side=\"extracted\"} 2"),
        "{m}"
    );
    drop(stream);
}
