//! The `[consumers.NAME]` and `[auth]` sections, and a route's `auth`, `consumers`, `claims` and
//! `forward_credentials` keys. API keys named by an environment variable or a file, and the JWKS
//! file, are read here (not in offline checks); only digests and decoded public keys are kept.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use http::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use toml::Spanned;

use super::diagnostics::Issues;
use super::raw::{RawApiKey, RawAuth, RawAuthMethods, RawClaimValues, RawConsumer, RawJwtAuth, RawRoute};
use super::values::{dur, Secrets};
use crate::auth::jwt::{parse_algorithm, JwtRules, ALGORITHMS};
use crate::auth::{api_key, ApiKeys, AuthConfig, Consumer, JwtAuth, JwtKey, KeyDigest, Methods, RouteAuth};

/// Compiles `[consumers]` and `[auth]`.
pub(super) fn compile_auth(
    issues: &mut Issues<'_>,
    consumers: &BTreeMap<String, Spanned<RawConsumer>>,
    auth: Option<&RawAuth>,
    secrets: Secrets,
) -> AuthConfig {
    let header = auth.and_then(|a| a.api_key.as_ref()).and_then(|k| k.header.as_ref());
    let header = match header {
        None => HeaderName::from_static(api_key::DEFAULT_HEADER),
        Some(h) => match HeaderName::from_bytes(h.get_ref().trim().as_bytes()) {
            Ok(n) if !strangler_wire::headers::is_internal(n.as_str()) => n,
            _ => {
                issues.at(h, format!("{:?} is not a header a client can send", h.get_ref()), None);
                HeaderName::from_static(api_key::DEFAULT_HEADER)
            }
        },
    };
    let mut out = AuthConfig { api_keys: ApiKeys::new(header), ..Default::default() };
    let mut subjects: HashMap<String, usize> = HashMap::new();
    for (i, (name, c)) in consumers.iter().enumerate() {
        let value = HeaderValue::from_str(name).ok().filter(|_| valid_name(name));
        let Some(value) = value else {
            issues.at(
                c,
                format!("consumer name {name:?} is not usable"),
                Some("use letters, digits, '-', '_' and '.'".into()),
            );
            continue;
        };
        out.consumers.push(Consumer {
            name: name.clone(),
            header: value,
            description: c.get_ref().description.clone(),
        });
        for key in c.get_ref().api_keys.iter().flatten() {
            if let Some(digest) = key_digest(issues, key, secrets, &mut out.files) {
                if let Some(other) = out.api_keys.insert(digest, i) {
                    let other = consumers.keys().nth(other).cloned().unwrap_or_default();
                    issues.at(key, format!("this API key is already a key of consumer {other:?}"), None);
                }
            }
        }
        for s in c.get_ref().jwt_subjects.iter().flatten() {
            if let Some(&other) = subjects.get(s.get_ref()) {
                let other = consumers.keys().nth(other).cloned().unwrap_or_default();
                issues.at(s, format!("JWT subject {:?} already identifies consumer {other:?}", s.get_ref()), None);
            }
            subjects.insert(s.get_ref().clone(), i);
        }
    }
    out.jwt = auth.and_then(|a| a.jwt.as_ref()).map(|j| jwt(issues, j, subjects, secrets, &mut out.files));
    out.fingerprint = super::tls::files_fingerprint(&out.files);
    out
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The digest of one `api_keys` entry (read from its env var or file unless offline).
fn key_digest(
    issues: &mut Issues<'_>,
    key: &Spanned<RawApiKey>,
    secrets: Secrets,
    files: &mut Vec<PathBuf>,
) -> Option<KeyDigest> {
    let k = key.get_ref();
    let hint = "write exactly one of { sha256 = \"<64 hex digits>\" }, { env = \"VAR\" }, { file = \"/path\" }";
    match (&k.sha256, &k.env, &k.file) {
        (Some(h), None, None) => {
            let d = KeyDigest::from_hex(h.get_ref());
            if d.is_none() {
                issues.at(h, "sha256 must be 64 hex digits", Some("printf %s \"$KEY\" | sha256sum".into()));
            }
            d
        }
        (None, Some(var), None) => {
            if secrets == Secrets::Skip {
                return None;
            }
            match std::env::var(var.get_ref()) {
                Ok(v) if !v.trim().is_empty() => Some(KeyDigest::of(v.trim().as_bytes())),
                _ => {
                    issues.at(var, format!("environment variable {} is unset or empty", var.get_ref()), None);
                    None
                }
            }
        }
        (None, None, Some(f)) => {
            files.push(PathBuf::from(f.get_ref()));
            if secrets == Secrets::Skip {
                return None;
            }
            match std::fs::read_to_string(f.get_ref()) {
                Ok(v) if !v.trim().is_empty() => Some(KeyDigest::of(v.trim().as_bytes())),
                Ok(_) => {
                    issues.at(f, format!("API key file {} is empty", f.get_ref()), None);
                    None
                }
                Err(e) => {
                    issues.at(f, format!("cannot read API key file {}: {e}", f.get_ref()), None);
                    None
                }
            }
        }
        _ => {
            issues.at(key, "an API key needs exactly one of sha256, env, file", Some(hint.into()));
            None
        }
    }
}

/// `[auth.jwt]`: rules, then the JWKS file.
fn jwt(
    issues: &mut Issues<'_>,
    raw: &Spanned<RawJwtAuth>,
    subjects: HashMap<String, usize>,
    secrets: Secrets,
    files: &mut Vec<PathBuf>,
) -> JwtAuth {
    let j = raw.get_ref();
    let mut algorithms = Vec::new();
    for a in &j.algorithms {
        match parse_algorithm(a.get_ref()) {
            Some(alg) => algorithms.push(alg),
            None => issues.at(
                a,
                format!("unknown JWT algorithm {:?}", a.get_ref()),
                Some(format!("use one of: {}", ALGORITHMS.join(", "))),
            ),
        }
    }
    if j.algorithms.is_empty() {
        issues.at(raw, "[auth.jwt] needs at least one algorithm", Some("algorithms = [\"RS256\"]".into()));
    }
    let strings =
        |v: &Option<Vec<Spanned<String>>>| -> Vec<String> { v.iter().flatten().map(|s| s.get_ref().clone()).collect() };
    let mut forward_claims = Vec::new();
    for c in j.forward_claims.iter().flatten() {
        let name = format!("{}{}", strangler_wire::CLAIM_HEADER_PREFIX, c.get_ref());
        if HeaderName::from_bytes(name.as_bytes()).is_err() || c.get_ref().is_empty() {
            issues.at(c, format!("claim {:?} cannot be a header name", c.get_ref()), None);
        } else {
            forward_claims.push(c.get_ref().clone());
        }
    }
    let rules = JwtRules {
        algorithms: algorithms.clone(),
        issuers: strings(&j.issuer),
        audiences: strings(&j.audience),
        leeway_secs: dur(issues, &j.leeway, std::time::Duration::from_secs(30)).as_secs(),
        consumer_claim: j.consumer_claim.as_ref().map(|c| c.get_ref().clone()).unwrap_or_else(|| "sub".into()),
        forward_claims,
    };
    let path = j.jwks_file.get_ref();
    files.push(PathBuf::from(path));
    let keys = if secrets == Secrets::Skip {
        Vec::new()
    } else {
        match std::fs::read_to_string(path) {
            Ok(text) => match jwks_keys(&text, &algorithms) {
                Ok(keys) => keys,
                Err(e) => {
                    issues.at(&j.jwks_file, format!("JWKS file {path}: {e}"), None);
                    Vec::new()
                }
            },
            Err(e) => {
                issues.at(&j.jwks_file, format!("cannot read JWKS file {path}: {e}"), None);
                Vec::new()
            }
        }
    };
    JwtAuth::new(rules, keys, subjects)
}

/// The keys of a JWKS document usable with `accepted` algorithms. Keys for encryption, and keys
/// of other types or algorithms, are skipped; a key that cannot be decoded is an error.
pub fn jwks_keys(text: &str, accepted: &[Algorithm]) -> Result<Vec<JwtKey>, String> {
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = doc.get("keys").and_then(|k| k.as_array()).ok_or("no \"keys\" array")?;
    let mut out = Vec::new();
    for (i, v) in list.iter().enumerate() {
        if v.get("use").and_then(|u| u.as_str()).is_some_and(|u| u != "sig") {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(v.clone()) else {
            continue; // a key type jsonwebtoken does not know
        };
        let kid = jwk.common.key_id.clone();
        let name = kid.clone().map_or_else(|| format!("key {i}"), |k| format!("key {k:?}"));
        let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::OctetKey(_), None | Some(KeyAlgorithm::HS256)) => Algorithm::HS256,
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                if p.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => continue,
        };
        if !accepted.contains(&alg) {
            continue;
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("{name}: {e}"))?;
        out.push(JwtKey { kid, alg, key });
    }
    if out.is_empty() {
        return Err("no key usable with the accepted algorithms".into());
    }
    Ok(out)
}

