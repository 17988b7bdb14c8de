//! Consumers and authentication: who is calling ([`Consumer`]), how a route wants them proven
//! ([`RouteAuth`]), and the decision for one request ([`authenticate`]): an [`Identity`], or a
//! [`Denial`] (401 with a challenge, or 403). Pure: the keys are loaded when the config compiles
//! (`config::consumers`), so the request path only hashes, looks up and verifies.
//!
//! - [`api_key`]: keys held as SHA-256 digests, looked up by digest and confirmed in constant time.
//! - [`jwt`]: HS256/RS256/ES256 tokens checked against a JWKS, issuer, audience and expiry.

pub mod api_key;
mod denial;
pub mod jwt;

use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::RequestHeader;

pub use api_key::{ApiKeys, KeyDigest};
pub use denial::Denial;
pub use jwt::{JwtAuth, JwtKey};

/// A `[consumers.NAME]`: someone who calls the API.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub name: String,
    /// The name as the `x-strangler-consumer` value forwarded upstream.
    pub header: HeaderValue,
    pub description: Option<String>,
}

/// Everything the gateway knows about consumers and credentials (`[consumers]` and `[auth]`).
#[derive(Debug, Default)]
pub struct AuthConfig {
    /// By index; routes refer to consumers by index.
    pub consumers: Vec<Consumer>,
    pub api_keys: ApiKeys,
    /// `None`: no `[auth.jwt]` (a route asking for JWT is a config error).
    pub jwt: Option<JwtAuth>,
    /// Key files read (API key files, the JWKS file) and a checksum of their contents: when it
    /// changes on disk the config is reloaded, like a certificate.
    pub files: Vec<std::path::PathBuf>,
    pub fingerprint: u32,
}

/// Which credentials a route accepts (`auth = "api-key" | "jwt" | ["api-key", "jwt"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Methods {
    pub api_key: bool,
    pub jwt: bool,
}

impl Methods {
    /// `api-key`, `jwt`: the methods accepted, by name.
    pub fn names(self) -> Vec<&'static str> {
        [self.api_key.then_some("api-key"), self.jwt.then_some("jwt")].into_iter().flatten().collect()
    }
}

/// A route's authentication rules. Routes with `auth = "none"` (the default) have none.
#[derive(Debug, Clone, Default)]
pub struct RouteAuth {
    pub methods: Methods,
    /// Consumers allowed (by index, sorted); `None`: any authenticated caller.
    pub consumers: Option<Vec<usize>>,
    /// Claims a JWT must carry: name and the values accepted (any of them).
    pub claims: Vec<(String, Vec<String>)>,
    /// Forward the credential (Authorization / the API key header) upstream.
    pub forward_credentials: bool,
}

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    ApiKey,
    Jwt,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::ApiKey => "api-key",
            Method::Jwt => "jwt",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub method: Method,
    /// The consumer, when the credential belongs to one (a valid JWT may name nobody we know).
    pub consumer: Option<usize>,
    /// The claims forwarded upstream (`[auth.jwt] forward_claims`), as header name and value.
    pub forwarded: Vec<(HeaderName, HeaderValue)>,
}

/// Realm named in the challenges.
pub const REALM: &str = "strangler";

/// The `WWW-Authenticate` challenges of a 401 on a route accepting `methods`: `Bearer` (RFC
/// 6750, with `error="invalid_token"` when a token was presented) and `ApiKey` with the header
/// to use.
pub fn challenges(auth: &AuthConfig, methods: Methods, denial: &Denial) -> Vec<HeaderValue> {
    let mut out = Vec::with_capacity(2);
    if methods.jwt {
        let v = match denial {
            Denial::Unauthorized { token: false, .. } => format!("Bearer realm=\"{REALM}\""),
            Denial::Unauthorized { message, .. } => {
                format!("Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{message}\"")
            }
            Denial::Forbidden { .. } => format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\""),
        };
        out.extend(HeaderValue::from_str(&v).ok());
    }
    if methods.api_key {
        let v = format!("ApiKey realm=\"{REALM}\", header=\"{}\"", auth.api_keys.header);
        out.extend(HeaderValue::from_str(&v).ok());
    }
    out
}

