//! Rate limits against the real gateway binary: the allowed rate held within ±5% over 10 s at
//! twice the rate, with 429s carrying Retry-After and the RateLimit fields and never reaching
//! the upstream; per consumer and per client IP (behind a trusted proxy); two gateways sharing
//! one limit through Redis, and failing open when Redis is gone.

mod common;

use std::time::{Duration, Instant};

use common::*;
use strangler_support::RedisServer;

fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_limit_holds_within_five_percent_at_twice_the_rate() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let cfg = format!(
        r#"{}
[consumers.app]
api_keys = [{{ sha256 = "{a}" }}]
[consumers.other]
api_keys = [{{ sha256 = "{b}" }}]

[[routes]]
name = "limited"
match = {{ path = "/limited/**" }}
stage = "legacy"
auth = "api-key"

[[routes.rate_limit]]
by = "consumer"
rps = 20
burst = 5
"#,
        upstreams(legacy.addr, svc.addr),
        a = sha256_hex("key-a"),
        b = sha256_hex("key-b"),
    );
    let gw = Gateway::start(&cfg);
    // 40 requests per second (twice the rate) for 10 s, paced by the clock
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut ok, mut limited, mut first_429) = (0u32, 0u32, None);
    for _ in 0..400 {
        tick.tick().await;
        let r = gw.client.get(gw.url("/limited/x")).header("x-api-key", "key-a").send().await.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                limited += 1;
                if first_429.is_none() {
                    let h = r.headers().clone();
                    let body: serde_json::Value = r.json().await.unwrap();
                    first_429 = Some((h, body));
                }
            }
            s => panic!("unexpected status {s}"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let expected = 20.0 * elapsed + 5.0;
    let err = (f64::from(ok) - expected).abs() / expected;
    assert!(err <= 0.05, "{ok} allowed in {elapsed:.2}s, expected {expected:.0} (±5%), {limited} limited");
    assert_eq!(legacy.hits(), ok as usize, "limited requests must not reach the upstream");

    let (h, body) = first_429.expect("some requests were limited");
    assert_eq!(body["error"]["code"], "too_many_requests");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(h["ratelimit-policy"], "\"consumer\";q=20;w=1");
    assert!(h["ratelimit"].to_str().unwrap().starts_with("\"consumer\";r=0;t="), "{h:?}");

    // another consumer has its own bucket
    let r = gw.client.get(gw.url("/limited/x")).header("x-api-key", "key-b").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let m = gw.metrics().await;
    let line = format!("strangler_gateway_rate_limited_total{{consumer=\"app\",route=\"limited\"}} {limited}");
    assert!(m.contains(&line), "{line}\n{m}");
}

/// Refused credentials count against the route's limits too: guessing keys is throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_counts_against_the_ip_limit() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let cfg = format!(
        r#"{}
[consumers.app]
api_keys = [{{ sha256 = "{a}" }}]

[[routes]]
name = "guarded"
match = {{ path = "/guarded" }}
stage = "legacy"
auth = "api-key"
rate_limit = [{{ by = "ip", rpm = 2, burst = 2 }}]
"#,
        upstreams(legacy.addr, svc.addr),
        a = sha256_hex("key-a"),
    );
    let gw = Gateway::start(&cfg);
    for want in [401, 401, 429] {
        let (status, _) = gw.get("/guarded", &[("x-api-key", "guess")]).await;
        assert_eq!(status, want);
    }
    // the good key from the same address is limited as well: the address spent its budget
    let (status, _) = gw.get("/guarded", &[("x-api-key", "key-a")]).await;
    assert_eq!(status, 429);
    assert_eq!(legacy.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_limits_believe_only_trusted_proxies() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let route = r#"
[[routes]]
name = "per-ip"
match = { path = "/ip" }
stage = "legacy"
rate_limit = [{ by = "ip", rpm = 2, burst = 2 }]
"#;
    let untrusting = Gateway::start(&format!("{}{route}", upstreams(legacy.addr, svc.addr)));
    // no trusted proxies: every client behind 127.0.0.1 shares one bucket
    for (xff, want) in [("1.1.1.1", 200), ("2.2.2.2", 200), ("3.3.3.3", 429)] {
        let (status, _) = untrusting.get("/ip", &[("x-forwarded-for", xff)]).await;
        assert_eq!(status, want, "{xff}");
    }
    drop(untrusting);
    // with 127.0.0.1 trusted (a key of [gateway]), X-Forwarded-For names the client
    let cfg = format!("trusted_proxies = [\"127.0.0.0/8\"]\n\n{}{route}", upstreams(legacy.addr, svc.addr));
    let gw = Gateway::start(&cfg);
    for (xff, want) in [("1.1.1.1", 200), ("1.1.1.1", 200), ("1.1.1.1", 429), ("9.9.9.9, 2.2.2.2", 200)] {
        let (status, _) = gw.get("/ip", &[("x-forwarded-for", xff)]).await;
        assert_eq!(status, want, "{xff}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_a_redis_limit_and_fail_open_without_it() {
    let mut redis = RedisServer::start().unwrap();
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let cfg = format!(
        r#"[gateway.redis]
url = "{url}"
budget = "50ms"

{up}
[[routes]]
name = "shared"
match = {{ path = "/shared" }}
stage = "legacy"
rate_limit = [{{ rpm = 6, burst = 6, shared = true }}]
"#,
        url = redis.url(),
        up = upstreams(legacy.addr, svc.addr)
    );
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    // both connected to Redis at start; none of these fails open
    let mut statuses = Vec::new();
    for i in 0..10 {
        let gw = if i % 2 == 0 { &a } else { &b };
        statuses.push(gw.get("/shared", &[]).await.0);
    }
    let fail_open = |m: &str| m.contains("strangler_gateway_rate_limit_fail_open_total 0");
    assert!(fail_open(&a.metrics().await) && fail_open(&b.metrics().await), "Redis was not reached");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 6, "{statuses:?}");
    assert_eq!(&statuses[6..], &[429, 429, 429, 429], "{statuses:?}");
    assert_eq!(legacy.hits(), 6);

    // Redis gone: requests pass (fail open), counted, within the budget
    redis.stop();
    for gw in [&a, &b] {
        let t = Instant::now();
        let (status, _) = gw.get("/shared", &[]).await;
        assert_eq!(status, 200);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(!fail_open(&gw.metrics().await));
    }
}