/// A route's `auth`, `consumers`, `claims` and `forward_credentials`; `None` for `auth = "none"`.
pub(super) fn route_auth(
    issues: &mut Issues<'_>,
    r: &RawRoute,
    auth: &AuthConfig,
    consumer_names: &[&str],
) -> Option<Box<RouteAuth>> {
    let Some(raw) = &r.auth else {
        for (what, set) in [("consumers", r.consumers.is_some()), ("claims", r.claims.is_some())] {
            if set {
                issues.at(
                    &r.name,
                    format!("`{what}` needs `auth` on the route"),
                    Some("add auth = \"jwt\" or \"api-key\"".into()),
                );
            }
        }
        return None;
    };
    let names: Vec<&str> = match raw.get_ref() {
        RawAuthMethods::One(s) => vec![s.as_str()],
        RawAuthMethods::Any(v) => v.iter().map(String::as_str).collect(),
    };
    let mut methods = Methods::default();
    for n in &names {
        match *n {
            "none" if names.len() == 1 => {}
            "api-key" => methods.api_key = true,
            "jwt" => methods.jwt = true,
            other => issues.at(
                raw,
                format!("unknown auth method {other:?}"),
                Some("use \"none\", \"api-key\", \"jwt\" or [\"api-key\", \"jwt\"]".into()),
            ),
        }
    }
    if methods == Methods::default() {
        return None;
    }
    if methods.jwt && auth.jwt.is_none() {
        issues.at(
            raw,
            "auth \"jwt\" needs an [auth.jwt] section",
            Some("add [auth.jwt] with algorithms and jwks_file".into()),
        );
    }
    let consumers = r.consumers.as_ref().map(|list| {
        let mut ids: Vec<usize> = list
            .iter()
            .filter_map(|c| {
                let found = consumer_names.iter().position(|n| *n == c.get_ref());
                if found.is_none() {
                    issues.at(
                        c,
                        format!("unknown consumer {:?}", c.get_ref()),
                        Some(format!("known consumers: {}", consumer_names.join(", "))),
                    );
                }
                found
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    });
    let claims: Vec<(String, Vec<String>)> = r
        .claims
        .iter()
        .flat_map(|c| c.get_ref().iter())
        .map(|(k, v)| match v {
            RawClaimValues::One(s) => (k.clone(), vec![s.clone()]),
            RawClaimValues::Any(list) => (k.clone(), list.clone()),
        })
        .collect();
    if let Some(c) = r.claims.as_ref().filter(|_| !methods.jwt) {
        issues.at(c, "claims need auth = \"jwt\"", None);
    }
    Some(Box::new(RouteAuth {
        methods,
        consumers,
        claims,
        forward_credentials: r.forward_credentials.unwrap_or(false),
    }))
}
