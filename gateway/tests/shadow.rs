//! Shadow traffic against the real gateway binary: a legacy and an extracted upstream whose
//! answers differ in known ways, the reports they produce (admin API, metrics, CLI, files), and
//! the guarantees around the primary request (latency, bounded queue, write safety).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use common::{upstreams, Gateway, TOKEN};
use serde_json::{json, Value};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Legacy,
    Shadow,
}

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| s.path == path).cloned().collect()
    }
}

struct Up {
    role: Role,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Answers per path; legacy and shadow differ exactly where the tests expect them to.
async fn answer(State(s): State<Arc<Up>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    s.seen.lock().unwrap().push(Seen { method: method.to_string(), path: path.clone(), headers, body: body.clone() });
    let legacy = s.role == Role::Legacy;
    let v = match path.as_str() {
        "/ident" => json!({"id": 1, "name": "widget", "tags": ["a", "b"]}),
        "/reorder" if legacy => json!({"a": 1, "b": {"c": 2, "d": [1, 2]}}),
        "/reorder" => json!({"b": {"d": [1, 2], "c": 2}, "a": 1}),
        "/ignore" => json!({"id": 1, "updated_at": if legacy { "2020-01-01" } else { "2024-06-30" }}),
        "/price" => {
            let v = json!({"id": 7, "price": if legacy { 10 } else { 12 }});
            return ([("content-type", "application/json"), ("set-cookie", "sid=legacy-secret")], v.to_string())
                .into_response();
        }
        "/noise" if legacy => json!({"id": 1, "nonce": rand::random::<u64>()}),
        "/noise" => json!({"id": 1, "nonce": "shadow"}),
        "/slow" | "/queue" | "/plain" => {
            if !legacy {
                let secs = if path == "/slow" { 5 } else { 3 };
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
            json!({"ok": true})
        }
        _ => json!({"method": method.as_str(), "len": body.len()}),
    };
    ([("content-type", "application/json")], v.to_string()).into_response()
}

async fn server(role: Role) -> Server {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new().fallback(answer).with_state(Arc::new(Up { role, seen: seen.clone() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, seen }
}

fn route(name: &str, path: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nmatch = {{ path = \"{path}\" }}\nto = \"svc\"\nstage = \"shadow\"\n{extra}\n"
    )
}

/// Polls the admin API until `done` holds for the shadow report of all routes.
async fn wait_report(gw: &Gateway, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let v = gw.admin_get("/admin/shadow").await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {v:#}\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn of<'a>(v: &'a Value, route: &str) -> &'a Value {
    v["routes"].as_array().unwrap().iter().find(|r| r["route"] == route).unwrap_or(&Value::Null)
}

fn n(v: &Value, route: &str, ptr: &str) -> u64 {
    of(v, route).pointer(ptr).and_then(Value::as_u64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compares_reports_and_survives_a_restart() {
    let (legacy, svc) = (server(Role::Legacy).await, server(Role::Shadow).await);
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("dry-run.secret");
    std::fs::write(&secret_file, "test-dry-run-secret-0123456789\n").unwrap();
    let cfg = format!(
        "shadow_dir = \"{}\"\nshadow_secret_file = \"{}\"\n\n{}{}{}{}{}{}{}{}",
        dir.path().display(),
        secret_file.display(),
        upstreams(legacy.addr, svc.addr),
        route("ident", "/ident", ""),
        route("reorder", "/reorder", ""),
        route("ignore", "/ignore", "[routes.shadow]\nignore = [\"/updated_at\"]\n"),
        route(
            "price",
            "/price",
            "[routes.shadow]\ncompare = { status = true, headers = [\"set-cookie\"], body = true }\n"
        ),
        route("noise", "/noise", "[routes.shadow]\nlearn_noise = true\n"),
        route("writes", "/writes", ""),
        route("dryrun", "/dryrun", "[routes.shadow]\nwrites = \"dry-run\"\n"),
    );
    let gw = Gateway::start(&cfg);
    let secret = [("authorization", "Bearer s3cret-token"), ("cookie", "sid=c00kie")];
    for _ in 0..10 {
        for p in ["/ident", "/reorder", "/ignore", "/noise"] {
            assert_eq!(gw.get(p, &[]).await.0, 200);
        }
        let (status, body) = gw.get("/price", &secret).await;
        assert_eq!((status, &body["price"]), (200, &json!(10)), "the client gets the legacy answer");
    }
    for _ in 0..3 {
        let r = gw.client.post(gw.url("/writes")).body("{\"qty\":1}").send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..2 {
        let r = gw
            .client
            .post(gw.url("/dryrun"))
            .header("content-type", "application/json")
            .body("{\"qty\":2}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let v = wait_report(&gw, "all comparisons", |v| {
        ["ident", "reorder", "ignore", "price", "noise"].iter().all(|r| n(v, r, "/compared") == 10)
            && n(v, "dryrun", "/compared") == 2
            && n(v, "writes", "/skipped/writes") == 3
    })
    .await;
    // identical, reordered keys and ignored fields all match
    for r in ["ident", "reorder", "ignore"] {
        assert_eq!((n(&v, r, "/matched"), n(&v, r, "/mismatched")), (10, 0), "{r}: {:#}", of(&v, r));
        assert_eq!(of(&v, r)["match_rate"], 1.0);
    }
    // a changed price is a mismatch at /price with both values
    let price = of(&v, "price");
    assert_eq!((price["mismatched"].as_u64(), price["match_rate"].as_f64()), (Some(10), Some(0.0)), "{price:#}");
    assert_eq!(price["top_fields"][0], json!({"field": "/price", "count": 10}), "{price:#}");
    assert!(
        price["latency"]["legacy"]["count"].as_u64() == Some(10)
            && price["latency"]["shadow"]["p99_ms"].as_f64() > Some(0.0)
    );
    let detail = gw.admin_get("/admin/shadow/price").await;
    let samples = detail["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 10);
    let diff = samples[0]["differences"].as_array().unwrap();
    assert!(
        diff.contains(&json!({"kind": "json", "pointer": "/price", "pattern": "/price", "legacy": 10, "shadow": 12})),
        "{diff:#?}"
    );
    // redaction: request Authorization/Cookie and the response Set-Cookie never appear
    let s = &samples[0];
    assert_eq!(s["request"]["headers"]["authorization"], "[redacted]");
    assert_eq!(s["request"]["headers"]["cookie"], "[redacted]");
    assert_eq!(s["legacy"]["headers"]["set-cookie"], "[redacted]");
    assert_eq!(s["request"]["method"], "GET");
    assert_eq!(s["request"]["uri"], "/price");
    assert!(s["legacy"]["body"].as_str().unwrap().contains("\"price\":10"));
    let text = detail.to_string();
    for secret in ["s3cret", "c00kie", "legacy-secret", "test-dry-run-secret"] {
        assert!(!text.contains(secret), "{secret} leaked into the report");
    }
    // legacy-only nondeterminism is learnt as noise, not reported as a mismatch
    let noise = of(&v, "noise");
    assert_eq!(noise["mismatched"], 0, "{noise:#}");
    assert_eq!(noise["noise_fields"][0]["field"], "/nonce", "{noise:#}");
    assert!(legacy.seen("/noise").len() >= 20, "idempotent requests are replayed to legacy");
    // writes without dry-run are not mirrored; with dry-run they carry the header and the body
    assert!(svc.seen("/writes").is_empty());
    assert_eq!(legacy.seen("/writes").len(), 3);
    let dry = svc.seen("/dryrun");
    assert_eq!(dry.len(), 2);
    for d in &dry {
        assert_eq!(d.method, "POST");
        let v = d.headers.get("x-strangler-shadow").map(|h| h.to_str().unwrap());
        assert_eq!(v, Some("1; secret=test-dry-run-secret-0123456789"), "the dry run carries the shared secret");
        assert_eq!(&d.body[..], b"{\"qty\":2}");
    }
    assert!(legacy.seen("/dryrun").iter().all(|d| !d.headers.contains_key("x-strangler-shadow")));
    assert_eq!(n(&v, "dryrun", "/matched"), 2);

    // metrics
    let m = gw.metrics().await;
    for line in [
        "strangler_shadow_mismatched_total{route=\"price\"} 10",
        "strangler_shadow_matched_total{route=\"ident\"} 10",
        "strangler_shadow_skipped_total{reason=\"writes\",route=\"writes\"} 3",
        "strangler_shadow_latency_seconds_count{route=\"price\",side=\"shadow\"} 10",
    ] {
        assert!(m.contains(line), "missing {line}");
    }

    // the CLI: a table, and JSON
    let bin = env!("CARGO_BIN_EXE_strangler-gateway");
    let admin = format!("http://127.0.0.1:{}", gw.admin);
    let out = std::process::Command::new(bin)
        .args(["shadow", "report", "--admin", &admin, "--token", TOKEN])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table} {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        table.contains("ROUTE") && table.contains("price") && table.contains("/price") && table.contains("/nonce"),
        "{table}"
    );
    let out = std::process::Command::new(bin)
        .args(["shadow", "report", "--admin", &admin, "--json", "--route", "price"])
        .env("STRANGLER_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["mismatched"], 10);
    let out = std::process::Command::new(bin)
        .args(["shadow", "report", "--admin", &admin, "--token", "wrong"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    // samples are in the JSONL file, redacted
    let file = std::fs::read_to_string(dir.path().join("samples.jsonl")).unwrap();
    assert_eq!(file.lines().filter(|l| l.contains("\"route\":\"price\"")).count(), 10);
    assert!(!file.contains("s3cret"));

    // restart: wait for the snapshot, kill the gateway, start a new one on the same directory
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let snap: Value = std::fs::read_to_string(dir.path().join("report.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        if snap["routes"]["price"]["counts"]["mismatched"] == 10 && snap["routes"]["noise"]["counts"]["compared"] == 10
        {
            break;
        }
        assert!(Instant::now() < deadline, "report.json never caught up: {snap}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(gw);
    let gw = Gateway::start(&cfg);
    let v = gw.admin_get("/admin/shadow").await;
    assert_eq!(n(&v, "price", "/mismatched"), 10, "{v:#}");
    assert_eq!(n(&v, "ident", "/matched"), 10);
    assert_eq!(n(&v, "writes", "/skipped/writes"), 3);
    assert_eq!(of(&v, "noise")["noise_fields"][0]["field"], "/nonce");
    let detail = gw.admin_get("/admin/shadow/price").await;
    assert_eq!(detail["samples"].as_array().unwrap().len(), 10);
    assert_eq!(detail["top_fields"][0]["count"], 10);
    assert!(gw.metrics().await.contains("strangler_shadow_mismatched_total{route=\"price\"} 10"));
    // and keeps counting
    gw.get("/price", &[]).await;
    wait_report(&gw, "one more comparison", |v| n(v, "price", "/mismatched") == 11).await;
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99).div_ceil(100) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_shadow_does_not_slow_the_primary() {
    let (legacy, svc) = (server(Role::Legacy).await, server(Role::Shadow).await);
    let cfg = format!(
        "{}{}[[routes]]\nname = \"plain\"\nmatch = {{ path = \"/plain\" }}\nstage = \"legacy\"\n",
        upstreams(legacy.addr, svc.addr),
        route("slow", "/slow", "")
    );
    let gw = Gateway::start(&cfg);
    for _ in 0..10 {
        gw.get("/plain", &[]).await;
        gw.get("/slow", &[]).await;
    }
    let (mut plain, mut slow) = (Vec::new(), Vec::new());
    for _ in 0..150 {
        for (path, out) in [("/plain", &mut plain), ("/slow", &mut slow)] {
            let t = Instant::now();
            let (status, body) = gw.get(path, &[]).await;
            out.push(t.elapsed());
            assert_eq!((status, &body["ok"]), (200, &json!(true)));
        }
    }
    let (p_plain, p_slow) = (p99(plain), p99(slow));
    eprintln!("primary p99: plain {p_plain:?}, shadowed to a 5 s upstream {p_slow:?}");
    // generous margin: the machine is shared; a primary waiting on the shadow would take 5 s
    assert!(p_slow < p_plain * 3 + Duration::from_millis(50), "plain {p_plain:?} vs shadowed {p_slow:?}");
    assert!(p_slow < Duration::from_secs(1));
    let v = gw.admin_get("/admin/shadow").await;
    assert!(n(&v, "slow", "/mirrored") >= 10, "{v:#}");
    assert!(!svc.seen("/slow").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts() {
    let (legacy, svc) = (server(Role::Legacy).await, server(Role::Shadow).await);
    let cfg = format!(
        "{}{}",
        upstreams(legacy.addr, svc.addr),
        route("queue", "/queue", "[routes.shadow]\nqueue = 1\nconcurrency = 1\n")
    );
    let gw = Gateway::start(&cfg);
    for _ in 0..20 {
        assert_eq!(gw.get("/queue", &[]).await.0, 200);
    }
    // one runs, one waits, the rest are dropped (the shadow takes 3 s per request)
    let v =
        wait_report(&gw, "20 mirrored or dropped", |v| n(v, "queue", "/mirrored") + n(v, "queue", "/dropped") == 20)
            .await;
    let dropped = n(&v, "queue", "/dropped");
    assert!(dropped >= 15, "{v:#}");
    assert!(gw.metrics().await.contains(&format!("strangler_shadow_dropped_total{{route=\"queue\"}} {dropped}")));
}

/// A mirror that gets no complete answer within the route's `timeout` gives up then (counted as a
/// shadow error, nothing compared), long before the slow shadow (3 s) would have answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_gives_up_at_its_timeout() {
    let (legacy, svc) = (server(Role::Legacy).await, server(Role::Shadow).await);
    let cfg = format!(
        "{}{}",
        upstreams(legacy.addr, svc.addr),
        route("late", "/queue", "[routes.shadow]\ntimeout = \"300ms\"\nconcurrency = 2\n")
    );
    let gw = Gateway::start(&cfg);
    let t = Instant::now();
    for _ in 0..4 {
        assert_eq!(gw.get("/queue", &[]).await.0, 200);
    }
    let v = wait_report(&gw, "4 mirrors timed out", |v| n(v, "late", "/errors/shadow") == 4).await;
    let took = t.elapsed();
    // two at a time, 300 ms each: ~0.6 s; the shadow's answers would take 6 s
    assert!(took < Duration::from_millis(2500), "timed out after {took:?}: {v:#}");
    assert_eq!((n(&v, "late", "/mirrored"), n(&v, "late", "/compared")), (4, 0), "{v:#}");
}

/// An HTTP/2 client (h2c prior knowledge, curl) is shadowed like an HTTP/1.1 one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_are_shadowed_like_http1() {
    let (legacy, svc) = (server(Role::Legacy).await, server(Role::Shadow).await);
    let cfg = format!(
        "h2c = true\n\n{}{}{}",
        upstreams(legacy.addr, svc.addr),
        route("ident", "/ident", ""),
        route("price", "/price", "")
    );
    let gw = Gateway::start(&cfg);
    for path in ["/ident", "/price"] {
        let out = tokio::task::block_in_place(|| {
            std::process::Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", "--http2-prior-knowledge"])
                .arg(gw.url(path))
                .output()
                .unwrap()
        });
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200 2", "{path}");
    }
    let v =
        wait_report(&gw, "both compared", |v| n(v, "ident", "/compared") == 1 && n(v, "price", "/compared") == 1).await;
    assert_eq!((n(&v, "ident", "/matched"), n(&v, "price", "/mismatched")), (1, 1), "{v:#}");
    assert_eq!(svc.seen("/ident").len(), 1);
}

/// A candidate that answers the first request on each connection, then reads the next one and
/// closes without answering (as one that crashed, or whose keep-alive timeout raced the write).
/// Returns its address, the request lines it read and its connection count.
async fn hanging_up_candidate() -> (SocketAddr, Arc<Mutex<Vec<String>>>, Arc<Mutex<usize>>) {
    use tokio::io::AsyncWriteExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (lines, conns) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(0)));
    let (seen, count) = (lines.clone(), conns.clone());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = l.accept().await.unwrap();
            *count.lock().unwrap() += 1;
            let seen = seen.clone();
            tokio::spawn(async move {
                for answered in [true, false] {
                    let Some(req) = strangler_support::raw_http::read_request(&mut sock).await else { return };
                    let line = String::from_utf8_lossy(&req).lines().next().unwrap_or("").to_string();
                    seen.lock().unwrap().push(line);
                    if answered {
                        let body = "{\"ok\":true}";
                        let a = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        if sock.write_all(a.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
                // dropped: closed after reading the second request, without an answer
            });
        }
    });
    (addr, lines, conns)
}

/// A mirror whose pooled connection is closed after the candidate read it is not delivered
/// twice when it is a write: the POST is a shadow error, the candidate saw it once; a GET is
/// sent again on a new connection and compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_candidate_may_have_received_is_not_mirrored_twice() {
    let legacy = server(Role::Legacy).await;
    let (svc, lines, conns) = hanging_up_candidate().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("dry-run.secret");
    std::fs::write(&secret_file, "test-dry-run-secret-0123456789\n").unwrap();
    let cfg = format!(
        "shadow_secret_file = \"{}\"\n\n{}{}",
        secret_file.display(),
        upstreams(legacy.addr, svc),
        route("hangup", "/hangup", "[routes.shadow]\nwrites = \"dry-run\"\nconcurrency = 1\n"),
    );
    let gw = Gateway::start(&cfg);
    let post = || async { gw.client.post(gw.url("/hangup")).body("{\"qty\":1}").send().await.unwrap().status() };
    // one at a time, each mirror done before the next request: the second of each pair goes
    // over the connection the first left pooled
    assert_eq!(post().await, 200);
    wait_report(&gw, "the first POST compared", |v| n(v, "hangup", "/compared") == 1).await;
    assert_eq!(post().await, 200);
    wait_report(&gw, "the second POST failed", |v| n(v, "hangup", "/errors/shadow") == 1).await;
    assert_eq!(gw.get("/hangup", &[]).await.0, 200);
    wait_report(&gw, "the first GET compared", |v| n(v, "hangup", "/compared") == 2).await;
    assert_eq!(gw.get("/hangup", &[]).await.0, 200);
    let v = wait_report(&gw, "the second GET compared", |v| n(v, "hangup", "/compared") == 3).await;
    assert_eq!((n(&v, "hangup", "/mirrored"), n(&v, "hangup", "/errors/shadow")), (4, 1), "{v:#}");
    let lines = lines.lock().unwrap().clone();
    let count = |m: &str| lines.iter().filter(|l| l.starts_with(m)).count();
    assert_eq!((count("POST "), count("GET ")), (2, 3), "each POST once, the unanswered GET twice: {lines:?}");
    assert_eq!(*conns.lock().unwrap(), 3, "a new connection only for the first GET and its resend");
    let metrics = gw.metrics().await;
    assert!(metrics.contains("strangler_shadow_errors_total{route=\"hangup\",side=\"shadow\"} 1"), "{metrics}");
}
