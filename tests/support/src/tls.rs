//! Throwaway certificates for the local stack's HTTPS listener: a CA made at start and a leaf
//! for `localhost` and 127.0.0.1 it signs (rcgen). Nothing here is for production use.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

/// Where [`self_signed`] wrote its files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA to trust (`curl --cacert`).
    pub ca: PathBuf,
    /// The leaf certificate and its key, for `[gateway.tls]`.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a CA and a leaf for `localhost` / 127.0.0.1 under `dir` (created if missing).
pub fn self_signed(dir: &Path) -> Result<TlsFiles, String> {
    let err = |e: rcgen::Error| format!("making the local certificate: {e}");
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "strangler local stack CA");
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(err)?;
    params.subject_alt_names.push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(err)?;
    let files = TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("gateway.crt"), key: dir.join("gateway.key") };
    let write = |p: &Path, t: String| std::fs::write(p, t).map_err(|e| format!("writing {}: {e}", p.display()));
    write(&files.ca, ca.pem())?;
    write(&files.cert, cert.pem())?;
    write(&files.key, key.serialize_pem())?;
    Ok(files)
}
