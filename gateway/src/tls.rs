//! TLS termination: the certificate resolver the HTTPS listener asks at every handshake. It
//! picks, from the serving table's `[gateway.tls]` certificates, the first whose names cover the
//! client's SNI (the first certificate when none does, or when the client sent no SNI). Because
//! it reads the serving table, a reload that brings new certificates takes effect for the next
//! handshake; connections already open keep theirs. A reload that fails (a bad certificate)
//! never reaches the table, so the last good certificates keep serving.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::{DnsName, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::reload::ConfigStore;
use crate::table::Certificate;

/// Chooses a certificate by SNI from the serving configuration.
pub struct SniResolver {
    store: Arc<ConfigStore>,
    /// The last non-empty certificate set seen (kept if a reload drops `[gateway.tls]`, which
    /// only takes effect at restart).
    last: ArcSwap<Vec<Certificate>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl SniResolver {
    pub fn new(store: Arc<ConfigStore>) -> Self {
        Self { store, last: ArcSwap::from_pointee(Vec::new()) }
    }

    fn certificates(&self) -> Arc<Vec<Certificate>> {
        let table = self.store.current();
        match table.settings.tls.as_ref().filter(|t| !t.certificates.is_empty()) {
            Some(t) => {
                let current = self.last.load();
                let same = current.len() == t.certificates.len()
                    && current.iter().zip(&t.certificates).all(|(a, b)| Arc::ptr_eq(&a.key, &b.key));
                if same {
                    return current.clone();
                }
                let fresh = Arc::new(t.certificates.clone());
                self.last.store(fresh.clone());
                fresh
            }
            None => self.last.load_full(),
        }
    }
}

/// Whether the leaf certificate of `key` is valid for `name` (its SAN DNS names, wildcards
/// included), as a client would check it.
pub fn covers(key: &CertifiedKey, name: &str) -> bool {
    let Ok(dns) = DnsName::try_from(name.to_string()) else { return false };
    let Some(leaf) = key.cert.first() else { return false };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else { return false };
    cert.verify_is_valid_for_subject_name(&ServerName::DnsName(dns)).is_ok()
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certificates();
        if let Some(sni) = hello.server_name() {
            if let Some(c) = certs.iter().find(|c| covers(&c.key, sni)) {
                return Some(c.key.clone());
            }
        }
        certs.first().map(|c| c.key.clone())
    }
}
