//! TLS for every PostgreSQL session strangler opens: one [`TlsSetup`] per connection string (the
//! rustls config its `sslmode`, `sslrootcert`, `sslcert` and `sslkey` ask for) and one
//! [`negotiate`] that speaks the SSLRequest and the handshake over an open socket. A client that
//! speaks the protocol itself (cdc-sync's walsender) calls [`negotiate`]; tokio-postgres sessions
//! (and deadpool-postgres pools) reach it through [`MakePgTls`].
//!
//! Why tokio-postgres is told `sslnegotiation=direct`: tokio-postgres 0.7 sends the SSLRequest
//! itself and, on an `N` answer with `sslmode=require`, fails with a fixed message that names
//! neither the host nor the mode. Told `direct`, it skips the SSLRequest and hands the raw
//! socket to our [`TlsConnect`], which sends the SSLRequest exactly as tokio-postgres would
//! (so every server version understands it; nothing is sent as direct TLS), falls back to plain
//! text for `prefer`, and reports failures as a [`TlsError`] naming host, mode and cause.
//!
//! Modes, as libpq defines them: `prefer` and `require` encrypt without checking the
//! certificate (a man in the middle can read along); `verify-ca` checks that the certificate
//! chains to a trusted root; `verify-full` also that it names the host connected to (the
//! `host`, also when `hostaddr` gives the address). `require` with an `sslrootcert` behaves as
//! `verify-ca`, as in libpq. Trusted roots: the `sslrootcert` file, else the system's store
//! (not libpq's `~/.postgresql/root.crt`). Files are read at each connection, so a rotated
//! certificate is picked up by the next session.

use std::fs::File;
use std::future::Future;
use std::io::{self, BufReader};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::conninfo::{ConnInfoError, RootCerts, SslMode, TlsParams};

/// The TLS stream tokio-postgres-rustls makes (its type is only reachable through the trait).
type RustlsStream<S> = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;

