//! API keys. routes.toml never holds a key: only its SHA-256 digest, or the name of an
//! environment variable or file the key is read from when the config compiles (and then only
//! its digest is kept). A consumer may have several keys at once, which is how keys rotate.
//!
//! A presented key is hashed and looked up by digest; the stored digest is then compared in
//! constant time (`subtle`), so neither the lookup nor the comparison tells an attacker how
//! close a guess was.

use std::collections::HashMap;

use http::HeaderName;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 digest of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    /// The digest of `key` as presented (surrounding whitespace is not trimmed).
    pub fn of(key: &[u8]) -> Self {
        let d = Sha256::digest(key);
        let mut out = [0u8; 32];
        out.copy_from_slice(&d);
        Self(out)
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).ok()?;
            out[i] = u8::from_str_radix(s, 16).ok()?;
        }
        Some(Self(out))
    }
}

/// Every consumer's keys, by digest.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    /// The request header carrying the key (default `x-api-key`).
    pub header: HeaderName,
    by_digest: HashMap<KeyDigest, usize>,
}

impl Default for ApiKeys {
    fn default() -> Self {
        Self::new(HeaderName::from_static(DEFAULT_HEADER))
    }
}

/// Where clients put their key unless `[auth.api_key] header` says otherwise.
pub const DEFAULT_HEADER: &str = "x-api-key";

impl ApiKeys {
    pub fn new(header: HeaderName) -> Self {
        Self { header, by_digest: HashMap::new() }
    }

    /// Adds a key of consumer `consumer`; returns the consumer already holding it, if any.
    pub fn insert(&mut self, digest: KeyDigest, consumer: usize) -> Option<usize> {
        match self.by_digest.get(&digest) {
            Some(&other) => Some(other),
            None => {
                self.by_digest.insert(digest, consumer);
                None
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The consumer whose key `presented` is.
    pub fn find(&self, presented: &[u8]) -> Option<usize> {
        let digest = KeyDigest::of(presented);
        let (stored, consumer) = self.by_digest.get_key_value(&digest)?;
        bool::from(stored.0.ct_eq(&digest.0)).then_some(*consumer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_hex() {
        // sha256("test")
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(KeyDigest::from_hex(hex), Some(KeyDigest::of(b"test")));
        assert_eq!(KeyDigest::from_hex(&hex.to_uppercase()), Some(KeyDigest::of(b"test")));
        assert_eq!(KeyDigest::from_hex(&hex[1..]), None);
        assert_eq!(KeyDigest::from_hex(&hex.replace('9', "g")), None);
    }
}
