//! Consumers and authentication against the real gateway binary: JWTs (HS256, RS256, ES256; an
//! unknown key, expired, wrong audience, claims), API keys (hash, env var and file; rotation by
//! reload), the identity forwarded in gateway-owned headers (a forged one stripped), the
//! credential kept from the upstream, and the shadow mirror carrying the same identity.

mod common;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const HS_SECRET: &[u8] = b"an HS256 secret of the test suite";
const RSA_PEM: &[u8] = include_bytes!("fixtures/jwt-rs256-test-only.pem");
/// The public half of `fixtures/jwt-rs256-test-only.pem` (modulus, exponent 65537).
const RSA_N: &str = "o1E9XaMR5-GWtqN4Z5UkKwZ9PAXidtIxv2TjDgjZqvNmQHtRZvUMIMVGCwu2I0OtEpJiE4Cm7d5UDg-Vp_kKHlrSOR2Yv8OcHk8XhjeBISDmQbaTklRl3WuheeYieSAQPtshA4XE1iaH5EPZGiXwEmpirGYr_k0oeRVHhtlGgRWKFdBXcx3dIUhLmFRY_NWikyB7W_Tk8rGLd5XxLbIZGUFTtEy23oic7eVgnjHfagKd8-IPB9OdXbDzG9Wd8grYPB_N-ADSku9Eh7ghgW_kRjP6hD9ZoPqegUwhnva-_Mtv50E-m2XHiZOB8LXQ4TXt1hKlTrgLV00M4VuWSLz0nw";

fn b64url(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Signing keys for the three algorithms, and the JWKS with their public halves.
struct Keys {
    es: EncodingKey,
    jwks: String,
}

fn keys() -> Keys {
    let ec = rcgen::KeyPair::generate().unwrap();
    let raw = ec.public_key_raw(); // 0x04 || x || y
    let jwks = json!({"keys": [
        {"kty": "oct", "kid": "hs", "alg": "HS256", "k": b64url(HS_SECRET)},
        {"kty": "RSA", "kid": "rs", "alg": "RS256", "use": "sig", "n": RSA_N, "e": "AQAB"},
        {"kty": "EC", "kid": "es", "crv": "P-256", "x": b64url(&raw[1..33]), "y": b64url(&raw[33..65])},
    ]});
    Keys { es: EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(), jwks: jwks.to_string() }
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    encode(&h, claims, key).unwrap()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": "https://id.test", "aud": "shop", "exp": now() + 300, "tenant": "t-7", "scope": "orders:read"})
}

fn config(up: &str, jwks_file: &str, key_file: &str) -> String {
    format!(
        r#"{up}
[auth.jwt]
algorithms = ["HS256", "RS256", "ES256"]
jwks_file = "{jwks_file}"
issuer = ["https://id.test"]
audience = ["shop"]
leeway = "5s"
forward_claims = ["tenant", "scope"]

[consumers.mobile]
jwt_subjects = ["mobile-app"]
api_keys = [{{ sha256 = "{old}" }}, {{ env = "TEST_MOBILE_KEY_NEXT" }}]

[consumers.partner]
jwt_subjects = ["partner-1"]
api_keys = [{{ file = "{key_file}" }}]

[[routes]]
name = "jwt"
match = {{ path = "/jwt/**" }}
stage = "legacy"
auth = "jwt"

[[routes]]
name = "mobile-only"
match = {{ path = "/mobile/**" }}
stage = "legacy"
auth = ["api-key", "jwt"]
consumers = ["mobile"]

[[routes]]
name = "writers"
match = {{ path = "/write/**" }}
stage = "legacy"
auth = "jwt"
claims = {{ scope = "orders:write" }}

[[routes]]
name = "keyed"
match = {{ path = "/keyed/**" }}
stage = "legacy"
auth = "api-key"
forward_credentials = true

[[routes]]
name = "mirrored"
match = {{ path = "/mirrored/**" }}
to = "svc"
stage = "shadow"
auth = "jwt"
"#,
        old = sha256_hex("mobile-key-1"),
    )
}

struct Fixture {
    gw: Gateway,
    legacy: Upstream,
    svc: Upstream,
    keys: Keys,
    rs: EncodingKey,
    hs: EncodingKey,
}

async fn fixture() -> Fixture {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let keys = keys();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, &keys.jwks).unwrap();
    let key_file = dir.path().join("partner.key");
    std::fs::write(&key_file, "partner-key-1\n").unwrap();
    let cfg = config(&upstreams(legacy.addr, svc.addr), jwks.to_str().unwrap(), key_file.to_str().unwrap());
    let gw = Gateway::start_with_env(&cfg, &[], &[("TEST_MOBILE_KEY_NEXT", "mobile-key-2")]);
    // the key files must outlive the gateway's reloads
    std::mem::forget(dir);
    Fixture {
        gw,
        legacy,
        svc,
        keys,
        rs: EncodingKey::from_rsa_pem(RSA_PEM).unwrap(),
        hs: EncodingKey::from_secret(HS_SECRET),
    }
}

