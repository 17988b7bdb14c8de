//! CORS against the real gateway binary: preflights answered without any upstream hit (also for
//! a route that requires credentials, and one whose `match.methods` exclude OPTIONS), refused
//! origins, and the headers on real answers, the gateway's own 401 included.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_by_the_gateway() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let cfg = format!(
        r#"{}
[consumers.web]
api_keys = [{{ sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }}]

[[routes]]
name = "cart"
match = {{ path = "/cart/**", methods = ["GET", "POST"] }}
to = "svc"
stage = "extracted"
auth = "api-key"

[routes.cors]
allow_origins = ["https://shop.test"]
allow_headers = ["content-type", "x-api-key"]
expose_headers = ["x-request-id"]
allow_credentials = true
max_age = "10m"
"#,
        upstreams(legacy.addr, svc.addr)
    );
    let gw = Gateway::start(&cfg);
    let c = &gw.client;
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        c.request(reqwest::Method::OPTIONS, gw.url("/cart/items"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
    };
    let r = preflight("https://shop.test", "POST", "content-type, x-api-key").await.unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.test");
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert_eq!(h["access-control-allow-headers"], "content-type, x-api-key");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    for (origin, method, headers) in [
        ("https://evil.test", "POST", "content-type"),
        ("https://shop.test", "DELETE", ""),
        ("https://shop.test", "GET", "x-secret"),
    ] {
        let r = preflight(origin, method, headers).await.unwrap();
        assert_eq!(r.status(), 403, "{origin} {method} {headers}");
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }
    assert_eq!((legacy.hits(), svc.hits()), (0, 0), "no preflight may reach an upstream");

    // real requests: the headers for an allowed origin, also on the gateway's own 401
    let r = c
        .get(gw.url("/cart/items"))
        .header("origin", "https://shop.test")
        .header("x-api-key", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://shop.test");
    assert_eq!(r.headers()["access-control-expose-headers"], "x-request-id");
    assert!(r.headers().get_all("vary").iter().any(|v| v == "Origin"));
    let r = c.get(gw.url("/cart/items")).header("origin", "https://shop.test").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://shop.test");
    let r = c
        .get(gw.url("/cart/items"))
        .header("origin", "https://evil.test")
        .header("x-api-key", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // it still varies by Origin: a shared cache must not serve it to an allowed origin
    assert!(r.headers().get_all("vary").iter().any(|v| v == "Origin"), "{:?}", r.headers());
    assert_eq!(svc.hits(), 2);
}
