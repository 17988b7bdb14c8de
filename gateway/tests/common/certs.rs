//! Test certificates: a CA made by rcgen that signs server certificates (for names) and client
//! certificates (for mTLS), written as PEM files in a directory the test owns.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// A test CA; its certificate is `<dir>/ca.pem`.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "strangler test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        Ca { cert, key, dir: dir.to_path_buf() }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate: writes `<file>.crt` / `<file>.key` for `names`, with `cn` as the
    /// subject's common name.
    pub fn leaf(&self, file: &str, names: &[&str], cn: &str) -> (PathBuf, PathBuf) {
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        self.sign(file, params, cn)
    }

    /// A client certificate (extended key usage clientAuth) for `cn`: `<file>.crt` / `<file>.key`.
    pub fn client(&self, file: &str, cn: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(file, params, cn)
    }

    fn sign(&self, file: &str, mut params: CertificateParams, cn: &str) -> (PathBuf, PathBuf) {
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (self.dir.join(format!("{file}.crt")), self.dir.join(format!("{file}.key")));
        // write to temp names and rename, as a Secret rotation swaps whole files
        std::fs::write(c.with_extension("tmp1"), cert.pem()).unwrap();
        std::fs::write(k.with_extension("tmp2"), key.serialize_pem()).unwrap();
        std::fs::rename(c.with_extension("tmp1"), &c).unwrap();
        std::fs::rename(k.with_extension("tmp2"), &k).unwrap();
        (c, k)
    }
}
