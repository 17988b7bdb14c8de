//! The `x-strangler-*` headers and the shadow dry-run contract.
//!
//! The gateway owns every header whose name starts with [`INTERNAL_PREFIX`] (as Envoy owns
//! `x-envoy-*`): it strips them from every client request before anything else sees it, and adds
//! only its own.
//!
//! A mirrored write that must not commit carries [`SHADOW_HEADER`] with the value
//! `1; secret=<shared secret>` ([`DryRun::header_value`]). A service honours the dry run only
//! when the secret matches its own copy ([`DryRun::classify`]); a header without it, or with the
//! wrong one, is ignored (the write commits) and should be counted, so that a caller inside the
//! cluster that bypasses the gateway cannot make a service silently roll back real writes.

use std::fmt;
use std::path::Path;

use subtle::ConstantTimeEq;

/// Every header the gateway owns starts with this (lowercase, as `http` stores names).
pub const INTERNAL_PREFIX: &str = "x-strangler-";

/// Marks a mirrored request as a dry run (its transaction is rolled back by the service).
pub const SHADOW_HEADER: &str = "x-strangler-shadow";

/// The consumer (`[consumers.NAME]` of routes.toml) the gateway authenticated the request as. Set
/// by the gateway only; a client's own value never passes (the whole namespace is stripped).
pub const CONSUMER_HEADER: &str = "x-strangler-consumer";

/// How the gateway authenticated the request: `api-key` or `jwt`.
pub const AUTH_METHOD_HEADER: &str = "x-strangler-auth";

/// Prefix of the headers carrying the JWT claims a gateway forwards:
/// `x-strangler-claim-<claim name, lowercase>`; strings as they are, other JSON values as JSON.
pub const CLAIM_HEADER_PREFIX: &str = "x-strangler-claim-";

/// What precedes the secret in a dry-run header value.
const DRY_RUN_PREFIX: &str = "1; secret=";

/// Shortest secret accepted: guessing it must not be practical.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted (it travels in a header).
pub const MAX_SECRET_LEN: usize = 512;

/// True when `name` (lowercase) is in the gateway's namespace.
#[inline]
pub fn is_internal(name: &str) -> bool {
    name.len() >= INTERNAL_PREFIX.len()
        && name.as_bytes()[..INTERNAL_PREFIX.len()].eq_ignore_ascii_case(INTERNAL_PREFIX.as_bytes())
}

/// The secret the gateway and the services share to authenticate dry-run requests.
///
/// Its `Debug` never shows the value (and it has no `Display`), so it cannot end up in a log by
/// accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret(String);

/// Why a secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is unset or empty.
    #[error("environment variable {0} is unset or empty")]
    EnvUnset(String),
    /// The file could not be read.
    #[error("cannot read {0}: {1}")]
    File(String, #[source] std::io::Error),
    /// The value is too short, too long, or has characters a header value cannot carry.
    #[error("{0}")]
    Invalid(String),
}

impl SharedSecret {
    /// Validates `value` (surrounding whitespace, e.g. a file's trailing newline, is trimmed):
    /// 16–512 visible ASCII characters without `;`.
    pub fn new(value: &str) -> Result<Self, SecretError> {
        let v = value.trim();
        if v.len() < MIN_SECRET_LEN || v.len() > MAX_SECRET_LEN {
            return Err(SecretError::Invalid(format!(
                "the shared secret must be {MIN_SECRET_LEN}–{MAX_SECRET_LEN} characters long (it is {})",
                v.len()
            )));
        }
        if !v.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
            return Err(SecretError::Invalid(
                "the shared secret may only contain visible ASCII characters other than ';'".into(),
            ));
        }
        Ok(Self(v.to_string()))
    }

    /// Reads the secret from the file `file` when given, else from the environment variable
    /// `env_var`.
    pub fn load(env_var: Option<&str>, file: Option<&Path>) -> Result<Option<Self>, SecretError> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| SecretError::File(path.display().to_string(), e))?;
            return Self::new(&text).map(Some);
        }
        if let Some(var) = env_var {
            let v = std::env::var(var).unwrap_or_default();
            if v.trim().is_empty() {
                return Err(SecretError::EnvUnset(var.to_string()));
            }
            return Self::new(&v).map(Some);
        }
        Ok(None)
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret([redacted])")
    }
}

/// How a service must treat a request's [`SHADOW_HEADER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DryRun {
    /// No dry-run header: an ordinary request.
    Absent,
    /// The header carries the shared secret: run the request and roll its transaction back.
    Authorised,
    /// The header is present without a secret (e.g. the old `1`): ignore it, commit, count it.
    MissingSecret,
    /// The header carries a secret that does not match: ignore it, commit, count it.
    WrongSecret,
    /// The service has no secret configured, so it honours no dry run: commit, count it.
    NotConfigured,
}

