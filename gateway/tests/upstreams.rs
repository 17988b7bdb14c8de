//! Upstream failures under load, against the real binary and two endpoints of one upstream:
//! one killed mid-run (no failed idempotent request; out of rotation, then back after it
//! recovers), one slow (least-conn moves traffic away), both down (fail open, and `fallback`
//! still reaches legacy), and the cap on requests in flight (503 past it).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use common::{Gateway, Upstream};
use serde_json::Value;

/// An endpoint that answers with its name, after `delay_ms`, and can be stopped and restarted
/// on the same port.
struct Endpoint {
    name: &'static str,
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    hits: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Clone)]
struct EpState {
    name: &'static str,
    delay_ms: Arc<AtomicU64>,
    hits: Arc<AtomicUsize>,
}

async fn answer(State(s): State<EpState>) -> String {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let d = s.delay_ms.load(Ordering::SeqCst);
    if d > 0 {
        tokio::time::sleep(Duration::from_millis(d)).await;
    }
    format!("{{\"endpoint\":\"{}\"}}", s.name)
}

impl Endpoint {
    async fn start(name: &'static str) -> Endpoint {
        let mut e = Endpoint {
            name,
            addr: "127.0.0.1:0".parse().unwrap(),
            delay_ms: Arc::default(),
            hits: Arc::default(),
            stop: None,
        };
        e.serve().await;
        e
    }

    async fn serve(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let state = EpState { name: self.name, delay_ms: self.delay_ms.clone(), hits: self.hits.clone() };
        let app = axum::Router::new().route("/health", get(|| async { "ok" })).fallback(answer).with_state(state);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
    }

