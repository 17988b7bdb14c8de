//! The `[gateway.tls]` section: the HTTPS listener and its certificates. Certificates and keys
//! are read and checked when the file is loaded (and again on every reload, including when only
//! a certificate file changed), so a bad certificate is rejected like a bad routes.toml: the
//! last good set keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use toml::Spanned;

use super::diagnostics::Issues;
use super::raw::RawTls;
use super::values::addr;
use super::values::Secrets;
use crate::table::{Certificate, TlsListener};

/// Compiles `[gateway.tls]`. With [`Secrets::Skip`] (offline checks) the files are not read.
pub(super) fn compile_tls(issues: &mut Issues<'_>, raw: &Spanned<RawTls>, secrets: Secrets) -> Option<TlsListener> {
    let t = raw.get_ref();
    let listen = addr(issues, &Some(t.listen.clone()), "127.0.0.1:8443");
    if t.certificates.is_empty() {
        issues.at(
            raw,
            "[gateway.tls] has no certificates",
            Some("add certificates = [{ cert = \"/path/fullchain.pem\", key = \"/path/key.pem\" }]".into()),
        );
    }
    let mut certificates = Vec::new();
    let mut files = Vec::new();
    for c in &t.certificates {
        let (cert, key) = (PathBuf::from(c.get_ref().cert.get_ref()), PathBuf::from(c.get_ref().key.get_ref()));
        files.push(cert.clone());
        files.push(key.clone());
        if secrets == Secrets::Skip {
            continue;
        }
        match load_certificate(&cert, &key) {
            Ok(k) => certificates.push(Certificate { cert_file: cert, key: Arc::new(k) }),
            Err(why) => issues.at(
                c,
                why,
                Some("a PEM certificate chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 or SEC1)".into()),
            ),
        }
    }
    let fingerprint = files_fingerprint(&files);
    Some(TlsListener {
        listen,
        certificates,
        fingerprint,
        files,
        http2: t.http2.unwrap_or(true),
        redirect_http: t.redirect_http.unwrap_or(false),
    })
}

/// Reads a certificate chain and its key, and checks that they belong together.
pub fn load_certificate(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key_der, &provider)
        .map_err(|e| format!("certificate {} and key {} do not go together: {e}", cert.display(), key.display()))?;
    webpki::EndEntityCert::try_from(&certified.cert[0])
        .map_err(|e| format!("certificate {} cannot be parsed: {e:?}", cert.display()))?;
    Ok(certified)
}

/// A checksum of the files' contents (missing files count as empty): the watcher reloads when it
/// changes, e.g. when Kubernetes swaps a Secret's files.
pub fn files_fingerprint(files: &[PathBuf]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for f in files {
        h.update(f.as_os_str().as_encoded_bytes());
        h.update(&std::fs::read(f).unwrap_or_default());
    }
    h.finalize()
}
