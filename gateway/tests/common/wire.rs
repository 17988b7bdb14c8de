//! A recording upstream that shows what arrived on the wire: an HTTP server (hyper-util's
//! `auto` builder: HTTP/1.1, or HTTP/2 by ALPN over TLS and by prior knowledge in cleartext) that
//! notes, for every request, the HTTP version it was read with, the ALPN protocol the TLS
//! handshake settled and whether the client presented a certificate. With `client_ca` it requires
//! a client certificate signed by that CA (mTLS) and counts the handshakes it refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// The TLS side of a [`WireServer`].
pub struct WireTls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    /// ALPN protocols offered, in preference order (e.g. `["h2", "http/1.1"]`).
    pub alpn: &'a [&'a str],
    /// Require a client certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
    /// Speak TLS 1.2 only (a refused client certificate then fails the handshake itself; with
    /// TLS 1.3 the client learns of it on its first read).
    pub tls12_only: bool,
}

/// A request as it arrived.
#[derive(Debug, Clone)]
pub struct WireSeen {
    /// Path and query.
    pub target: String,
    pub version: Version,
    /// The protocol ALPN chose (None: cleartext or no ALPN).
    pub alpn: Option<String>,
    pub client_cert: bool,
}

pub struct WireServer {
    pub name: &'static str,
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<WireSeen>>>,
    refused: Arc<AtomicUsize>,
}

impl WireServer {
    /// Serves on 127.0.0.1:0 until the test's runtime ends; answers
    /// `{"upstream": name, "path": ..., "version": "HTTP/2.0"}`.
    pub async fn start(name: &'static str, tls: Option<WireTls<'_>>) -> WireServer {
        let acceptor = tls.map(|t| pingora::tls::TlsAcceptor::from(Arc::new(server_config(&t))));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen, refused) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicUsize::new(0)));
        let (seen2, refused2) = (seen.clone(), refused.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, seen, refused) = (acceptor.clone(), seen2.clone(), refused2.clone());
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(TokioIo::new(tcp), name, None, false, seen).await,
                        Some(a) => match a.accept(tcp).await {
                            Ok(s) => {
                                let (_, conn) = s.get_ref();
                                let alpn = conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
                                let cert = conn.peer_certificates().is_some_and(|c| !c.is_empty());
                                serve(TokioIo::new(s), name, alpn, cert, seen).await
                            }
                            Err(_) => {
                                refused.fetch_add(1, Ordering::SeqCst);
                            }
                        },
                    }
                });
            }
        });
        WireServer { name, addr, seen, refused }
    }

    /// The requests received whose path (and query) starts with `prefix`.
    pub fn seen(&self, prefix: &str) -> Vec<WireSeen> {
        self.seen.lock().unwrap().iter().filter(|s| s.target.starts_with(prefix)).cloned().collect()
    }

    /// Waits (polling, at most 10 s) until `n` requests to `prefix` arrived; returns them.
    pub async fn wait_seen(&self, prefix: &str, n: usize) -> Vec<WireSeen> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.seen(prefix);
            if seen.len() >= n {
                return seen;
            }
            assert!(Instant::now() < deadline, "{} received {} of {n} requests to {prefix}", self.name, seen.len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// TLS handshakes refused (e.g. no client certificate, or one another CA signed).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

fn server_config(t: &WireTls<'_>) -> ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(t.cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(t.key).unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] =
        if t.tls12_only { &[&rustls::version::TLS12] } else { rustls::DEFAULT_VERSIONS };
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions).unwrap();
    let builder = match &t.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = t.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config
}

async fn serve<I>(io: I, name: &'static str, alpn: Option<String>, client_cert: bool, seen: Arc<Mutex<Vec<WireSeen>>>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let target = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
        let version = req.version();
        seen.lock().unwrap().push(WireSeen { target, version, alpn: alpn.clone(), client_cert });
        let body = serde_json::json!({ "upstream": name, "path": req.uri().path(), "version": format!("{version:?}") });
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .unwrap(),
            )
        }
    });
    // errors are the client's business (a refused or dropped connection); the test asserts on
    // what was seen
    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(io, service).await;
}
