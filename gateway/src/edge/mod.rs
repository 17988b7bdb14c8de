//! The gateway as an edge: what happens to a client connection before Pingora reads a request
//! from it.
//!
//! [`EdgeApp`] is the Pingora [`ServerApp`] of the proxy service. It wraps Pingora's own HTTP
//! proxy app and, for each accepted (and TLS-terminated) connection:
//! - counts it against its client address ([`client_cap`]); one over
//!   `[gateway] max_connections_per_client` is answered `503` and closed, like nginx's
//!   `limit_conn`;
//! - on HTTP/1, hands Pingora the stream inside a [`HeadGuard`], which answers `408` and closes
//!   when a request head is not complete within `[gateway] client_header_timeout` (slowloris),
//!   follows the HTTP/1 framing of every request ([`framing`]): `400` when a request line has
//!   bytes Pingora's parser would escape rather than refuse, pipelined requests included, and a
//!   failed read (answered `400` by the proxy) at a malformed chunked body; and closes a
//!   kept-alive connection silent for `[gateway] client_keepalive_timeout` between requests
//!   (nginx's `keepalive_timeout`; Pingora waits for a later request for ever);
//! - on HTTP/2 (ALPN `h2`, or the h2c preface) passes the stream to Pingora's app unchanged (h2
//!   has its own flow control and Pingora reads its frames).
//!
//! The plain-HTTP listener ([`plain_listener`]) reads the socket without Pingora's L4 read buffer
//! (64 KiB per connection, held for the connection's life): see [`CLIENT_READ_BUFFER`].
//!
//! Pingora's `connection_filter` feature (decide per peer address at accept) is not used: it is
//! told of accepts but not of closes, so it cannot count the connections a client holds open.

pub mod client_cap;
pub mod events;
pub mod framing;
pub mod head_guard;
pub mod head_scan;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::metrics::metrics;
use crate::proxy::GatewayProxy;
use crate::reload::ConfigStore;
use client_cap::ClientCap;
pub use events::EdgeEvent;
pub use head_guard::HeadGuard;

/// The first bytes of every HTTP/2 connection (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection over the per-client cap is told.
const OVER_CAP: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\nconnection: close\r\n\r\n";

/// Pingora's keep-alive timeout for a connection's first request (what its own app sets): the
/// longest one read of the first head may wait. Under a head deadline it is set past the deadline
/// instead, so that the deadline, not this timeout, ends a slow first head (with a 408, and
/// without Pingora seeing a partial head; later heads have no such timeout in Pingora).
const FIRST_REQUEST_KEEPALIVE_SECS: u64 = 60;

/// The L4 read buffer of a client connection on the plain-HTTP listener: none.
///
/// Pingora's default (64 KiB, `DEFAULT_L4_READ_BUFFER_SIZE`) is allocated zeroed for each
/// connection and kept until it closes: ~64 of the ~100 KiB an idle keep-alive connection held
/// (`tests/perf/scale-bench.sh`, part `conns`). It saves syscalls under TLS, which reads a
/// record in 4 KiB pieces; on plain HTTP/1 Pingora reads a head into its own 4 KiB buffer and a
/// body into its own 64 KiB one, so each read is one `recv` either way (a head and the start of
/// its body arriving together may take one more). The write buffer stays Pingora's (1460 bytes).
/// The TLS listener keeps Pingora's defaults.
pub const CLIENT_READ_BUFFER: usize = 0;

/// The plain-HTTP listener at `addr`, with the client connection buffers of
/// [`CLIENT_READ_BUFFER`].
pub fn plain_listener(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::default().read(CLIENT_READ_BUFFER))
}

/// The proxy service's app: Pingora's HTTP proxy behind the edge checks (see the module comment).
pub struct EdgeApp {
    proxy: Arc<HttpProxy<GatewayProxy>>,
    store: Arc<ConfigStore>,
    clients: Arc<ClientCap>,
    /// Set and notified when the service stops: connections waiting for a keep-alive request
    /// outside Pingora end then, as those waiting inside it do.
    stopping: AtomicBool,
    stopped: Notify,
}

impl EdgeApp {
    pub fn new(proxy: HttpProxy<GatewayProxy>, store: Arc<ConfigStore>) -> Self {
        Self {
            proxy: Arc::new(proxy),
            store,
            clients: ClientCap::new(),
            stopping: AtomicBool::new(false),
            stopped: Notify::new(),
        }
    }

