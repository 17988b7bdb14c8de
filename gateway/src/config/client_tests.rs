//! Config tests of the client-facing sections: consumers and `[auth]`, and the routes' `auth`,
//! `consumers` and `claims`.

use super::*;

const BASE: &str = r#"
[defaults]
upstream = "legacy"

[upstreams.legacy]
endpoints = ["127.0.0.1:8081"]
"#;

fn errors(src: &str) -> Vec<String> {
    load_str("r.toml", src, None).unwrap_err().issues.iter().map(|i| i.to_string()).collect()
}

fn jwks_file(dir: &tempfile::TempDir) -> String {
    let p = dir.path().join("jwks.json");
    std::fs::write(&p, r#"{"keys":[{"kty":"oct","kid":"k1","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}]}"#).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn consumers_and_auth_compile() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, "from-a-file\n").unwrap();
    let src = format!(
        r#"{BASE}
[auth.api_key]
header = "x-key"

[auth.jwt]
algorithms = ["HS256"]
jwks_file = "{jwks}"
audience = ["shop"]

[consumers.app]
description = "the mobile app"
api_keys = [{{ sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }}, {{ file = "{key}" }}]
jwt_subjects = ["app-1"]

[[routes]]
name = "r"
match = {{ path = "/r" }}
stage = "legacy"
auth = ["api-key", "jwt"]
consumers = ["app"]
claims = {{ scope = ["a", "b"] }}
"#,
        jwks = jwks_file(&dir),
        key = key.display()
    );
    let t = load_str("r.toml", &src, None).unwrap();
    assert_eq!(t.auth.consumers[0].name, "app");
    assert_eq!(t.auth.api_keys.len(), 2);
    assert_eq!(t.auth.api_keys.find(b"test"), Some(0));
    assert_eq!(t.auth.api_keys.find(b"from-a-file"), Some(0));
    assert_eq!(t.auth.api_keys.header.as_str(), "x-key");
    assert_eq!(t.auth.jwt.as_ref().unwrap().keys.len(), 1);
    assert_eq!(t.auth.files.len(), 2, "the key file and the JWKS are watched");
    let a = t.routes[0].auth.as_ref().unwrap();
    assert!(a.methods.api_key && a.methods.jwt);
    assert_eq!(a.consumers.as_deref(), Some(&[0][..]));
    assert_eq!(a.claims, vec![("scope".to_string(), vec!["a".to_string(), "b".to_string()])]);
    // auth = "none" is no rule at all
    let open = src.replace(
        "auth = [\"api-key\", \"jwt\"]\nconsumers = [\"app\"]\nclaims = { scope = [\"a\", \"b\"] }",
        "auth = \"none\"",
    );
    assert!(load_str("r.toml", &open, None).unwrap().routes[0].auth.is_none());
}

#[test]
fn auth_mistakes_are_all_reported_with_places() {
    let src = format!(
        r#"{BASE}
[auth.jwt]
algorithms = ["HS256", "PS512"]
jwks_file = "/nonexistent/jwks.json"

[consumers.app]
api_keys = [{{ sha256 = "abc" }}, {{ env = "X", file = "/y" }}, {{ env = "STRANGLER_TEST_UNSET_VAR" }}]

[[routes]]
name = "r"
match = {{ path = "/r" }}
stage = "legacy"
auth = "api-key"
consumers = ["app", "ghost"]
claims = {{ scope = "x" }}

[[routes]]
name = "s"
match = {{ path = "/s" }}
stage = "legacy"
auth = "basic"
"#
    );
    let e = errors(&src);
    let want = [
        "r.toml:9:24: error: unknown JWT algorithm \"PS512\"",
        "r.toml:10:13: error: cannot read JWKS file /nonexistent/jwks.json",
        "r.toml:13:24: error: sha256 must be 64 hex digits",
        "r.toml:13:33: error: an API key needs exactly one of sha256, env, file",
        "r.toml:13:69: error: environment variable STRANGLER_TEST_UNSET_VAR is unset or empty",
        "r.toml:20:21: error: unknown consumer \"ghost\"",
        "r.toml:21:10: error: claims need auth = \"jwt\"",
        "r.toml:27:8: error: unknown auth method \"basic\"",
    ];
    assert_eq!(e.len(), want.len(), "{e:#?}");
    for (got, want) in e.iter().zip(want) {
        assert!(got.starts_with(want), "{got}\n  wanted {want}");
    }
    assert!(e[0].contains("hint: use one of: HS256, RS256, ES256"), "{e:?}");
    assert!(e[5].contains("known consumers: app"), "{e:?}");
    // offline checks read neither the JWKS nor the environment
    let offline = src.replace(", \"PS512\"", "").replace("{ sha256 = \"abc\" }, { env = \"X\", file = \"/y\" }, ", "");
    let offline = offline
        .replace("consumers = [\"app\", \"ghost\"]\nclaims = { scope = \"x\" }", "")
        .replace("\"basic\"", "\"jwt\"");
    load_str_offline("r.toml", &offline).unwrap();
}

#[test]
fn jwt_routes_need_an_auth_jwt_section() {
    let src =
        format!("{BASE}\n[[routes]]\nname = \"r\"\nmatch = {{ path = \"/r\" }}\nstage = \"legacy\"\nauth = \"jwt\"\n");
    let e = errors(&src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("r.toml:12:8: error: auth \"jwt\" needs an [auth.jwt] section"), "{e:?}");
    let src = src.replace("auth = \"jwt\"", "consumers = [\"x\"]");
    assert!(errors(&src)[0].contains("`consumers` needs `auth` on the route"));
}

#[test]
fn jwks_documents() {
    use jsonwebtoken::Algorithm;
    let hs = r#"{"keys":[{"kty":"oct","kid":"a","k":"c2VjcmV0"},{"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"}]}"#;
    assert_eq!(jwks_keys(hs, &[Algorithm::HS256]).unwrap().len(), 1);
    assert!(jwks_keys(hs, &[Algorithm::RS256]).unwrap_err().contains("no key usable"));
    assert!(jwks_keys("{}", &[Algorithm::HS256]).unwrap_err().contains("no \"keys\""));
    assert!(jwks_keys("nope", &[Algorithm::HS256]).unwrap_err().contains("not JSON"));
}

#[test]
fn rate_limit_mistakes_are_all_reported_with_places() {
    let src = format!(
        r#"[gateway]
trusted_proxies = ["10.0.0.0/8", "10.0.0.0/33"]
{BASE}
[[routes]]
name = "r"
match = {{ path = "/r" }}
stage = "legacy"
rate_limit = [
  {{ by = "consumer", rps = 10 }},
  {{ by = "user", rps = 10, rpm = 600 }},
  {{ rps = 0, shared = true }},
]
"#
    );
    let e = errors(&src);
    let want = [
        "r.toml:2:34: error: \"10.0.0.0/33\" is not an address or CIDR network",
        "r.toml:15:10: error: a limit by consumer needs `auth` on the route",
        "r.toml:16:3: error: a rate limit needs exactly one of rps and rpm",
        "r.toml:16:10: error: unknown rate limit key \"user\"",
        "r.toml:17:11: error: rps 0 is outside 1–1000000",
        "r.toml:17:23: error: shared = true needs [gateway.redis]",
    ];
    assert_eq!(e.len(), want.len(), "{e:#?}");
    for (got, want) in e.iter().zip(want) {
        assert!(got.starts_with(want), "{got}\n  wanted {want}\n{e:#?}");
    }
}

#[test]
fn rate_limits_compile() {
    let src = format!(
        "[gateway.redis]\nurl = \"redis://127.0.0.1:6390\"\nbudget = \"2ms\"\n{BASE}\n[[routes]]\nname = \"r\"\nmatch = {{ path = \"/r\" }}\nstage = \"legacy\"\nrate_limit = [{{ by = [\"ip\"], rpm = 600, burst = 50, shared = true }}]\n"
    );
    let t = load_str("r.toml", &src, None).unwrap();
    let l = &t.routes[0].limits.as_ref().unwrap()[0];
    assert!(l.by_ip && !l.by_consumer && l.shared);
    assert_eq!((l.rate, l.burst, l.window.as_secs()), (600, 50, 60));
    assert_eq!(l.policy, "\"ip\";q=600;w=60");
    assert_eq!(t.settings.redis.as_ref().unwrap().budget, std::time::Duration::from_millis(2));
}

#[test]
fn cors_mistakes_are_reported_with_places() {
    let src = format!(
        "{BASE}\n[[routes]]\nname = \"r\"\nmatch = {{ path = \"/r\" }}\nstage = \"legacy\"\n[routes.cors]\nallow_origins = [\"*\", \"shop.test\"]\nallow_methods = [\"GET\", \"FETCH\"]\nallow_credentials = true\nmax_age = \"10\"\n"
    );
    let e = errors(&src);
    let want = [
        "r.toml:12:1: error: allow_origins = [\"*\"] cannot be used with allow_credentials = true",
        "r.toml:13:23: error: \"shop.test\" is not an origin",
        "r.toml:14:25: error: unknown method \"FETCH\"",
        "r.toml:16:11: error: duration \"10\" has no unit",
    ];
    assert_eq!(e.len(), want.len(), "{e:#?}");
    for (got, want) in e.iter().zip(want) {
        assert!(got.starts_with(want), "{got}\n  wanted {want}\n{e:#?}");
    }
}

#[test]
fn rewrite_mistakes_are_reported_with_places() {
    let src = format!(
        "{BASE}\n[[routes]]\nname = \"r\"\nmatch = {{ path = \"/api/v1/products/{{id}}\" }}\nstage = \"legacy\"\n[routes.rewrite.legacy]\npath = \"/products/{{sku}}\"\nrequest_headers = {{ set = {{ \"x-strangler-consumer\" = \"admin\" }} }}\n[routes.rewrite.extracted]\npath = \"/p/{{id}}\"\nstrip_prefix = \"/api\"\n"
    );
    let e = errors(&src);
    let want = [
        "r.toml:13:8: error: the route's pattern \"/api/v1/products/{id}\" has no parameter {sku}",
        "r.toml:14:54: error: \"x-strangler-consumer\": x-strangler-* headers are the gateway's",
        "r.toml:16:8: error: path cannot be combined with strip_prefix or add_prefix",
    ];
    assert_eq!(e.len(), want.len(), "{e:#?}");
    for (got, want) in e.iter().zip(want) {
        assert!(got.starts_with(want), "{got}\n  wanted {want}\n{e:#?}");
    }
}

#[test]
fn bad_hosts_are_reported_with_places() {
    let src = format!(
        "{BASE}\n[[routes]]\nname = \"r\"\nmatch = {{ host = \"a.*.example.com\", path = \"/r\" }}\nstage = \"legacy\"\nowner = \"team-a\"\n"
    );
    let e = errors(&src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("r.toml:10:18: error: \"a.*.example.com\" is not a host name or *.suffix"), "{e:?}");
}
