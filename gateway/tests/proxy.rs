//! Routing, canary, fallback, timeouts, retries, header hygiene and admin auth against the real
//! gateway binary and real upstream servers.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn side(v: &serde_json::Value) -> &str {
    v["upstream"].as_str().unwrap_or("?")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_stage_and_defaults_to_legacy() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let cfg = format!(
        r#"{}
[[routes]]
name = "l"
match = {{ path = "/legacy/**" }}
to = "svc"
stage = "legacy"

[[routes]]
name = "s"
match = {{ path = "/shadow/{{id}}" }}
to = "svc"
stage = "shadow"

[[routes]]
name = "e"
match = {{ path = "/extracted/**" }}
to = "svc"
stage = "extracted"

[[routes]]
name = "c100"
match = {{ path = "/canary-all" }}
to = "svc"
stage = "canary"
weight = 100

[[routes]]
name = "c0"
match = {{ path = "/canary-none" }}
to = "svc"
stage = "canary"
weight = 0

[[routes]]
name = "m"
match = {{ path = "/method", methods = ["POST"] }}
to = "svc"
stage = "extracted"

[[routes]]
name = "h"
match = {{ path = "/method", headers = {{ "x-tenant" = "beta" }} }}
to = "svc"
stage = "extracted"
"#,
        upstreams(legacy.addr, svc.addr)
    );
    let gw = Gateway::start(&cfg);
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("/legacy/a", &[], "legacy"),
        ("/shadow/1", &[], "legacy"),
        ("/extracted/a/b", &[], "svc"),
        ("/extracted", &[], "svc"),
        ("/canary-all", &[], "svc"),
        ("/canary-none", &[], "legacy"),
        ("/unmatched", &[], "legacy"),
        ("/method", &[], "legacy"),
        ("/method", &[("x-tenant", "beta")], "svc"),
    ];
    for (path, headers, want) in cases {
        let (status, body) = gw.get(path, headers).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(side(&body), *want, "{path} {headers:?}");
        assert_eq!(body["path"], *path);
    }
    let r = gw.client.post(gw.url("/method")).send().await.unwrap();
    assert_eq!(r.headers()["x-upstream"], "svc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_split_is_exact_and_sticky_keys_only_move_forward() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let cfg = |w: u32| {
        format!(
            r#"{}
[[routes]]
name = "split"
match = {{ path = "/split" }}
to = "svc"
stage = "canary"
weight = {w}

[[routes]]
name = "sticky"
match = {{ path = "/sticky" }}
to = "svc"
stage = "canary"
weight = {w}
sticky = "header:x-user"
"#,
            upstreams(legacy.addr, svc.addr)
        )
    };
    let gw = Gateway::start(&cfg(10));

    // 10k non-sticky requests, 8 at a time
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, url) = (gw.client.clone(), gw.url("/split"));
        tasks.push(tokio::spawn(async move {
            let mut ext = 0;
            for _ in 0..1250 {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                if r.headers()["x-upstream"] == "svc" {
                    ext += 1;
                }
            }
            ext
        }));
    }
    let mut extracted = 0;
    for t in tasks {
        extracted += t.await.unwrap();
    }
    let pct = extracted as f64 / 100.0;
    assert!((9.0..=11.0).contains(&pct), "weight 10 gave {pct}% extracted");

    // sticky: each key always on one side
    let mut first = std::collections::HashMap::new();
    for round in 0..3 {
        for k in 0..200 {
            let key = format!("user-{k}");
            let (_, body) = gw.get("/sticky", &[("x-user", &key)]).await;
            let s = side(&body).to_string();
            if round == 0 {
                first.insert(key, s);
            } else {
                assert_eq!(first[&key], s, "key {key} switched sides");
            }
        }
    }
    let ext10 = first.values().filter(|s| *s == "svc").count();
    assert!((5..=40).contains(&ext10), "{ext10} of 200 keys extracted at 10%");

    // raise to 50%: keys only move legacy -> extracted
    let v = gw.version().await;
    gw.write_config(&cfg(50));
    gw.wait_version_change(&v).await;
    let mut ext50 = 0;
    for k in 0..200 {
        let key = format!("user-{k}");
        let (_, body) = gw.get("/sticky", &[("x-user", &key)]).await;
        if first[&key] == "svc" {
            assert_eq!(side(&body), "svc", "key {key} moved back to legacy");
        }
        if side(&body) == "svc" {
            ext50 += 1;
        }
    }
    assert!(ext50 > ext10 && (60..=140).contains(&ext50), "{ext10} -> {ext50}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_to_legacy_for_idempotent_requests() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let dead = dead_addr();
    let cfg = format!(
        r#"[defaults]
upstream = "legacy"
[upstreams.legacy]
endpoints = ["{}"]
[upstreams.svc]
endpoints = ["{}"]
[upstreams.gone]
endpoints = ["{dead}"]
connect_timeout = "200ms"

[[routes]]
name = "down"
match = {{ path = "/down/**" }}
to = "gone"
stage = "extracted"
fallback = "legacy"

[[routes]]
name = "erroring"
match = {{ path = "/fail" }}
to = "svc"
stage = "extracted"
fallback = "legacy"

[[routes]]
name = "nofallback"
match = {{ path = "/nofb/**" }}
to = "gone"
stage = "extracted"
"#,
        legacy.addr, svc.addr
    );
    let gw = Gateway::start(&cfg);
    // connect failure -> legacy
    let (status, body) = gw.get("/down/x", &[]).await;
    assert_eq!((status, side(&body)), (200, "legacy"), "{body}");
    // 5xx from extracted -> legacy answers
    let before = legacy.hits();
    let r = gw.client.get(gw.url("/fail")).send().await.unwrap();
    assert_eq!(r.headers()["x-upstream"], "legacy");
    assert_eq!(legacy.hits(), before + 1);
    assert_eq!(svc.hits(), 1);
    // POST is not idempotent: the extracted 503 goes to the client, legacy is not asked
    let r = gw.client.post(gw.url("/fail")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-upstream"], "svc");
    assert_eq!(legacy.hits(), before + 1);
    // POST to a dead upstream: 502 JSON, no fallback, no internal detail
    let r = gw.client.post(gw.url("/down/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "bad_gateway");
    assert!(!text.contains("127.0.0.1") && !text.contains(&dead.port().to_string()), "{text}");
    // no fallback configured -> 502
    let (status, body) = gw.get("/nofb/1", &[]).await;
    assert_eq!(status, 502, "{body}");
    assert!(gw.metrics().await.contains("strangler_gateway_retries_total{kind=\"fallback\",route=\"down\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_route_timeout_answers_504() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let cfg = format!(
        r#"{}
[[routes]]
name = "slow"
match = {{ path = "/slow" }}
to = "svc"
stage = "extracted"
timeout = "300ms"
retry = {{ attempts = 2 }}
"#,
        upstreams(legacy.addr, svc.addr)
    );
    let gw = Gateway::start(&cfg);
    let t = Instant::now();
    let (status, body) = gw.get("/slow", &[]).await;
    let took = t.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "gateway_timeout");
    assert!(took < Duration::from_millis(1900), "took {took:?} (upstream sleeps 2 s)");
    // the deadline covers retries too: one attempt only
    assert_eq!(svc.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_only_idempotent_methods() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let cfg = format!(
        r#"{}
[[routes]]
name = "flaky"
match = {{ path = "/flaky" }}
to = "svc"
stage = "extracted"
retry = {{ attempts = 2, on_5xx = true }}
"#,
        upstreams(legacy.addr, svc.addr)
    );
    let gw = Gateway::start(&cfg);
    let (status, _) = gw.get("/flaky", &[]).await;
    assert_eq!(status, 503);
    assert_eq!(svc.hits(), 3, "GET: first try + 2 retries");
    let r = gw.client.post(gw.url("/flaky")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(svc.hits(), 4, "POST: no retry");
    let r = gw.client.put(gw.url("/flaky")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(svc.hits(), 7, "PUT is idempotent");
    assert_eq!(legacy.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_hygiene() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let gw = Gateway::start(&upstreams(legacy.addr, svc.addr));
    let resp = raw_request(
        gw.port,
        b"GET /echo HTTP/1.1\r\nHost: shop.example\r\nConnection: close, x-drop-me\r\nx-drop-me: 1\r\n\
Keep-Alive: timeout=5\r\nProxy-Authorization: Basic Zm9v\r\nTE: trailers\r\nUpgrade: h2c\r\n\
X-Forwarded-For: 203.0.113.9\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
    )
    .await;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| {
        // chunked body: take the JSON object
        let s = body.find('{').unwrap();
        let e = body.rfind('}').unwrap();
        serde_json::from_str(&body[s..=e]).unwrap()
    });
    let h = &v["headers"];
    for hop in ["x-drop-me", "keep-alive", "proxy-authorization", "te", "upgrade"] {
        assert!(h.get(hop).is_none(), "{hop} reached the upstream: {h}");
    }
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(h["host"], "shop.example");
    let rid = h["x-request-id"].as_str().unwrap();
    assert_eq!(rid.len(), 32);
    assert!(head.to_ascii_lowercase().contains(&format!("x-request-id: {rid}")), "{head}");
    let tp = h["traceparent"].as_str().unwrap();
    assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp.ends_with("-01"), "{tp}");
    assert!(!tp.contains("00f067aa0ba902b7"), "parent id must be the gateway's span: {tp}");

    // an incoming request id is kept; a trace is started when none comes in
    let (_, v) = gw.get("/echo", &[("x-request-id", "abc-123")]).await;
    assert_eq!(v["headers"]["x-request-id"], "abc-123");
    assert_eq!(v["headers"]["traceparent"].as_str().unwrap().len(), 55);

    // malformed input never reaches an upstream
    let hits = legacy.hits();
    let r = raw_request(gw.port, b"GET /a/../admin HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = raw_request(gw.port, b"GET /a/%2e%2e/admin HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // paths that some upstreams would serve as another route's: `//` merged, `\` a separator
    for target in ["//admin", "/a//admin", "/a\\..\\admin", "/a/..;/admin"] {
        let r = raw_request(gw.port, format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{target}: {r}");
    }
    let r = raw_request(gw.port, b"GET /a HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "missing Host: {r}");
    let big = format!("GET /a HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n", "a".repeat(20_000));
    let r = raw_request(gw.port, big.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    assert_eq!(legacy.hits(), hits);
}

/// X-Forwarded-Proto and X-Forwarded-Host sent by a client are its own claim: upstream they say
/// what the gateway saw (plain HTTP, the request's Host); only a peer in `trusted_proxies` (a
/// load balancer in front) passes its values on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_proto_and_host_pass_only_from_a_trusted_proxy() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let spoof = [("x-forwarded-proto", "https"), ("x-forwarded-host", "evil.example")];
    let gw = Gateway::start(&upstreams(legacy.addr, svc.addr));
    let (_, v) = gw.get("/echo", &spoof).await;
    assert_eq!(v["headers"]["x-forwarded-proto"], "http", "{v}");
    assert_eq!(v["headers"]["x-forwarded-host"], v["headers"]["host"], "{v}");
    drop(gw);
    let trusting = format!("trusted_proxies = [\"127.0.0.1\"]\n\n{}", upstreams(legacy.addr, svc.addr));
    let gw = Gateway::start(&trusting);
    let (_, v) = gw.get("/echo", &spoof).await;
    assert_eq!(v["headers"]["x-forwarded-proto"], "https", "{v}");
    assert_eq!(v["headers"]["x-forwarded-host"], "evil.example", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_over_the_limit_get_413() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let body = format!(
        "max_body_bytes = 1000\n\n{}[[routes]]\nname = \"small\"\nmatch = {{ path = \"/small\" }}\nstage = \"legacy\"\nmax_body_bytes = 100\n",
        upstreams(legacy.addr, svc.addr)
    );
    let gw = Gateway::start(&body);
    let post = |path: &str, n: usize| gw.client.post(gw.url(path)).body(vec![b'x'; n]).send();
    // declared lengths: the route's limit, then the gateway's
    let r = post("/small", 100).await.unwrap();
    assert_eq!(r.status(), 200);
    let hits = legacy.hits();
    let r = post("/small", 101).await.unwrap();
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "payload_too_large");
    assert_eq!(legacy.hits(), hits, "a declared oversize body never reaches the upstream");
    assert_eq!(post("/other", 1000).await.unwrap().status(), 200);
    assert_eq!(post("/other", 1001).await.unwrap().status(), 413);
    // a chunked body that grows past the limit is cut off
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..10).map(|_| Ok(vec![b'y'; 50])).collect();
    let r = gw
        .client
        .post(gw.url("/small"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let m = gw.metrics().await;
    assert!(m.contains("strangler_gateway_requests_total{class=\"4xx\",route=\"small\",side=\"legacy\"}"), "{m}");
}

/// The gateway owns `x-strangler-*`: whatever a client sends in that namespace (in any case, on
/// any stage, also when it imitates the dry-run header) never reaches an upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_internal_headers_are_stripped_on_every_stage() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let mut body = upstreams(legacy.addr, svc.addr);
    for (name, stage) in [("l", "legacy"), ("s", "shadow"), ("c", "canary"), ("e", "extracted")] {
        let weight = if stage == "canary" { "weight = 50\n" } else { "" };
        body.push_str(&format!(
            "[[routes]]\nname = \"{name}\"\nmatch = {{ path = \"/{name}/**\" }}\nto = \"svc\"\nstage = \"{stage}\"\n{weight}\n"
        ));
    }
    let gw = Gateway::start(&body);
    let forged = [
        ("x-strangler-shadow", "1"),
        ("X-Strangler-Shadow-Secret", "guess"),
        ("x-strangler-consumer", "admin"),
        ("x-other", "kept"),
    ];
    let mut sides = std::collections::BTreeSet::new();
    for prefix in ["l", "s", "c", "e"] {
        for i in 0..6 {
            for method in [reqwest::Method::GET, reqwest::Method::POST] {
                let mut rb = gw.client.request(method.clone(), gw.url(&format!("/{prefix}/{i}")));
                for (k, v) in forged {
                    rb = rb.header(k, v);
                }
                let r = rb.body("{}").send().await.unwrap();
                assert_eq!(r.status(), 200, "{method} /{prefix}/{i}");
                let v: serde_json::Value = r.json().await.unwrap();
                let h = v["headers"].as_object().unwrap();
                let leaked: Vec<&String> = h.keys().filter(|k| k.starts_with("x-strangler-")).collect();
                assert!(leaked.is_empty(), "{method} /{prefix}/{i} reached {} with {leaked:?}", v["upstream"]);
                assert_eq!(h["x-other"], "kept");
                sides.insert(v["upstream"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(sides.len(), 2, "both upstreams were exercised: {sides:?}");
    let m = gw.metrics().await;
    // 4 stages x 6 x 2 methods, 3 forged headers each
    assert!(m.contains("strangler_gateway_client_internal_headers_stripped_total 144"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requires_token_except_health() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let gw = Gateway::start(&upstreams(legacy.addr, svc.addr));
    let c = &gw.client;
    for p in ["/health/live", "/health/ready"] {
        assert_eq!(c.get(gw.admin_url(p)).send().await.unwrap().status(), 200, "{p}");
    }
    for p in ["/metrics", "/admin/routes", "/admin/config-errors"] {
        assert_eq!(c.get(gw.admin_url(p)).send().await.unwrap().status(), 401, "{p}");
        assert_eq!(c.get(gw.admin_url(p)).bearer_auth("wrong").send().await.unwrap().status(), 401, "{p}");
        assert_eq!(c.get(gw.admin_url(p)).bearer_auth(TOKEN).send().await.unwrap().status(), 200, "{p}");
    }
    assert_eq!(c.post(gw.admin_url("/admin/reload")).send().await.unwrap().status(), 401);
    assert_eq!(c.post(gw.admin_url("/admin/reload")).bearer_auth(TOKEN).send().await.unwrap().status(), 200);
    gw.get("/x", &[]).await;
    // the request is counted in Pingora's `logging` phase, which may run just after the client
    // has its response. Wait for the counter itself: the latency histogram's `_count` line has
    // the same labels and a scrape can read it after the request while reading the counters
    // before it.
    let counted = "strangler_gateway_requests_total{class=\"2xx\",route=\"_default\",side=\"legacy\"} 1";
    let mut m = gw.metrics().await;
    for _ in 0..50 {
        if m.contains(counted) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        m = gw.metrics().await;
    }
    for name in [
        counted,
        "strangler_gateway_request_duration_seconds_bucket",
        "strangler_gateway_config_reloads_total{result=\"ok\",trigger=\"admin\"} 1",
        "strangler_gateway_config_info{version=",
    ] {
        assert!(m.contains(name), "{name} missing from\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_by_host_name() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let cfg = format!(
        "[defaults]\nupstream = \"legacy\"\n\n[upstreams.legacy]\nendpoints = [\"localhost:{}\"]\n\n\
         [upstreams.svc]\nendpoints = [\"localhost:{}\"]\n\n\
         [[routes]]\nname = \"e\"\nmatch = {{ path = \"/extracted/**\" }}\nto = \"svc\"\nstage = \"extracted\"\n",
        legacy.addr.port(),
        svc.addr.port()
    );
    let gw = Gateway::start(&cfg);
    for _ in 0..5 {
        let (status, v) = gw.get("/anything", &[]).await;
        assert_eq!((status, side(&v)), (200, "legacy"));
        let (status, v) = gw.get("/extracted/1", &[]).await;
        assert_eq!((status, side(&v)), (200, "svc"));
    }
    let routes = gw.admin_get("/admin/routes").await;
    let ep = &routes["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == "legacy").unwrap()["endpoints"][0];
    assert_eq!(ep["host"], format!("localhost:{}", legacy.addr.port()), "{routes}");
    assert_eq!(ep["addr"], format!("127.0.0.1:{}", legacy.addr.port()), "{routes}");
}