    /// Cleartext HTTP/2 with prior knowledge is accepted.
    fn h2c(&self) -> bool {
        self.proxy.server_options.as_ref().is_some_and(|o| o.h2c)
    }

    /// Pingora's HTTP/1 loop (as in its `ServerApp` for HTTP apps), with the stream guarded and
    /// the guard re-armed before each keep-alive request. Pingora's session for a keep-alive
    /// request is made once the client sends it (see [`HeadGuard::wait_next_head`]).
    async fn serve_http1(&self, stream: Stream, timeouts: (Duration, Duration), shutdown: &ShutdownWatch) {
        let (header_timeout, keepalive_timeout) = timeouts;
        let mut guard = Box::new(HeadGuard::new(stream, header_timeout, keepalive_timeout));
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        // the service's stop, watched by this connection from its first keep-alive wait on (see
        // `wait_next_head`)
        let stopped = self.stopped.notified();
        tokio::pin!(stopped);
        let mut watching: Option<Waker> = None;
        loop {
            if !first
                && guard.before_next_head()
                && !self.wait_next_head(&mut guard, stopped.as_mut(), &mut watching).await
            {
                return;
            }
            let mut session = ServerSession::new_http1(guard);
            if first {
                let read_timeout =
                    if header_timeout.is_zero() { FIRST_REQUEST_KEEPALIVE_SECS } else { header_timeout.as_secs() + 10 };
                let keepalive = (!*shutdown.borrow()).then_some(read_timeout);
                session.set_keepalive(keepalive);
                session.set_keepalive_reuses_remaining(
                    self.proxy.server_options.as_ref().and_then(|o| o.keepalive_request_limit),
                );
            } else if let Some(s) = settings.take() {
                s.apply_to_session(&mut session);
            }
            let Some(reused) = self.proxy.process_new_http(session, shutdown).await else { return };
            let (stream, next) = reused.consume();
            // the stream Pingora hands back is the one it was given
            let Ok(mut g) = stream.into_any().downcast::<HeadGuard>() else { return };
            g.rearm();
            guard = g;
            settings = next;
            first = false;
        }
    }

    /// [`HeadGuard::wait_next_head`], ended (`false`) when the service stops, as Pingora ends a
    /// read of a keep-alive request then.
    ///
    /// `stopped` is the connection's: it is polled (which registers the task's waker with the
    /// `Notify`, under its lock) only while `watching` is not this task's waker, i.e. once per
    /// connection, and stays registered until the stop; each wait then only reads `stopping`
    /// when it is woken. A `Notified` made, enabled, polled and dropped per wait (the `Notify`'s
    /// lock each time) was ~370 instructions per keep-alive request.
    async fn wait_next_head(
        &self,
        guard: &mut HeadGuard,
        stopped: Pin<&mut Notified<'_>>,
        watching: &mut Option<Waker>,
    ) -> bool {
        until_stopped(guard.wait_next_head(), stopped, watching, &self.stopping).await
    }
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let peer = peer_ip(&stream);
        let (header_timeout, keepalive_timeout, cap) = {
            let table = self.store.current();
            let s = &table.settings;
            let exempt = peer.is_some_and(|ip| s.trusted_proxies.iter().any(|c| c.contains(ip)));
            (s.client_header_timeout, s.client_keepalive_timeout, if exempt { 0 } else { s.max_connections_per_client })
        };
        let _slot = match peer {
            Some(ip) => match self.clients.acquire(ip, cap) {
                Some(slot) => Some(slot),
                None => {
                    EdgeEvent::OverClientCap.record(Some(ip));
                    refuse_over_cap(stream).await;
                    return None;
                }
            },
            None => None,
        };
        let open = &metrics().client_connections_open;
        open.inc();
        let _open = scopeguard(|| open.dec());