async fn call(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut rb = gw.client.get(gw.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    let (status, h) = (r.status().as_u16(), r.headers().clone());
    let text = r.text().await.unwrap();
    (status, h, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_verified_and_identity_is_forwarded() {
    let f = fixture().await;
    let gw = &f.gw;
    let bearer = |t: &str| format!("Bearer {t}");

    // valid tokens of the three algorithms: the consumer and chosen claims go upstream, the
    // token does not, and a forged identity header is replaced
    for (alg, kid, key) in
        [(Algorithm::HS256, "hs", &f.hs), (Algorithm::RS256, "rs", &f.rs), (Algorithm::ES256, "es", &f.keys.es)]
    {
        let t = sign(alg, kid, key, &claims("mobile-app"));
        let auth = bearer(&t);
        let (status, _, body) =
            call(gw, "/jwt/a", &[("authorization", &auth), ("x-strangler-consumer", "admin")]).await;
        assert_eq!(status, 200, "{alg:?}: {body}");
        let h = &body["headers"];
        assert_eq!(h["x-strangler-consumer"], "mobile", "{alg:?}: {body}");
        assert_eq!(h["x-strangler-auth"], "jwt");
        assert_eq!(h["x-strangler-claim-tenant"], "t-7");
        assert_eq!(h["x-strangler-claim-scope"], "orders:read");
        assert!(h.get("authorization").is_none(), "the token must not reach the upstream: {body}");
    }

    // a valid token naming nobody we know: authenticated, no consumer header
    let t = sign(Algorithm::HS256, "hs", &f.hs, &claims("stranger"));
    let (status, _, body) = call(gw, "/jwt/a", &[("authorization", &bearer(&t))]).await;
    assert_eq!(status, 200);
    assert!(body["headers"].get("x-strangler-consumer").is_none(), "{body}");

    // refusals: 401 with a Bearer challenge, in the JSON error shape
    let mut expired = claims("mobile-app");
    expired["exp"] = json!(now() - 60);
    let mut wrong_aud = claims("mobile-app");
    wrong_aud["aud"] = json!("admin-console");
    let other_hs = EncodingKey::from_secret(b"a secret nobody configured");
    let forged_rs = sign(Algorithm::HS256, "rs", &f.hs, &claims("mobile-app")); // alg confusion
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "Bearer realm=\"strangler\""),
        ("unknown kid", Some(sign(Algorithm::HS256, "nope", &f.hs, &claims("mobile-app"))), "unknown key"),
        ("unknown key", Some(sign(Algorithm::HS256, "hs", &other_hs, &claims("mobile-app"))), "signature"),
        ("expired", Some(sign(Algorithm::RS256, "rs", &f.rs, &expired)), "expired"),
        ("wrong audience", Some(sign(Algorithm::ES256, "es", &f.keys.es, &wrong_aud)), "audience"),
        ("HS256 with the RSA key's kid", Some(forged_rs), "unknown key"),
        ("garbage", Some("a.b.c".into()), "invalid_token"),
    ];
    for (what, token, challenge) in cases {
        let auth = token.map(|t| bearer(&t));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let (status, h, body) = call(gw, "/jwt/a", &headers).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
        let www = h["www-authenticate"].to_str().unwrap();
        assert!(www.contains(challenge), "{what}: {www}");
    }

    // claims and consumers the route allows: 403 otherwise
    let t = sign(Algorithm::HS256, "hs", &f.hs, &claims("mobile-app"));
    let (status, _, body) = call(gw, "/write/x", &[("authorization", &bearer(&t))]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let mut writer = claims("mobile-app");
    writer["scope"] = json!("orders:read orders:write");
    let t = sign(Algorithm::HS256, "hs", &f.hs, &writer);
    assert_eq!(call(gw, "/write/x", &[("authorization", &bearer(&t))]).await.0, 200);
    let partner = sign(Algorithm::HS256, "hs", &f.hs, &claims("partner-1"));
    assert_eq!(call(gw, "/mobile/x", &[("authorization", &bearer(&partner))]).await.0, 403);
    assert_eq!(call(gw, "/mobile/x", &[("authorization", &bearer(&t))]).await.0, 200);

    let m = gw.metrics().await;
    assert!(m.contains("strangler_gateway_auth_denied_total{reason=\"expired\",route=\"jwt\"} 1"), "{m}");
    // nothing refused reached the upstream
    assert_eq!(f.legacy.seen("/jwt").len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_rotate_and_the_mirror_carries_the_same_identity() {
    let f = fixture().await;
    let gw = &f.gw;
    // two keys at once: the hashed one and the one from the environment
    for key in ["mobile-key-1", "mobile-key-2"] {
        let (status, _, body) = call(gw, "/mobile/a", &[("x-api-key", key)]).await;
        assert_eq!(status, 200, "{key}: {body}");
        assert_eq!(body["headers"]["x-strangler-consumer"], "mobile");
        assert_eq!(body["headers"]["x-strangler-auth"], "api-key");
        assert!(body["headers"].get("x-api-key").is_none(), "the key must not reach the upstream");
    }
    // a key read from a file; this route forwards the credential
    let (status, _, body) = call(gw, "/keyed/a", &[("x-api-key", "partner-key-1")]).await;
    assert_eq!(status, 200);
    assert_eq!(body["headers"]["x-strangler-consumer"], "partner");
    assert_eq!(body["headers"]["x-api-key"], "partner-key-1");
    // a known consumer the route does not allow; a wrong key; no key
    assert_eq!(call(gw, "/mobile/a", &[("x-api-key", "partner-key-1")]).await.0, 403);
    let (status, h, _) = call(gw, "/mobile/a", &[("x-api-key", "guess")]).await;
    assert_eq!(status, 401);
    let challenges: Vec<&str> = h.get_all("www-authenticate").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(challenges, ["Bearer realm=\"strangler\"", "ApiKey realm=\"strangler\", header=\"x-api-key\""]);

    // rotation: the old key is retired by a reload; the new one keeps working
    let old = gw.version().await;
    let src = std::fs::read_to_string(&gw.path).unwrap();
    let retired = src.replace(&format!("{{ sha256 = \"{}\" }}, ", sha256_hex("mobile-key-1")), "");
    assert_ne!(src, retired);
    std::fs::write(&gw.path, retired).unwrap();
    gw.wait_version_change(&old).await;
    assert_eq!(call(gw, "/mobile/a", &[("x-api-key", "mobile-key-1")]).await.0, 401);
    assert_eq!(call(gw, "/mobile/a", &[("x-api-key", "mobile-key-2")]).await.0, 200);

    // shadow: the mirror carries the identity the primary had, and neither carries the token
    let t = sign(Algorithm::ES256, "es", &f.keys.es, &claims("mobile-app"));
    let auth = format!("Bearer {t}");
    let (status, _, _) = call(gw, "/mirrored/1", &[("authorization", &auth), ("x-strangler-consumer", "x")]).await;
    assert_eq!(status, 200);
    let primary = f.legacy.wait_seen("/mirrored/1").await;
    let mirror = f.svc.wait_seen("/mirrored/1").await;
    for (side, seen) in [("legacy", &primary), ("mirror", &mirror)] {
        assert_eq!(seen.headers["x-strangler-consumer"], "mobile", "{side}");
        assert_eq!(seen.headers["x-strangler-claim-tenant"], "t-7", "{side}");
        assert!(!seen.headers.contains_key("authorization"), "{side}");
    }
    // a request without a token is neither answered upstream nor mirrored
    assert_eq!(call(gw, "/mirrored/2", &[]).await.0, 401);
    assert!(f.legacy.seen("/mirrored/2").is_empty() && f.svc.seen("/mirrored/2").is_empty());
}

/// The identity the gateway vouches for cannot be dropped by naming its headers in `Connection`
/// (they would be stripped as hop-by-hop after auth set them): 400, nothing upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_header_naming_gateway_headers_is_refused() {
    let f = fixture().await;
    let port = f.gw.port;
    let head = |path: &str, connection: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\nx-api-key: mobile-key-1\r\n{connection}\r\n\r\n")
    };
    for (i, connection) in [
        "Connection: x-strangler-claim-tenant, x-strangler-consumer",
        "Connection: keep-alive,X-Strangler-Auth",
        "Connection: ,\tx-STRANGLER-consumer ,",
        "Connection: keep-alive\r\nConnection: x-strangler-consumer",
    ]
    .into_iter()
    .enumerate()
    {
        let out = raw_http::exchange(port, head(&format!("/mobile/bad-{i}"), connection).as_bytes(), 1).await;
        let statuses: Vec<u16> = out.responses.iter().map(|r| r.status).collect();
        assert_eq!((statuses, out.closed), (vec![400], true), "{connection:?}");
    }
    // a plain keep-alive is fine, and the identity reaches the upstream
    let out = raw_http::exchange(port, head("/mobile/ok", "Connection: keep-alive").as_bytes(), 1).await;
    assert_eq!(out.responses.iter().map(|r| r.status).collect::<Vec<_>>(), [200]);
    assert!(!out.closed, "a kept-alive connection stays open");
    let seen = f.legacy.wait_seen("/mobile/ok").await;
    assert_eq!(seen.headers["x-strangler-consumer"], "mobile");
    assert_eq!(seen.headers["x-strangler-auth"], "api-key");
    assert!(f.legacy.seen("/mobile/bad").is_empty(), "{:?}", f.legacy.seen("/mobile/bad"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_jwks_file_is_reloaded_and_a_broken_one_keeps_the_last_keys() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let key = |kid: &str, secret: &[u8]| json!({"kty": "oct", "kid": kid, "k": b64url(secret)});
    std::fs::write(&jwks, json!({"keys": [key("old", b"old secret")]}).to_string()).unwrap();
    let cfg = format!(
        "{}\n[auth.jwt]\nalgorithms = [\"HS256\"]\njwks_file = \"{}\"\n\n[[routes]]\nname = \"jwt\"\nmatch = {{ path = \"/jwt\" }}\nstage = \"legacy\"\nauth = \"jwt\"\n",
        upstreams(legacy.addr, svc.addr),
        jwks.display()
    );
    let gw = Gateway::start(&cfg);
    let mut c = claims("x");
    c.as_object_mut().unwrap().remove("aud");
    let token = |kid: &str, secret: &[u8]| {
        format!("Bearer {}", sign(Algorithm::HS256, kid, &EncodingKey::from_secret(secret), &c))
    };
    let status = |t: String| {
        let gw = &gw;
        async move { call(gw, "/jwt", &[("authorization", &t)]).await.0 }
    };
    assert_eq!(status(token("old", b"old secret")).await, 200);
    assert_eq!(status(token("new", b"new secret")).await, 401);

    // wait for the reload the key file triggers (routes.toml is unchanged: same version)
    let reloads = |n: u32| format!("strangler_gateway_config_reloads_total{{result=\"ok\",trigger=\"keys\"}} {n}");
    let wait_for = |what: String| {
        let gw = &gw;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !gw.metrics().await.contains(&what) {
                assert!(std::time::Instant::now() < deadline, "never saw {what}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    let tmp = dir.path().join(".jwks.tmp");
    std::fs::write(&tmp, json!({"keys": [key("old", b"old secret"), key("new", b"new secret")]}).to_string()).unwrap();
    std::fs::rename(&tmp, &jwks).unwrap();
    wait_for(reloads(1)).await;
    assert_eq!(status(token("new", b"new secret")).await, 200);

    // a JWKS that cannot be parsed is refused; the last good keys keep serving
    std::fs::write(&tmp, "{ not json").unwrap();
    std::fs::rename(&tmp, &jwks).unwrap();
    wait_for("strangler_gateway_config_reloads_total{result=\"error\",trigger=\"keys\"} 1".into()).await;
    assert_eq!(status(token("new", b"new secret")).await, 200);
    let errors = gw.admin_get("/admin/config-errors").await;
    assert!(errors.to_string().contains("JWKS file"), "{errors}");
}
