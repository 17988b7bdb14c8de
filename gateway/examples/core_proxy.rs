//! Experiment: a forwarder on pingora-core alone (no pingora-proxy state machine).
//!
//! It keeps each downstream keep-alive connection inside one `process_new_http` call (no
//! re-boxed session future per request), forwards the request header, streams the response
//! body and pools upstream connections with pingora-core's `Connector`. Only GET/HEAD without a
//! request body; it measures how much of Pingora's per-request cost is the proxy framework.
//!
//! Usage: core_proxy LISTEN UPSTREAM   (e.g. 127.0.0.1:8000 127.0.0.1:9000)

mod floor;

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::connectors::http::v1::Connector;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::HttpPeer;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Forward {
    peer: HttpPeer,
    connector: Connector,
}

impl Forward {
    /// One request/response exchange; `Ok(true)` when the downstream connection can be reused.
    async fn exchange(&self, session: &mut ServerSession) -> pingora::Result<bool> {
        let req = Box::new(session.req_header().clone());
        let (mut up, _reused) = self.connector.get_http_session(&self.peer).await?;
        up.write_request_header(req).await?;
        up.finish_body().await?;
        up.read_response().await?;
        let resp = Box::new(up.resp_header().expect("read_response succeeded").clone());
        session.write_response_header(resp).await?;
        while let Some(chunk) = up.read_body_bytes().await? {
            session.write_response_body(chunk, false).await?;
        }
        self.connector.release_http_session(up, &self.peer, None).await;
        Ok(true)
    }
}

#[async_trait]
impl HttpServerApp for Forward {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        loop {
            match session.read_request().await {
                Ok(true) => {}
                _ => return None,
            }
            if self.exchange(&mut session).await.is_err() {
                return None;
            }
            let settings = HttpPersistentSettings::for_session(&session);
            let reusable = session.finish().await.ok()??;
            let (stream, prefix) = reusable.into_parts();
            if let Some(prefix) = prefix {
                let mut settings = settings;
                settings.set_pipelined_prefix(prefix);
                return Some(ReusedHttpStream::new(stream, Some(settings)));
            }
            session = ServerSession::new_http1(stream);
            settings.apply_to_session(&mut session);
        }
    }
}

fn main() {
    let (listen, upstream) = floor::args("core_proxy");
    let mut server = floor::server();
    let app = Forward { peer: HttpPeer::new(upstream.as_str(), false, String::new()), connector: Connector::new(None) };
    let mut service = pingora::services::listening::Service::new("core".into(), app);
    service.add_listener(floor::listener(&listen));
    server.add_service(service);
    server.run_forever()
}