impl DryRun {
    /// The value the gateway sends on a mirrored write.
    pub fn header_value(secret: &SharedSecret) -> String {
        let mut v = String::with_capacity(DRY_RUN_PREFIX.len() + secret.0.len());
        v.push_str(DRY_RUN_PREFIX);
        v.push_str(&secret.0);
        v
    }

    /// Classifies the header's value (`None` when absent) against the service's secret.
    /// The comparison takes the same time wherever the first differing byte is.
    pub fn classify(value: Option<&[u8]>, expected: Option<&SharedSecret>) -> DryRun {
        let Some(value) = value else { return DryRun::Absent };
        let Some(expected) = expected else { return DryRun::NotConfigured };
        let Some(given) = value.strip_prefix(DRY_RUN_PREFIX.as_bytes()) else { return DryRun::MissingSecret };
        let given = given.trim_ascii();
        if given.is_empty() {
            return DryRun::MissingSecret;
        }
        if bool::from(given.ct_eq(expected.0.as_bytes())) {
            DryRun::Authorised
        } else {
            DryRun::WrongSecret
        }
    }

    /// True only for [`DryRun::Authorised`].
    pub fn roll_back(self) -> bool {
        self == DryRun::Authorised
    }

    /// A metric label for the ignored cases (`None` for `Absent` and `Authorised`).
    pub fn rejection(self) -> Option<&'static str> {
        match self {
            DryRun::MissingSecret => Some("missing_secret"),
            DryRun::WrongSecret => Some("wrong_secret"),
            DryRun::NotConfigured => Some("not_configured"),
            DryRun::Absent | DryRun::Authorised => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SharedSecret {
        SharedSecret::new("0123456789abcdef-secret").unwrap()
    }

    #[test]
    fn internal_names() {
        for (name, want) in [
            ("x-strangler-shadow", true),
            ("X-Strangler-Consumer", true),
            ("x-strangler-", true),
            ("x-strangle", false),
            ("x-request-id", false),
            ("", false),
        ] {
            assert_eq!(is_internal(name), want, "{name}");
        }
    }

    #[test]
    fn dry_run_table() {
        let s = secret();
        let good = DryRun::header_value(&s);
        type Case<'a> = (Option<&'a [u8]>, Option<&'a SharedSecret>, DryRun);
        let cases: &[Case] = &[
            (None, Some(&s), DryRun::Absent),
            (None, None, DryRun::Absent),
            (Some(good.as_bytes()), Some(&s), DryRun::Authorised),
            (Some(b"1"), Some(&s), DryRun::MissingSecret),
            (Some(b"true"), Some(&s), DryRun::MissingSecret),
            (Some(b"1; secret="), Some(&s), DryRun::MissingSecret),
            (Some(b"1; secret=0123456789abcdef-secreT"), Some(&s), DryRun::WrongSecret),
            (Some(b"1; secret=0123456789abcdef-secret-and-more"), Some(&s), DryRun::WrongSecret),
            (Some(good.as_bytes()), None, DryRun::NotConfigured),
        ];
        for (value, expected, want) in cases {
            assert_eq!(DryRun::classify(*value, *expected), *want, "{:?}", value.map(String::from_utf8_lossy));
        }
        assert!(DryRun::Authorised.roll_back());
        assert!(!DryRun::WrongSecret.roll_back());
    }

    #[test]
    fn secrets_are_validated_and_never_shown() {
        assert!(SharedSecret::new("short").is_err());
        assert!(SharedSecret::new("has a space in the middle").is_err());
        assert!(SharedSecret::new("has;a;semicolon;inside").is_err());
        let s = SharedSecret::new("  0123456789abcdef\n").unwrap();
        assert_eq!(s.expose(), "0123456789abcdef");
        assert!(!format!("{s:?}").contains("0123"));
    }

    #[test]
    fn secrets_load_from_file_or_env() {
        let dir = std::env::temp_dir().join(format!("wire-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "from-a-file-0123456789\n").unwrap();
        let s = SharedSecret::load(Some("STRANGLER_WIRE_TEST_UNSET"), Some(&file)).unwrap().unwrap();
        assert_eq!(s.expose(), "from-a-file-0123456789");
        assert!(matches!(SharedSecret::load(Some("STRANGLER_WIRE_TEST_UNSET"), None), Err(SecretError::EnvUnset(_))));
        assert!(matches!(SharedSecret::load(None, Some(&dir.join("missing"))), Err(SecretError::File(..))));
        assert_eq!(SharedSecret::load(None, None).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