    fn kill(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn config(a: SocketAddr, b: SocketAddr, legacy: SocketAddr, upstream_extra: &str, route_extra: &str) -> String {
    format!(
        "[defaults]\nupstream = \"legacy\"\n\n[upstreams.legacy]\nendpoints = [\"{legacy}\"]\n\n\
         [upstreams.svc]\nendpoints = [\"{a}\", \"{b}\"]\nconnect_timeout = \"200ms\"\n{upstream_extra}\n\n\
         [[routes]]\nname = \"svc\"\nmatch = {{ path = \"/svc/**\" }}\nto = \"svc\"\nstage = \"extracted\"\n{route_extra}\n"
    )
}

/// GETs `/svc/x` with `concurrency` workers until `stop` says so; returns (ok, failed) counts and
/// the endpoints that answered.
async fn load(gw: &Gateway, concurrency: usize, until: Instant) -> (usize, Vec<String>, Vec<String>) {
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = gw.client.clone();
        let url = gw.url("/svc/x");
        tasks.push(tokio::spawn(async move {
            let (mut served, mut failed) = (Vec::new(), Vec::new());
            while Instant::now() < until {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        served.push(v["endpoint"].as_str().unwrap_or("?").to_string());
                    }
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (served, failed)
        }));
    }
    let (mut served, mut failed) = (Vec::new(), Vec::new());
    for t in tasks {
        let (s, f) = t.await.unwrap();
        served.extend(s);
        failed.extend(f);
    }
    (served.len(), served, failed)
}

async fn in_rotation(gw: &Gateway, addr: SocketAddr) -> bool {
    let v = gw.admin_get("/admin/routes").await;
    let ups = v["upstreams"].as_array().unwrap();
    let svc = ups.iter().find(|u| u["name"] == "svc").unwrap();
    let ep = svc["endpoints"].as_array().unwrap().iter().find(|e| e["addr"] == addr.to_string()).cloned();
    let ep = ep.unwrap_or_else(|| panic!("no endpoint {addr} in {svc}"));
    // in rotation: healthy by the active checks and not ejected by passive ones
    ep["healthy"] == true && ep["ejected"] == false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_leaves_the_rotation_without_failing_requests_and_comes_back() {
    let legacy = Upstream::start("legacy").await;
    let (mut a, b) = (Endpoint::start("a").await, Endpoint::start("b").await);
    let gw = Gateway::start(&config(
        a.addr,
        b.addr,
        legacy.addr,
        "health_check = { path = \"/health\", interval = \"300ms\", timeout = \"200ms\", unhealthy_threshold = 2, healthy_threshold = 2 }\neject = { consecutive_failures = 3, duration = \"1s\" }",
        "retry = { attempts = 2 }",
    ));
    // warm: both serve
    let (_, served, failed) = load(&gw, 4, Instant::now() + Duration::from_millis(600)).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(served.iter().any(|s| s == "a") && served.iter().any(|s| s == "b"));

    // kill a mid-run: idempotent requests are retried on b, none fails
    let runner = {
        let until = Instant::now() + Duration::from_secs(3);
        let gw_ref = &gw;
        async move { load(gw_ref, 4, until).await }
    };
    let killer = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        a.kill();
        let killed = Instant::now();
        // out of rotation within interval x threshold (+ the 250 ms scheduler tick and a probe timeout)
        let deadline = killed + Duration::from_millis(300 * 2 + 250 + 200 + 1000);
        while in_rotation(&gw, a.addr).await {
            assert!(Instant::now() < deadline, "the dead endpoint stayed in rotation");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        killed.elapsed()
    };
    let ((n, _, failed), out_after) = tokio::join!(runner, killer);
    assert!(failed.is_empty(), "{} of {n} requests failed: {:?}", failed.len(), &failed[..failed.len().min(5)]);
    assert!(n > 20, "{n} requests");
    eprintln!("dead endpoint out of rotation after {out_after:?}; {n} requests, 0 failed");
    // the active checks mark it unhealthy too (after unhealthy_threshold probes), not only the
    // passive ejection
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v = gw.admin_get("/admin/routes").await;
        let healthy = v["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|u| u["endpoints"].as_array().unwrap().iter())
            .find(|e| e["addr"] == a.addr.to_string())
            .unwrap()["healthy"]
            .clone();
        if healthy == false {
            break;
        }
        assert!(Instant::now() < deadline, "the active health check never marked the dead endpoint");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // it comes back once it answers again
    a.serve().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !in_rotation(&gw, a.addr).await {
        assert!(Instant::now() < deadline, "the recovered endpoint stayed out of rotation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = a.hits();
    let (_, _, failed) = load(&gw, 2, Instant::now() + Duration::from_millis(500)).await;
    assert!(failed.is_empty());
    assert!(a.hits() > before, "traffic returns to the recovered endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_moves_traffic_away_from_a_slow_endpoint() {
    let legacy = Upstream::start("legacy").await;
    let (a, b) = (Endpoint::start("a").await, Endpoint::start("b").await);
    a.delay_ms.store(150, Ordering::SeqCst);
    let gw = Gateway::start(&config(a.addr, b.addr, legacy.addr, "balance = \"least_conn\"", ""));
    let (n, served, failed) = load(&gw, 8, Instant::now() + Duration::from_secs(2)).await;
    assert!(failed.is_empty(), "{failed:?}");
    let slow = served.iter().filter(|s| *s == "a").count();
    assert!(slow * 5 < n, "the slow endpoint got {slow} of {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_endpoints_down_fails_open_and_fallback_reaches_legacy() {
    let legacy = Upstream::start("legacy").await;
    let (a, b) = (common::dead_addr(), common::dead_addr());
    // without fallback: every endpoint is tried (fail open) and the client gets a JSON 502
    let gw = Gateway::start(&config(a, b, legacy.addr, "eject = { consecutive_failures = 1, duration = \"10s\" }", ""));
    for _ in 0..4 {
        let r = gw.client.get(gw.url("/svc/x")).send().await.unwrap();
        assert_eq!(r.status(), 502);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "bad_gateway");
    }
    drop(gw);
    // with fallback = "legacy": idempotent requests are answered by legacy
    let gw = Gateway::start(&config(a, b, legacy.addr, "", "fallback = \"legacy\""));
    for _ in 0..4 {
        let (status, v) = gw.get("/svc/x", &[]).await;
        assert_eq!((status, v["upstream"].as_str()), (200, Some("legacy")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_max_pending_get_503_at_once() {
    let legacy = Upstream::start("legacy").await;
    let (a, b) = (Endpoint::start("a").await, Endpoint::start("b").await);
    a.delay_ms.store(1500, Ordering::SeqCst);
    b.delay_ms.store(1500, Ordering::SeqCst);
    let gw = Gateway::start(&config(a.addr, b.addr, legacy.addr, "max_pending = 2", ""));
    let started = Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let (c, u) = (gw.client.clone(), gw.url("/svc/x"));
            tokio::spawn(async move {
                let r = c.get(u).send().await.unwrap();
                (r.status().as_u16(), Instant::now())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in calls {
        let (s, at) = c.await.unwrap();
        if s == 503 {
            assert!(at - started < Duration::from_millis(1000), "503 is immediate");
        }
        statuses.push(s);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 503, 503, 503, 503]);
    let m = gw.metrics().await;
    assert!(m.contains("strangler_gateway_upstream_errors_total{kind=\"overloaded\",upstream=\"svc\"} 4"), "{m}");
}
