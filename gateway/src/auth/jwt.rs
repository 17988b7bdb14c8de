//! JWT bearer tokens: HS256, RS256 and ES256, verified against the keys of a JWKS file (`oct`
//! keys for HS256), with the issuer, the audience and the expiry (a small clock skew allowed)
//! checked. The token's `kid` picks the key; a token without one is tried against every key of
//! its algorithm's family. The algorithm must be one the config accepts and match the key's
//! family, so an RSA public key can never be used as an HMAC secret.

use std::collections::HashMap;

use http::{HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::denial::Denial;

/// The algorithms a config may accept.
pub const ALGORITHMS: &[&str] = &["HS256", "RS256", "ES256"];

/// One verification key of the JWKS.
#[derive(Clone)]
pub struct JwtKey {
    pub kid: Option<String>,
    /// The algorithm this key verifies (from the key's `alg`, or its type).
    pub alg: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

/// `[auth.jwt]`, compiled: keys loaded, one `Validation` per accepted algorithm.
#[derive(Debug, Clone)]
pub struct JwtAuth {
    pub keys: Vec<JwtKey>,
    /// Accepted algorithms with their validation (issuer, audience, leeway).
    validations: Vec<(Algorithm, Validation)>,
    /// The claim naming the consumer (default `sub`).
    pub consumer_claim: String,
    /// Claim value -> consumer index.
    pub subjects: HashMap<String, usize>,
    /// Claims forwarded upstream, with their header names.
    pub forward_claims: Vec<(String, HeaderName)>,
}

/// What `[auth.jwt]` says, checked by the config compiler.
#[derive(Debug, Clone, Default)]
pub struct JwtRules {
    pub algorithms: Vec<Algorithm>,
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub leeway_secs: u64,
    pub consumer_claim: String,
    pub forward_claims: Vec<String>,
}

/// Parses an algorithm name the gateway accepts.
pub fn parse_algorithm(s: &str) -> Option<Algorithm> {
    match s {
        "HS256" => Some(Algorithm::HS256),
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        _ => None,
    }
}

impl JwtAuth {
    pub fn new(rules: JwtRules, keys: Vec<JwtKey>, subjects: HashMap<String, usize>) -> Self {
        let validations = rules
            .algorithms
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.leeway = rules.leeway_secs;
                v.validate_nbf = true;
                let mut required = vec!["exp"];
                if rules.audiences.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&rules.audiences);
                    required.push("aud");
                }
                if !rules.issuers.is_empty() {
                    v.set_issuer(&rules.issuers);
                    required.push("iss");
                }
                v.set_required_spec_claims(&required);
                (alg, v)
            })
            .collect();
        let forward_claims = rules
            .forward_claims
            .iter()
            .filter_map(|c| {
                let name = format!("{}{}", strangler_wire::CLAIM_HEADER_PREFIX, c.to_ascii_lowercase());
                HeaderName::from_bytes(name.as_bytes()).ok().map(|h| (c.clone(), h))
            })
            .collect();
        Self { keys, validations, consumer_claim: rules.consumer_claim, subjects, forward_claims }
    }

    /// Verifies `token` and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, Denial> {
        let bad = |message| Denial::Unauthorized { reason: "invalid", message, token: true };
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad("the token is malformed"))?;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg) else {
            return Err(bad("the token's algorithm is not accepted"));
        };
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.alg == header.alg && (header.kid.is_none() || k.kid == header.kid))
            .peekable();
        if candidates.peek().is_none() {
            return Err(Denial::Unauthorized {
                reason: "unknown_key",
                message: "the token is signed by an unknown key",
                token: true,
            });
        }
        let mut last = bad("the token's signature is not valid");
        for k in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    let signature = matches!(e.kind(), ErrorKind::InvalidSignature);
                    last = denial(e.kind());
                    if !signature {
                        // the signature was good: the claims decided
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// The consumer a token's claims name, if it is one we know.
    pub fn consumer_of(&self, claims: &Map<String, Value>) -> Option<usize> {
        match claims.get(&self.consumer_claim)? {
            Value::String(s) => self.subjects.get(s).copied(),
            _ => None,
        }
    }

    /// The forwarded claims of a token, as headers (claims missing or unfit for a header are left out).
    pub fn forwarded(&self, claims: &Map<String, Value>) -> Vec<(HeaderName, HeaderValue)> {
        self.forward_claims
            .iter()
            .filter_map(|(claim, header)| {
                let text = match claims.get(claim)? {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                HeaderValue::from_str(&text).ok().map(|v| (header.clone(), v))
            })
            .collect()
    }
}

/// A failed check, as the client hears it.
fn denial(kind: &ErrorKind) -> Denial {
    let (reason, message) = match kind {
        ErrorKind::ExpiredSignature => ("expired", "the token has expired"),
        ErrorKind::ImmatureSignature => ("not_yet_valid", "the token is not valid yet"),
        ErrorKind::InvalidAudience => ("audience", "the token is not meant for this audience"),
        ErrorKind::InvalidIssuer => ("issuer", "the token's issuer is not trusted"),
        ErrorKind::MissingRequiredClaim(_) => ("invalid", "the token lacks a required claim"),
        ErrorKind::InvalidSignature => ("invalid", "the token's signature is not valid"),
        _ => ("invalid", "the token is not valid"),
    };
    Denial::Unauthorized { reason, message, token: true }
}

/// Whether `claims` satisfy every `(name, accepted values)` rule. A claim matches a value when
/// it equals it, when it is an array containing it, or when it is a space-separated list
/// (OAuth `scope`) containing it.
pub fn claims_allowed(claims: &Map<String, Value>, rules: &[(String, Vec<String>)]) -> bool {
    rules.iter().all(|(name, accepted)| {
        let Some(v) = claims.get(name) else { return false };
        accepted.iter().any(|want| match v {
            Value::String(s) => s == want || s.split_ascii_whitespace().any(|w| w == want),
            Value::Array(items) => items.iter().any(|i| i.as_str() == Some(want.as_str())),
            Value::Bool(b) => b.to_string() == *want,
            Value::Number(n) => n.to_string() == *want,
            _ => false,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn auth() -> JwtAuth {
        let rules = JwtRules {
            algorithms: vec![Algorithm::HS256],
            issuers: vec!["https://id.example".into()],
            audiences: vec!["shop".into()],
            leeway_secs: 5,
            consumer_claim: "sub".into(),
            forward_claims: vec!["sub".into(), "tenant".into()],
        };
        let key = JwtKey { kid: Some("k1".into()), alg: Algorithm::HS256, key: DecodingKey::from_secret(b"s3cret") };
        JwtAuth::new(rules, vec![key], HashMap::from([("app-1".to_string(), 0)]))
    }

    fn token(kid: &str, secret: &[u8], claims: Value) -> String {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.into());
        encode(&h, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn verification_table() {
        let a = auth();
        let good = json!({"sub": "app-1", "iss": "https://id.example", "aud": "shop", "exp": now() + 60, "tenant": 7});
        let claims = a.verify(&token("k1", b"s3cret", good.clone())).unwrap();
        assert_eq!(a.consumer_of(&claims), Some(0));
        let fwd = a.forwarded(&claims);
        assert_eq!(fwd[0].0.as_str(), "x-strangler-claim-sub");
        assert_eq!(fwd[1].1, "7");
        let reason = |t: String| a.verify(&t).unwrap_err().reason();
        let with = |k: &str, v: Value| {
            let mut c = good.clone();
            c[k] = v;
            c
        };
        assert_eq!(reason(token("k1", b"other", good.clone())), "invalid");
        assert_eq!(reason(token("k2", b"s3cret", good.clone())), "unknown_key");
        assert_eq!(reason(token("k1", b"s3cret", with("exp", json!(now() - 60)))), "expired");
        // within the clock skew
        assert!(a.verify(&token("k1", b"s3cret", with("exp", json!(now() - 2)))).is_ok());
        assert_eq!(reason(token("k1", b"s3cret", with("aud", json!("admin")))), "audience");
        assert_eq!(reason(token("k1", b"s3cret", with("iss", json!("https://evil")))), "issuer");
        assert_eq!(reason("not.a.token".into()), "invalid");
    }

    #[test]
    fn claim_rules() {
        let c = json!({"scope": "orders:read orders:write", "roles": ["ops"], "tier": 2}).as_object().unwrap().clone();
        let rule = |n: &str, v: &[&str]| vec![(n.to_string(), v.iter().map(|s| s.to_string()).collect())];
        assert!(claims_allowed(&c, &rule("scope", &["orders:write"])));
        assert!(!claims_allowed(&c, &rule("scope", &["admin"])));
        assert!(claims_allowed(&c, &rule("roles", &["admin", "ops"])));
        assert!(claims_allowed(&c, &rule("tier", &["2"])));
        assert!(!claims_allowed(&c, &rule("missing", &["x"])));
    }
}