        let h2 = if stream.get_ssl_digest().is_some() {
            match stream.selected_alpn_proto() {
                Some(ALPN::H2) => true,
                Some(ALPN::Custom(_)) => return self.proxy.process_new(stream, shutdown).await,
                _ => false,
            }
        } else if self.h2c() {
            // Pingora's own peek waits for the whole preface without a deadline, and for all 24
            // bytes of it: an HTTP/1 request shorter than that (`OPTIONS / HTTP/1.0`, a load
            // balancer's health check) would wait for the header timeout. Bytes are read only as
            // long as they agree with the preface, then put back for whichever protocol serves.
            let rewindable = stream.as_any().is::<L4Stream>();
            let mut preface = [0u8; H2_PREFACE.len()];
            let peek = async {
                if !rewindable {
                    return stream.try_peek(&mut preface).await.map(|_| preface.len());
                }
                let mut n = 0;
                while n < preface.len() && preface[..n] == H2_PREFACE[..n] {
                    match stream.read(&mut preface[n..]).await? {
                        0 => break,
                        got => n += got,
                    }
                }
                Ok(n)
            };
            let peeked = if header_timeout.is_zero() {
                peek.await
            } else {
                match tokio::time::timeout(header_timeout, peek).await {
                    Ok(p) => p,
                    Err(_) => {
                        EdgeEvent::HeaderTimeout.record(peer);
                        return None;
                    }
                }
            };
            let Ok(n) = peeked else { return None };
            if rewindable {
                let Ok(mut l4) = stream.into_any().downcast::<L4Stream>() else { return None };
                l4.rewind(&preface[..n]);
                stream = l4;
            }
            n == H2_PREFACE.len() && preface == H2_PREFACE
        } else {
            false
        };
        if h2 {
            return self.proxy.process_new(stream, shutdown).await;
        }
        self.serve_http1(stream, (header_timeout, keepalive_timeout), shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stopped.notify_waiters();
        // tells requests waiting in read_request() that the service stops
        ServerApp::cleanup(&*self.proxy).await;
    }
}

/// `wait`'s answer, or `false` once `stopping` is set (a stop that comes with a request loses).
/// `stopped` (made before `stopping` could be set, notified after it is) is polled only while
/// `watching` is not the polling task's waker: its registration stays until the stop.
async fn until_stopped(
    wait: impl Future<Output = bool>,
    mut stopped: Pin<&mut Notified<'_>>,
    watching: &mut Option<Waker>,
    stopping: &AtomicBool,
) -> bool {
    if stopping.load(Ordering::Acquire) {
        return false;
    }
    let mut wait = std::pin::pin!(wait);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(sent) = wait.as_mut().poll(cx) {
            return Poll::Ready(sent);
        }
        if !watching.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            if stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            *watching = Some(cx.waker().clone());
        }
        if stopping.load(Ordering::Acquire) {
            return Poll::Ready(false);
        }
        Poll::Pending
    })
    .await
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    Some(digest.peer_addr()?.as_inet()?.ip())
}

/// Answers a connection over the cap (HTTP/2 clients only see the close) and closes it.
async fn refuse_over_cap(mut stream: Stream) {
    if !matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        let answer = async {
            stream.write_all(OVER_CAP).await?;
            stream.flush().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
    }
    pingora::protocols::Shutdown::shutdown(&mut *stream).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stop is watched from a connection's first wait that had to wait, and ends a later
    /// wait of the same task without being polled again; a request that comes wins.
    #[tokio::test]
    async fn a_stop_ends_later_waits_of_a_connection() {
        let (stopping, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(Notify::new()));
        let stopped = stop.notified();
        tokio::pin!(stopped);
        let mut watching = None;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bool>(1);
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send(true).await.unwrap();
            tx
        });
        let sent = until_stopped(async { rx.recv().await.unwrap() }, stopped.as_mut(), &mut watching, &stopping);
        assert!(sent.await, "the request that came");
        assert!(watching.is_some(), "the stop is watched from the first wait that waited");
        let _tx = sender.await.unwrap();
        let stopper = {
            let (stopping, stop) = (stopping.clone(), stop.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                stopping.store(true, Ordering::Release);
                stop.notify_waiters();
            })
        };
        let wait = until_stopped(async { rx.recv().await.unwrap() }, stopped.as_mut(), &mut watching, &stopping);
        let started = std::time::Instant::now();
        let sent = tokio::time::timeout(Duration::from_secs(5), wait).await.expect("the stop ends the wait");
        assert!(!sent);
        // woken by the stop itself (a poll at the timeout's own wake-up would also see it)
        assert!(started.elapsed() < Duration::from_secs(2), "ended after {:?}", started.elapsed());
        stopper.await.unwrap();
        // a wait after the stop ends at once
        assert!(!until_stopped(std::future::pending(), stopped.as_mut(), &mut watching, &stopping).await);
    }
}