/// The bearer token of an `Authorization` header, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Decides who the request comes from and whether `rule` lets them in. A credential of the
/// first accepted kind that is present is the one judged (an API key before a bearer token);
/// a bad credential is refused even if another kind would have passed.
pub fn authenticate(auth: &AuthConfig, rule: &RouteAuth, headers: &HeaderMap) -> Result<Identity, Denial> {
    let key = rule.methods.api_key.then(|| headers.get(&auth.api_keys.header)).flatten();
    let token = if rule.methods.jwt && key.is_none() { bearer(headers) } else { None };
    let identity = match (key, token, auth.jwt.as_ref()) {
        (Some(k), _, _) => {
            let consumer = auth.api_keys.find(k.as_bytes()).ok_or(Denial::Unauthorized {
                reason: "invalid",
                message: "the API key is not valid",
                token: false,
            })?;
            Identity { method: Method::ApiKey, consumer: Some(consumer), forwarded: Vec::new() }
        }
        (None, Some(t), Some(jwt)) => {
            let claims = jwt.verify(t)?;
            let consumer = jwt.consumer_of(&claims);
            if !rule.claims.is_empty() && !jwt::claims_allowed(&claims, &rule.claims) {
                return Err(Denial::Forbidden {
                    reason: "claims",
                    message: "the token's claims do not allow this route",
                });
            }
            Identity { method: Method::Jwt, consumer, forwarded: jwt.forwarded(&claims) }
        }
        _ => {
            return Err(Denial::Unauthorized { reason: "missing", message: "credentials are required", token: false });
        }
    };
    if identity.method == Method::ApiKey && !rule.claims.is_empty() {
        return Err(Denial::Forbidden { reason: "claims", message: "this route needs a token with claims" });
    }
    if let Some(allowed) = &rule.consumers {
        if identity.consumer.is_none_or(|c| allowed.binary_search(&c).is_err()) {
            return Err(Denial::Forbidden { reason: "consumer", message: "this consumer may not use this route" });
        }
    }
    Ok(identity)
}

/// Writes the identity onto the request (the upstream request and the shadow mirror are both
/// made from it): the consumer, the method and the forwarded claims in gateway-owned headers;
/// the credential itself removed unless the route forwards it.
pub fn apply(auth: &AuthConfig, rule: &RouteAuth, id: &Identity, req: &mut RequestHeader) {
    if !rule.forward_credentials {
        match id.method {
            Method::ApiKey => {
                req.remove_header(&auth.api_keys.header);
            }
            Method::Jwt => {
                req.remove_header(&http::header::AUTHORIZATION);
            }
        }
    }
    if let Some(c) = id.consumer.and_then(|c| auth.consumers.get(c)) {
        let _ = req.insert_header(HeaderName::from_static(strangler_wire::CONSUMER_HEADER), c.header.clone());
    }
    let _ = req.insert_header(HeaderName::from_static(strangler_wire::AUTH_METHOD_HEADER), id.method.as_str());
    for (name, value) in &id.forwarded {
        let _ = req.insert_header(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        let mut keys = ApiKeys::new(HeaderName::from_static("x-api-key"));
        keys.insert(KeyDigest::of(b"old-key"), 0);
        keys.insert(KeyDigest::of(b"new-key"), 0);
        keys.insert(KeyDigest::of(b"partner-key"), 1);
        let consumer =
            |n: &str| Consumer { name: n.into(), header: HeaderValue::from_str(n).unwrap(), description: None };
        AuthConfig { consumers: vec![consumer("app"), consumer("partner")], api_keys: keys, ..Default::default() }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn api_keys_table() {
        let auth = config();
        let rule = RouteAuth { methods: Methods { api_key: true, jwt: false }, ..Default::default() };
        let only_app = RouteAuth { consumers: Some(vec![0]), ..rule.clone() };
        let who = |r: &RouteAuth, h: &[(&'static str, &str)]| authenticate(&auth, r, &headers(h)).map(|i| i.consumer);
        assert_eq!(who(&rule, &[("x-api-key", "old-key")]), Ok(Some(0)));
        assert_eq!(who(&rule, &[("x-api-key", "new-key")]), Ok(Some(0)));
        assert_eq!(who(&rule, &[("x-api-key", "partner-key")]), Ok(Some(1)));
        assert_eq!(who(&rule, &[("x-api-key", "nope")]).unwrap_err().reason(), "invalid");
        assert_eq!(who(&rule, &[]).unwrap_err().reason(), "missing");
        assert_eq!(who(&rule, &[("authorization", "Bearer x")]).unwrap_err().reason(), "missing");
        assert!(matches!(who(&only_app, &[("x-api-key", "partner-key")]), Err(Denial::Forbidden { .. })));
        assert_eq!(who(&only_app, &[("x-api-key", "new-key")]), Ok(Some(0)));
    }

    #[test]
    fn challenges_name_each_method() {
        let auth = config();
        let both = Methods { api_key: true, jwt: true };
        let missing = Denial::Unauthorized { reason: "missing", message: "m", token: false };
        let c = challenges(&auth, both, &missing);
        assert_eq!(c[0], "Bearer realm=\"strangler\"");
        assert_eq!(c[1], "ApiKey realm=\"strangler\", header=\"x-api-key\"");
        let bad = Denial::Unauthorized { reason: "expired", message: "the token has expired", token: true };
        let c = challenges(&auth, Methods { api_key: false, jwt: true }, &bad);
        assert_eq!(c.len(), 1);
        assert!(c[0].to_str().unwrap().contains("error=\"invalid_token\""));
    }
}
