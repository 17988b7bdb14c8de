//! The mirror's HTTP client: hyper-util's pooled client speaking to an upstream the way the
//! primary path does (`proxy.rs` `upstream_peer`): plain HTTP/1.1, h2c by prior knowledge
//! (`protocol = "h2"` without TLS), or TLS with the upstream's CA, SNI, client certificate and
//! `verify`, h2 or HTTP/1.1 chosen by ALPN (`h2`: h2 only; `auto`: either).
//!
//! Each upstream gets a [`Target`] once (per table: a reload makes new upstreams): one client
//! per endpoint, whose connector always dials that endpoint, so that the request's URI can carry
//! the client's authority (h2's `:authority` is then the request's host, as Pingora sends it on
//! the primary path, and equal to the `Host` header) and a mirror only assembles a URI from parts
//! (no URL parsing, no redirect layer). Endpoints without TLS keep their client (and its
//! connection pool) across reloads; a TLS upstream's clients (its own trust and client
//! certificate) are rebuilt when a reload replaces the upstream.
//!
//! Plain HTTP/1.1 endpoints (the common case, and the cheapest) are served by the inline client
//! of [`super::h1`] instead of hyper-util's.
//!
//! TLS is Pingora's own stack (`pingora::tls`: rustls with ring, tokio-rustls), not a second one.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::Uri;
use http_body_util::Full;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pingora::tls::{CertificateDer, ClientConfig, ClientTlsStream, PrivateKeyDer, RootCertStore, ServerName};
use strangler_pg_connect::tls::NoVerification;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::h1::H1Endpoint;
use crate::table::{Upstream, UpstreamProtocol, UpstreamTls};

/// How long a mirror may take to connect (TCP and TLS handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) type MirrorClient = Client<Connector, Full<Bytes>>;

/// The clients of every upstream mirrors have gone to.
pub(crate) struct Clients {
    /// Endpoints without TLS, by address and h2c.
    plain: Mutex<HashMap<(SocketAddr, bool), EndpointClient>>,
    /// By the upstream's address; the `Weak` keeps that address from being reused while the
    /// entry exists, so an entry found is the upstream asked for. Dead entries are pruned when a
    /// new one is added.
    targets: Mutex<HashMap<usize, Known>>,
}

/// An upstream mirrors have gone to, and its target.
type Known = (Weak<Upstream>, Arc<Target>);

/// What a mirror to one upstream needs: the scheme and, per endpoint, its client and its
/// authority (for requests that carry none).
pub(crate) struct Target {
    pub scheme: Scheme,
    /// In the order of `Upstream::endpoints`.
    pub endpoints: Vec<(EndpointClient, Authority)>,
}

/// How mirrors reach one endpoint: plain HTTP/1.1 by our inline client ([`super::h1`]), TLS
/// and h2c by hyper-util's.
#[derive(Clone)]
pub(crate) enum EndpointClient {
    H1(Arc<H1Endpoint>),
    Hyper(Box<MirrorClient>),
}

impl Clients {
    pub(crate) fn new() -> Self {
        Clients { plain: Mutex::new(HashMap::new()), targets: Mutex::new(HashMap::new()) }
    }

    /// The target of `upstream` (built on its first mirror).
    pub(crate) fn target(&self, upstream: &Arc<Upstream>) -> Result<Arc<Target>, String> {
        let key = Arc::as_ptr(upstream) as usize;
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, t)) = targets.get(&key) {
            return Ok(t.clone());
        }
        let target = Arc::new(self.build(upstream)?);
        targets.retain(|_, (w, _)| w.strong_count() > 0);
        targets.insert(key, (Arc::downgrade(upstream), target.clone()));
        Ok(target)
    }

    fn build(&self, upstream: &Upstream) -> Result<Target, String> {
        let h2 = upstream.protocol == UpstreamProtocol::H2;
        let tls = match &upstream.tls {
            None => None,
            Some(tls) => Some(
                tls_dialers(upstream, tls).map_err(|e| format!("TLS settings of upstream {}: {e}", upstream.name))?,
            ),
        };
        let mut endpoints = Vec::with_capacity(upstream.endpoints.len());
        for (i, ep) in upstream.endpoints.iter().enumerate() {
            let authority = Authority::try_from(ep.addr.to_string()).map_err(|e| e.to_string())?;
            let client = match &tls {
                None => {
                    let mut plain = self.plain.lock().unwrap_or_else(|p| p.into_inner());
                    plain
                        .entry((ep.addr, h2))
                        .or_insert_with(|| match h2 {
                            false => EndpointClient::H1(Arc::new(H1Endpoint::new(ep.addr, CONNECT_TIMEOUT))),
                            true => EndpointClient::Hyper(Box::new(client(Connector { addr: ep.addr, tls: None }, h2))),
                        })
                        .clone()
                }
                Some(dials) => EndpointClient::Hyper(Box::new(client(
                    Connector { addr: ep.addr, tls: Some(dials[i].clone()) },
                    h2,
                ))),
            };
            endpoints.push((client, authority));
        }
        let scheme = if tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP };
        Ok(Target { scheme, endpoints })
    }
}

