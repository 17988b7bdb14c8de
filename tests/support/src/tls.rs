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

/// A throwaway CA for PostgreSQL tests: a server certificate for `localhost` / 127.0.0.1
/// ([`crate::PgClusterBuilder::ssl`] installs it) and client certificates for roles (CN = the
/// role, which `cert` authentication in pg_hba.conf checks).
pub struct PgPki {
    /// The CA certificate (PEM): `sslrootcert` for clients, `ssl_ca_file` for the server.
    pub ca: PathBuf,
    /// The server's certificate and key (PEM).
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    dir: PathBuf,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

impl PgPki {
    /// Makes the CA and the server certificate under `dir` (created if missing).
    pub fn new(dir: &Path) -> Result<PgPki, String> {
        let err = |e: rcgen::Error| format!("making a test certificate: {e}");
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "strangler test PostgreSQL CA");
        let ca_key = KeyPair::generate().map_err(err)?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(err)?;
        params.subject_alt_names.push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &ca_cert, &ca_key).map_err(err)?;
        let pki = PgPki {
            ca: dir.join("root.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            dir: dir.to_path_buf(),
            ca_cert,
            ca_key,
        };
        write_file(&pki.ca, &pki.ca_cert.pem())?;
        write_file(&pki.server_cert, &cert.pem())?;
        write_private(&pki.server_key, &key.serialize_pem())?;
        Ok(pki)
    }

    /// A client certificate for `role` signed by the CA: (certificate, key) files.
    pub fn client(&self, role: &str) -> Result<(PathBuf, PathBuf), String> {
        let err = |e: rcgen::Error| format!("making a client certificate: {e}");
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, role);
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).map_err(err)?;
        let (c, k) = (self.dir.join(format!("{role}.crt")), self.dir.join(format!("{role}.key")));
        write_file(&c, &cert.pem())?;
        write_private(&k, &key.serialize_pem())?;
        Ok((c, k))
    }
}

fn write_file(p: &Path, text: &str) -> Result<(), String> {
    std::fs::write(p, text).map_err(|e| format!("writing {}: {e}", p.display()))
}

/// A key file, readable by its owner only (PostgreSQL and libpq refuse looser keys).
fn write_private(p: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    write_file(p, text)?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}
