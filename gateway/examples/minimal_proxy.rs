//! The floor for the gateway benchmark: a Pingora proxy that does nothing but forward.
//!
//! Same Pingora version, server and listener settings (one thread, pooled upstream connections,
//! client connection buffers), allocator and build profile as strangler-gateway, and only `upstream_peer` implemented — no routing,
//! headers, ids, metrics or shadowing. `tests/perf/gateway-bench.sh` runs it next to the gateway
//! when `MINIMAL=1`, so "what our callbacks cost on top of Pingora" is measured in the same run.
//!
//! Usage: minimal_proxy LISTEN UPSTREAM   (e.g. 127.0.0.1:8000 127.0.0.1:9000)
//! Env:   FLOOR_L4_READ_BUFFER=BYTES: the client connections' L4 read buffer instead of the
//!        gateway's (65536: Pingora's default; see `tests/perf/scale-bench.sh`, part `conns`)

mod floor;

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
    let (listen, upstream) = floor::args("minimal_proxy");
    let mut server = floor::server();
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Forward { upstream });
    service.add_listener(floor::listener(&listen));
    server.add_service(service);
    server.run_forever()
}
