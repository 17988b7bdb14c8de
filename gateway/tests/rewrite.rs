//! Rewrites against the real gateway binary: per side paths (template over the match's
//! parameters, strip/add prefix) and request/response headers, seen by the service, by the
//! client and by the shadow mirror and its comparison.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_side_sees_its_rewrite_and_the_shadow_compares_the_rewritten_request() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let cfg = format!(
        r#"{}
[[routes]]
name = "product"
match = {{ path = "/api/v1/products/{{id}}" }}
to = "svc"
stage = "shadow"

[routes.rewrite.extracted]
path = "/products/{{id}}"
request_headers = {{ set = {{ "x-side" = "extracted" }}, remove = ["cookie"] }}

[routes.rewrite.legacy]
request_headers = {{ set = {{ "x-side" = "legacy" }} }}
response_headers = {{ set = {{ "x-served-by" = "legacy-side" }}, remove = ["x-upstream"] }}

[[routes]]
name = "orders"
match = {{ path = "/api/orders/**" }}
to = "svc"
stage = "extracted"

[routes.rewrite.extracted]
strip_prefix = "/api"
add_prefix = "/internal"
response_headers = {{ add = {{ "x-rewritten" = "1" }} }}
"#,
        upstreams(legacy.addr, svc.addr)
    );
    let gw = Gateway::start(&cfg);

    // extracted stage: the service sees the rewritten path, the client the response headers
    let r = gw.client.get(gw.url("/api/orders/5/lines?page=2")).send().await.unwrap();
    assert_eq!(r.headers()["x-rewritten"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["path"], "/internal/orders/5/lines", "{body}");
    assert_eq!(svc.seen("/internal/orders/5/lines")[0].target, "/internal/orders/5/lines?page=2");

    // shadow: legacy gets the request as the client sent it (plus its headers), the mirror the
    // extracted side's path and headers
    let r = gw.client.get(gw.url("/api/v1/products/7?lang=en")).header("cookie", "sid=1").send().await.unwrap();
    assert_eq!(r.headers()["x-served-by"], "legacy-side");
    assert!(r.headers().get("x-upstream").is_none());
    let primary = legacy.wait_seen("/api/v1/products/7").await;
    assert_eq!(primary.target, "/api/v1/products/7?lang=en");
    assert_eq!(primary.headers["x-side"], "legacy");
    let mirror = svc.wait_seen("/products/7").await;
    assert_eq!(mirror.target, "/products/7?lang=en");
    assert_eq!(mirror.headers["x-side"], "extracted");
    assert!(!mirror.headers.contains_key("cookie"));

    // the comparison judged the rewritten request's answer: its sample shows the mirror's uri
    // and the echoed paths differ exactly by the rewrite
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let v = gw.admin_get("/admin/shadow/product").await;
        if v["compared"].as_u64() == Some(1) {
            break v;
        }
        assert!(Instant::now() < deadline, "no comparison: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let sample = &report["samples"][0];
    assert_eq!(sample["shadow"]["uri"], "/products/7?lang=en", "{report:#}");
    let diffs = sample["differences"].as_array().unwrap();
    let path = diffs.iter().find(|d| d["pointer"] == "/path").expect("the path differs");
    assert_eq!((path["legacy"].as_str(), path["shadow"].as_str()), (Some("/api/v1/products/7"), Some("/products/7")));
}
