//! The floor for the gateway benchmark: a Pingora proxy that does nothing but forward.
//!
//! Same Pingora version, server settings (one thread, pooled upstream connections), allocator
//! and build profile as strangler-gateway, and only `upstream_peer` implemented — no routing,
//! headers, ids, metrics or shadowing. `tests/perf/gateway-bench.sh` runs it next to the gateway
//! when `MINIMAL=1`, so "what our callbacks cost on top of Pingora" is measured in the same run.
//!
//! Usage: minimal_proxy LISTEN UPSTREAM   (e.g. 127.0.0.1:8000 127.0.0.1:9000)

use async_trait::async_trait;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Forward {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: minimal_proxy LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let conf = pingora::server::configuration::ServerConf {
        threads: 1,
        work_stealing: false,
        upstream_keepalive_pool_size: 512,
        // exit promptly on SIGTERM (Pingora's default grace period is 5 minutes)
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..Default::default()
    };
    let mut server = pingora::server::Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Forward { upstream });
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever()
}