/// The TLS side of a connection string could not be set up (before any connection).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate or key file could not be read.
    #[error("reading {what} {}", path.display())]
    Read {
        /// `sslrootcert`, `sslcert` or `sslkey`.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A file that should hold PEM certificates holds none.
    #[error("{what} {} holds no PEM certificate", path.display())]
    NoCertificate {
        /// `sslrootcert` or `sslcert`.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
    },
    /// `sslkey` holds no PEM private key.
    #[error("sslkey {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", .0.display())]
    NoKey(std::path::PathBuf),
    /// No trusted roots for `verify-ca` / `verify-full`.
    #[error("no trusted root certificates: the system store is empty; name a CA file with sslrootcert")]
    NoRoots,
    /// rustls refused the configuration (a key that does not match, a bad root).
    #[error("the TLS configuration")]
    Rustls(#[source] rustls::Error),
    /// The certificate verifier could not be built from the roots.
    #[error("the trusted roots")]
    Verifier(#[source] rustls::client::VerifierBuilderError),
    /// The connection string's TLS part is invalid.
    #[error(transparent)]
    ConnInfo(ConnInfoError),
}

/// A session's TLS failed. Names the host and the mode; the connection string is never shown.
#[derive(Debug, thiserror::Error)]
#[error("TLS with {host} (sslmode={mode})")]
pub struct TlsError {
    /// The host as the connection string names it.
    pub host: String,
    /// The `sslmode` asked for.
    pub mode: SslMode,
    /// What failed.
    #[source]
    pub failure: TlsFailure,
}

/// What went wrong in [`TlsError`].
#[derive(Debug, thiserror::Error)]
pub enum TlsFailure {
    /// The server answered the SSLRequest with `N`.
    #[error("the server does not accept TLS connections (ssl = off in its postgresql.conf?)")]
    Refused,
    /// The server answered the SSLRequest with something else (an error, an old server).
    #[error("the server answered the SSLRequest with {0:?} instead of 'S' or 'N'")]
    Protocol(char),
    /// The server's certificate did not pass the check the mode asks for.
    #[error("the server's certificate was rejected")]
    Certificate(#[source] rustls::Error),
    /// The handshake failed otherwise (e.g. the server refused our client certificate).
    #[error("the TLS handshake failed")]
    Handshake(#[source] rustls::Error),
    /// The host is not a valid DNS name or IP address for TLS.
    #[error("the host is not a valid name for TLS")]
    ServerName,
    /// The socket failed during negotiation.
    #[error("the connection failed during TLS negotiation")]
    Io(#[source] io::Error),
    /// The TLS configuration could not be built.
    #[error("no usable TLS configuration")]
    Setup(#[source] Arc<TlsSetupError>),
}

impl TlsError {
    /// Whether trying again may help: the network failed during negotiation, or a certificate
    /// file could not be read (a Secret mounted late). A refused certificate or TLS request, or
    /// a bad setting, fails the same way again.
    pub fn is_transient(&self) -> bool {
        match &self.failure {
            TlsFailure::Io(_) => true,
            TlsFailure::Setup(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl TlsSetupError {
    /// Whether trying again may help (a file that could not be read).
    pub fn is_transient(&self) -> bool {
        matches!(self, TlsSetupError::Read { .. })
    }
}

/// The rustls side of one connection string: its mode and the client config that mode needs.
#[derive(Clone)]
pub struct TlsSetup {
    mode: SslMode,
    connector: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup").field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl TlsSetup {
    /// Build the rustls config for `p`: the one place every session's TLS settings come from.
    pub fn new(p: &TlsParams) -> Result<TlsSetup, TlsSetupError> {
        if p.mode == SslMode::Disable {
            return Ok(TlsSetup { mode: p.mode, connector: None });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(TlsSetupError::Rustls)?;
        let verifier: Arc<dyn ServerCertVerifier> = match (p.mode, &p.root_cert) {
            (SslMode::Prefer, _) | (SslMode::Require, None) => Arc::new(NoVerification(Arc::clone(&provider))),
            (mode, roots) => {
                let roots = Arc::new(root_store(roots.as_ref())?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(TlsSetupError::Verifier)?;
                if mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
        };
        let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
        let config = match &p.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = read_certs("sslcert", cert)?;
                let key = read_key(key)?;
                builder.with_client_auth_cert(chain, key).map_err(TlsSetupError::Rustls)?
            }
        };
        Ok(TlsSetup { mode: p.mode, connector: Some(MakeRustlsConnect::new(config)) })
    }

    /// The `sslmode` asked for.
    pub fn mode(&self) -> SslMode {
        self.mode
    }
}

fn root_store(roots: Option<&RootCerts>) -> Result<RootCertStore, TlsSetupError> {
    let mut store = RootCertStore::empty();
    match roots {
        Some(RootCerts::File(path)) => {
            for c in read_certs("sslrootcert", path)? {
                store.add(c).map_err(TlsSetupError::Rustls)?;
            }
        }
        None | Some(RootCerts::System) => {
            store.add_parsable_certificates(system_roots().iter().cloned());
            if store.is_empty() {
                return Err(TlsSetupError::NoRoots);
            }
        }
    }
    Ok(store)
}

/// The system's trusted roots, read once per process (a few hundred certificates).
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        rustls_native_certs::load_native_certs().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the system's trusted root certificates");
            Vec::new()
        })
    })
}

fn open(what: &'static str, path: &Path) -> Result<BufReader<File>, TlsSetupError> {
    File::open(path).map(BufReader::new).map_err(|source| TlsSetupError::Read { what, path: path.into(), source })
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = rustls_pemfile::certs(&mut open(what, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsSetupError::Read { what, path: path.into(), source })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate { what, path: path.into() });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, TlsSetupError> {
    rustls_pemfile::private_key(&mut open("sslkey", path)?)
        .map_err(|source| TlsSetupError::Read { what: "sslkey", path: path.into(), source })?
        .ok_or_else(|| TlsSetupError::NoKey(path.into()))
}

/// Accepts any server certificate; the handshake signatures are still checked (the server holds
/// the key of the certificate it shows). PostgreSQL's `prefer` / `require`; also the gateway's
/// shadow client for a candidate with `verify = false`.
#[derive(Debug)]
pub struct NoVerification(pub Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full webpki check, less the name. webpki checks the chain (and validity
/// dates) before the name, so a name mismatch means everything else passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A session's stream: plain (`disable`, or `prefer` refused by the server) or TLS.
pub enum PgStream<S: Io> {
    /// Plain text.
    Plain(S),
    /// TLS (rustls).
    Tls(Box<RustlsStream<S>>),
}

/// What a socket under TLS must be.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for S {}

impl<S: Io> std::fmt::Debug for PgStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_tls() { "PgStream::Tls" } else { "PgStream::Plain" })
    }
}

impl<S: Io> PgStream<S> {
    /// Whether the session is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, PgStream::Tls(_))
    }
}

/// SSLRequest, then the handshake `setup` asks for, over an open socket to `host` (the name the
/// connection string gives: checked against the certificate under `verify-full`).
pub async fn negotiate<S: Io>(mut stream: S, setup: &TlsSetup, host: &str) -> Result<PgStream<S>, TlsError> {
    let fail = |failure| TlsError { host: host.to_string(), mode: setup.mode, failure };
    let Some(connector) = &setup.connector else { return Ok(PgStream::Plain(stream)) };
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    stream.write_all(&request).await.map_err(|e| fail(TlsFailure::Io(e)))?;
    stream.flush().await.map_err(|e| fail(TlsFailure::Io(e)))?;
    // exactly one byte: anything after it belongs to the TLS handshake (CVE-2021-23222)
    let answer = stream.read_u8().await.map_err(|e| fail(TlsFailure::Io(e)))?;
    match answer {
        b'S' => {}
        b'N' if !setup.mode.requires_tls() => return Ok(PgStream::Plain(stream)),
        b'N' => return Err(fail(TlsFailure::Refused)),
        other => return Err(fail(TlsFailure::Protocol(other as char))),
    }
    if ServerName::try_from(host).is_err() {
        return Err(fail(TlsFailure::ServerName));
    }
    let mut make = connector.clone();
    let Ok(tls) = MakeTlsConnect::<S>::make_tls_connect(&mut make, host);
    match TlsConnect::connect(tls, stream).await {
        Ok(s) => Ok(PgStream::Tls(Box::new(s))),
        Err(e) => Err(fail(classify(e))),
    }
}

/// tokio-rustls reports rustls errors as `io::Error`s of kind `InvalidData`: take them out, so a
/// certificate failure is not mistaken for a network failure (which is retried).
fn classify(e: io::Error) -> TlsFailure {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(r @ (rustls::Error::InvalidCertificate(_) | rustls::Error::InvalidCertRevocationList(_))) => {
            TlsFailure::Certificate(r.clone())
        }
        Some(r) => TlsFailure::Handshake(r.clone()),
        None => TlsFailure::Io(e),
    }
}

impl<S: Io> AsyncRead for PgStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: Io> AsyncWrite for PgStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl<S: Io> TlsStream for PgStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        match self {
            PgStream::Plain(_) => ChannelBinding::none(),
            PgStream::Tls(s) => s.channel_binding(),
        }
    }
}

/// tokio-postgres' TLS hook over [`negotiate`] (see the module comment for why it is told
/// `sslnegotiation=direct`). A setup that failed is reported at connect time, with the host.
#[derive(Clone)]
pub struct MakePgTls {
    mode: SslMode,
    setup: SetupSource,
}

impl std::fmt::Debug for MakePgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MakePgTls").field("mode", &self.mode).finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum SetupSource {
    /// Built once (one connection, or a setup that failed).
    Built(Result<TlsSetup, Arc<TlsSetupError>>),
    /// Built again for every connection (a pool): certificate files are re-read, so a renewed
    /// certificate is used from the next new connection on.
    PerConnection(Arc<TlsParams>),
}

impl MakePgTls {
    /// The hook for `setup`, or for a setup that failed to build.
    pub fn new(mode: SslMode, setup: Result<TlsSetup, TlsSetupError>) -> MakePgTls {
        MakePgTls { mode, setup: SetupSource::Built(setup.map_err(Arc::new)) }
    }

    /// A hook that builds the setup for `params` at each connection (reading the certificate
    /// files each time), for pools and other long-lived users that reconnect.
    pub fn per_connection(params: TlsParams) -> MakePgTls {
        MakePgTls { mode: params.mode, setup: SetupSource::PerConnection(Arc::new(params)) }
    }

    /// The `sslmode` asked for.
    pub fn mode(&self) -> SslMode {
        self.mode
    }
}

/// [`MakePgTls`] for one host.
pub struct PgTlsConnect {
    setup: TlsSetup,
    host: String,
}

impl<S: Io> MakeTlsConnect<S> for MakePgTls {
    type Stream = PgStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = TlsError;

    fn make_tls_connect(&mut self, host: &str) -> Result<PgTlsConnect, TlsError> {
        let setup = match &self.setup {
            SetupSource::Built(Ok(setup)) => Ok(setup.clone()),
            SetupSource::Built(Err(e)) => Err(Arc::clone(e)),
            SetupSource::PerConnection(params) => TlsSetup::new(params).map_err(Arc::new),
        };
        match setup {
            Ok(setup) => Ok(PgTlsConnect { setup, host: host.to_string() }),
            Err(e) => Err(TlsError { host: host.to_string(), mode: self.mode, failure: TlsFailure::Setup(e) }),
        }
    }
}

impl<S: Io> TlsConnect<S> for PgTlsConnect {
    type Stream = PgStream<S>;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<PgStream<S>, TlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move { negotiate(stream, &self.setup, &self.host).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn setup(mode: SslMode) -> TlsSetup {
        TlsSetup::new(&TlsParams { mode, ..TlsParams::default() }).unwrap()
    }

    /// A server that reads the 8-byte SSLRequest and answers `answer`.
    async fn answering(answer: u8) -> tokio::io::DuplexStream {
        let (client, mut server) = duplex(64);
        tokio::spawn(async move {
            let mut req = [0u8; 8];
            server.read_exact(&mut req).await.unwrap();
            assert_eq!(req, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f], "SSLRequest");
            server.write_all(&[answer]).await.unwrap();
            // keep the pipe open until the client is done
            let _ = server.read(&mut [0u8; 1]).await;
        });
        client
    }

    #[tokio::test]
    async fn refused_tls_fails_require_and_falls_back_for_prefer() {
        let e = negotiate(answering(b'N').await, &setup(SslMode::Require), "db.example").await.unwrap_err();
        assert!(!e.is_transient(), "a refusal is not retried as a network failure");
        let text = format!("{e}: {}", e.failure);
        assert_eq!(
            text,
            "TLS with db.example (sslmode=require): the server does not accept TLS connections \
             (ssl = off in its postgresql.conf?)"
        );
        let s = negotiate(answering(b'N').await, &setup(SslMode::Prefer), "db.example").await.unwrap();
        assert!(!s.is_tls());
        let (client, server) = duplex(64);
        drop(server);
        let e = negotiate(client, &setup(SslMode::Require), "h").await.unwrap_err();
        assert!(matches!(e.failure, TlsFailure::Io(_)) && e.is_transient(), "{e:?}");
        let e = negotiate(answering(b'E').await, &setup(SslMode::VerifyFull), "h").await.unwrap_err();
        assert!(matches!(e.failure, TlsFailure::Protocol('E')), "{e:?}");
    }

    #[tokio::test]
    async fn disable_sends_nothing() {
        let (client, _server) = duplex(64);
        assert!(!negotiate(client, &setup(SslMode::Disable), "h").await.unwrap().is_tls());
    }

    #[test]
    fn setup_errors_name_the_file() {
        let p = TlsParams {
            mode: SslMode::VerifyFull,
            root_cert: Some(RootCerts::File("/nonexistent/ca.pem".into())),
            client: None,
        };
        let e = TlsSetup::new(&p).unwrap_err();
        assert!(e.to_string().contains("reading sslrootcert /nonexistent/ca.pem"), "{e}");
        assert!(e.is_transient(), "a file may be mounted late");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        let p = TlsParams { root_cert: Some(RootCerts::File(empty)), ..p };
        assert!(matches!(TlsSetup::new(&p), Err(TlsSetupError::NoCertificate { what: "sslrootcert", .. })));
    }
}