fn client(connector: Connector, http2_only: bool) -> MirrorClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(30))
        .http2_only(http2_only)
        .build(connector)
}

/// How to open TLS to each endpoint of one upstream (in its order): a connector and the name
/// sent as SNI and verified. SNI is the configured name, else the endpoint's host name (as
/// `upstream_peer`); an endpoint with neither is reached by its IP address, without SNI and
/// without verification, as Pingora does.
fn tls_dialers(upstream: &Upstream, tls: &UpstreamTls) -> Result<Vec<TlsDial>, String> {
    let mut verified = None;
    let mut unverified = None;
    let mut dials = Vec::with_capacity(upstream.endpoints.len());
    for ep in &upstream.endpoints {
        let host = ep.host.as_deref().and_then(|h| h.rsplit_once(':')).map(|(h, _)| h);
        let (name, verify) = match tls.sni.as_deref().or(host).filter(|s| !s.is_empty()) {
            Some(n) => (ServerName::try_from(n.to_string()).map_err(|e| format!("SNI {n:?}: {e}"))?, tls.verify),
            None => (ServerName::IpAddress(ep.addr.ip().into()), false),
        };
        let slot = if verify { &mut verified } else { &mut unverified };
        let connector = match slot {
            Some(c) => c,
            None => slot.insert(tls_connector(upstream.protocol, tls, verify)?),
        };
        dials.push((connector.clone(), name));
    }
    Ok(dials)
}

/// A TLS connector with the upstream's trust, client certificate and ALPN; Pingora's provider.
fn tls_connector(
    protocol: UpstreamProtocol,
    tls: &UpstreamTls,
    verify: bool,
) -> Result<pingora::tls::TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    let builder = if verify {
        let mut roots = RootCertStore::empty();
        match &tls.ca {
            Some(ca) => {
                for c in ca.iter() {
                    roots.add(CertificateDer::from(c)).map_err(|e| format!("CA certificate: {e}"))?;
                }
            }
            None => pingora::tls::load_platform_certs_incl_env_into_store(&mut roots)
                .map_err(|e| format!("system CA certificates: {e}"))?,
        }
        builder.with_root_certificates(roots)
    } else {
        // `verify = false`: any certificate, the handshake signatures still checked
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    };
    let mut config = match &tls.client {
        Some(ck) => {
            let mut chain: Vec<CertificateDer<'static>> = vec![ck.leaf().into()];
            chain.extend(ck.intermediates().into_iter().map(CertificateDer::from));
            let key = PrivateKeyDer::try_from(ck.key().clone()).map_err(|e| format!("client key: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match protocol {
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::H2 => vec![b"h2".to_vec()],
        UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(pingora::tls::TlsConnector::from(Arc::new(config)))
}

type TlsDial = (pingora::tls::TlsConnector, ServerName<'static>);

/// Connects to its endpoint, whatever the URI's authority (TLS with this name when set).
#[derive(Clone)]
pub(crate) struct Connector {
    addr: SocketAddr,
    tls: Option<TlsDial>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<Stream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (addr, tls) = (self.addr, self.tls.clone());
        Box::pin(async move {
            let connect = async {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                Ok(match tls {
                    None => Stream::Plain(tcp),
                    Some((connector, name)) => {
                        let s = connector.connect(name, tcp).await?;
                        let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
                        Stream::Tls(Box::new(s), h2)
                    }
                })
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(r) => r.map(TokioIo::new),
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} timed out"))),
            }
        })
    }
}

/// A connection to an endpoint: plain TCP or TLS (and whether ALPN chose h2).
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>, bool),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Tls(_, true) => Connected::new().negotiated_h2(),
            _ => Connected::new(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An error and its causes on one line (hyper-util's own message is only "client error").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
