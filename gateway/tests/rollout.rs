//! Progressive rollouts against the real binary, with two upstreams under client load: a route
//! moves legacy → shadow → canary → extracted on its own with zero failed requests; a canary
//! that turns bad is rolled back and paused within `interval × failure_limit` plus an interval,
//! with the failing gate in the history; operators pause, resume, promote and abort through the
//! token-protected admin API; a restart serves where the rollout stood.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::{Gateway, TOKEN};
use serde_json::{json, Value};

#[derive(Clone)]
struct Up {
    name: &'static str,
    broken: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

async fn answer(State(u): State<Up>) -> axum::response::Response {
    u.hits.fetch_add(1, Ordering::SeqCst);
    if u.broken.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "{\"error\":{\"code\":\"boom\",\"message\":\"broken\"}}")
            .into_response();
    }
    // both sides answer the same body: shadow comparisons match
    ([("content-type", "application/json"), ("x-side", u.name)], "{\"id\":1,\"name\":\"widget\"}").into_response()
}

async fn upstream(name: &'static str) -> (SocketAddr, Up) {
    let up = Up { name, broken: Arc::default(), hits: Arc::default() };
    let app = axum::Router::new().fallback(answer).with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, up)
}

fn config(legacy: SocketAddr, svc: SocketAddr, steps: &str, failure_limit: u32, state_dir: &std::path::Path) -> String {
    format!(
        "rollout_state_dir = \"{}\"\n\n[defaults]\nupstream = \"legacy\"\n\n\
         [upstreams.legacy]\nendpoints = [\"{legacy}\"]\n\n[upstreams.svc]\nendpoints = [\"{svc}\"]\n\n\
         [[routes]]\nname = \"items\"\nmatch = {{ path = \"/items/**\" }}\nto = \"svc\"\nstage = \"extracted\"\nfallback = \"legacy\"\n\n\
         [routes.shadow]\non_canary = true\n\n\
         [routes.rollout]\ninterval = \"200ms\"\nfailure_limit = {failure_limit}\nsteps = [{steps}]\n\n\
         [routes.rollout.gates]\nmatch_rate = {{ min = 0.95, min_comparisons = 5 }}\nerror_rate = {{ max_delta = 0.05, min_requests = 5 }}\n",
        state_dir.display()
    )
}

/// Client load: GETs until `stop`; returns (requests, failures).
fn load(gw: &Gateway, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    let (client, url) = (gw.client.clone(), gw.url("/items/1"));
    tokio::spawn(async move {
        let (mut n, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => {}
                Ok(r) => failed.push(r.status().to_string()),
                Err(e) => failed.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        (n, failed)
    })
}

async fn status(gw: &Gateway) -> Value {
    gw.admin_get("/admin/rollouts/items").await
}

async fn wait_step(gw: &Gateway, step: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = status(gw).await;
        if s["step"] == step {
            return s;
        }
        assert!(Instant::now() < deadline, "never reached {step:?}: {s:#}\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn history(gw: &Gateway) -> Vec<Value> {
    gw.admin_get("/admin/history?route=items").await["events"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_promotes_itself_to_extracted_with_zero_failed_requests() {
    let ((legacy, _), (svc, svc_up)) = (upstream("legacy").await, upstream("svc").await);
    let state = tempfile::tempdir().unwrap();
    let steps = "{ stage = \"shadow\", duration = \"1s\" }, { stage = \"canary\", weight = 50, duration = \"1s\" }, { stage = \"extracted\" }";
    let gw = Gateway::start(&config(legacy, svc, steps, 2, state.path()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = load(&gw, stop.clone());
    let s = wait_step(&gw, "extracted", Duration::from_secs(30)).await;
    stop.store(true, Ordering::SeqCst);
    let (n, failed) = client.await.unwrap();
    assert!(failed.is_empty(), "{} of {n} failed: {:?}", failed.len(), &failed[..failed.len().min(5)]);
    assert_eq!(
        (s["position"].as_u64(), s["serving"].as_str(), s["paused"].as_bool()),
        (Some(3), Some("extracted"), Some(false))
    );
    assert!(svc_up.hits.load(Ordering::SeqCst) > 0);
    // the route_info metric follows the rollout, not only reloads of the file
    let m = gw.metrics().await;
    let info: Vec<&str> = m.lines().filter(|l| l.starts_with("strangler_gateway_route_info{")).collect();
    assert_eq!(info, ["strangler_gateway_route_info{owner=\"-\",route=\"items\",stage=\"extracted\"} 1"], "{m}");

    // the history shows every step, with the gate values that let it through
    let h = history(&gw).await;
    let kinds: Vec<(&str, &str, &str)> = h
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["from"].as_str().unwrap(), e["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("start", "legacy", "legacy"),
            ("promote", "legacy", "shadow"),
            ("promote", "shadow", "canary 50%"),
            ("promote", "canary 50%", "extracted")
        ],
        "{h:#?}"
    );
    let to_canary = &h[2]["gates"];
    assert!(
        to_canary.as_array().unwrap().iter().any(|g| g["gate"] == "match_rate" && g["verdict"] == "pass"),
        "{to_canary:#}"
    );
    let to_extracted = &h[3]["gates"];
    assert!(
        to_extracted.as_array().unwrap().iter().any(|g| g["gate"] == "error_rate" && g["verdict"] == "pass"),
        "{to_extracted:#}"
    );

    // routes.toml is never rewritten; a restart serves where the rollout stood
    let file = std::fs::read_to_string(&gw.path).unwrap();
    assert!(file.contains("stage = \"extracted\"") && !file.contains("position"));
    let cfg = std::fs::read_to_string(&gw.path).unwrap();
    drop(gw);
    let body = cfg.split_once("\n\n").map(|(_, rest)| rest).unwrap().to_string();
    let gw = Gateway::start(&body);
    let s = status(&gw).await;
    assert_eq!(s["serving"], "extracted", "{s:#}");
    let (code, _) = gw.get("/items/1", &[]).await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_canary_rolls_back_and_pauses_and_operators_steer() {
    let ((legacy, _), (svc, svc_up)) = (upstream("legacy").await, upstream("svc").await);
    let state = tempfile::tempdir().unwrap();
    let steps = "{ stage = \"shadow\", duration = \"300ms\" }, { stage = \"canary\", weight = 50, duration = \"1h\" }, { stage = \"extracted\" }";
    let gw = Gateway::start(&config(legacy, svc, steps, 2, state.path()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = load(&gw, stop.clone());
    wait_step(&gw, "canary 50%", Duration::from_secs(20)).await;

    // the extracted service turns bad: back to shadow within interval x failure_limit + interval
    svc_up.broken.store(true, Ordering::SeqCst);
    let broke = Instant::now();
    let s = wait_step(&gw, "shadow", Duration::from_secs(10)).await;
    let took = broke.elapsed();
    assert!(took < Duration::from_millis(200 * 2 + 200 + 1500), "rolled back after {took:?}");
    assert_eq!(s["paused"], true, "{s:#}");
    assert!(s["paused_reason"].as_str().unwrap().contains("error_rate"), "{s:#}");
    let h = history(&gw).await;
    let rollback = h.iter().find(|e| e["kind"] == "rollback").expect("a rollback event");
    assert_eq!((rollback["from"].as_str(), rollback["to"].as_str()), (Some("canary 50%"), Some("shadow")));
    assert!(
        rollback["gates"].as_array().unwrap().iter().any(|g| g["gate"] == "error_rate" && g["verdict"] == "fail"),
        "{rollback:#}"
    );
    // paused: it stays on shadow although the evidence is fine again
    svc_up.broken.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(status(&gw).await["step"], "shadow");
    stop.store(true, Ordering::SeqCst);
    let (n, failed) = client.await.unwrap();
    assert!(failed.is_empty(), "fallback to legacy hid the bad canary from clients: {} of {n} failed", failed.len());

    // operators: actions need the token; promote skips the step; abort returns to legacy
    let url = gw.admin_url("/admin/rollouts/items/resume");
    assert_eq!(gw.client.post(&url).send().await.unwrap().status(), 401);
    let cross = gw.client.post(&url).bearer_auth(TOKEN).header("sec-fetch-site", "cross-site").send().await.unwrap();
    assert_eq!(cross.status(), 403, "a browser's cross-site request is refused even with the token");
    let act = |action: &'static str| {
        let (c, u) = (gw.client.clone(), gw.admin_url(&format!("/admin/rollouts/items/{action}")));
        async move {
            let r = c.post(u).bearer_auth(TOKEN).header("x-operator", "alice").send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (code, v) = act("promote").await;
    assert_eq!((code, v["step"].as_str(), v["paused"].as_bool()), (200, Some("canary 50%"), Some(true)), "{v:#}");
    let (code, v) = act("abort").await;
    assert_eq!((code, v["step"].as_str()), (200, Some("legacy")), "{v:#}");
    let (code, v) = act("resume").await;
    assert_eq!((code, v["paused"].as_bool()), (200, Some(false)));
    // resumed from legacy: the next passing analysis starts the first step again
    wait_step(&gw, "shadow", Duration::from_secs(5)).await;
    let (code, _) = act("jump").await;
    assert_eq!(code, 400);
    let h = history(&gw).await;
    let ops: Vec<(&str, &str)> = h
        .iter()
        .filter(|e| e["who"].as_str().unwrap().starts_with("admin"))
        .map(|e| (e["kind"].as_str().unwrap(), e["who"].as_str().unwrap()))
        .collect();
    assert_eq!(ops, [("promote", "admin (alice)"), ("abort", "admin (alice)"), ("resume", "admin (alice)")]);
    assert_eq!(gw.admin_get("/admin/rollouts/nope").await["error"]["code"], json!("not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_rollout_mistakes_with_places() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    let src = "[defaults]\nupstream = \"legacy\"\n[upstreams.legacy]\nendpoints = [\"127.0.0.1:1\"]\n[upstreams.svc]\nendpoints = [\"127.0.0.1:2\"]\n\
               [[routes]]\nname = \"r\"\nmatch = { path = \"/r\" }\nto = \"svc\"\nstage = \"extracted\"\n\
               [routes.rollout]\nsteps = [{ stage = \"canary\", weight = 50, duration = \"1m\" }, { stage = \"canary\", weight = 10 }, { stage = \"legacy\" }, { stage = \"shadow\" }, { stage = \"canary\", weight = 100 }]\n\
               [routes.rollout.gates]\nmatch_rate = { min = 1.5 }\ncdc_lag = { status = [\"127.0.0.1:9903\"], max = \"5x\" }\n";
    std::fs::write(&path, src).unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_strangler-gateway")).arg("check").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        "routes.toml:13:62: error: every step but the last needs a duration",
        "every step but the last needs a duration",
        "is not further than the step before it",
        "a rollout step cannot be \"legacy\"",
        "min 1.5 is outside 0.0–1.0",
        "is not an http:// URL",
        "bad duration \"5x\"",
        "a canary step of weight 100 sends every request to one side",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

fn cli(gw: &Gateway, args: &[&str]) -> (i32, String, String) {
    let admin = gw.admin_url("");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler-gateway"))
        .args(args)
        .args(["--admin", &admin, "--token", TOKEN])
        .env("USER", "bob")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A gateway whose route rolls out shadow (for an hour) then extracted, started and at its
/// shadow step (without gates that apply on legacy, the first step is taken at once); with its
/// config and the directory of its rollout state.
async fn at_the_shadow_step() -> (Gateway, String, tempfile::TempDir) {
    let ((legacy, _), (svc, _)) = (upstream("legacy").await, upstream("svc").await);
    let state = tempfile::tempdir().unwrap();
    let steps = "{ stage = \"shadow\", duration = \"1h\" }, { stage = \"extracted\" }";
    let cfg = config(legacy, svc, steps, 2, state.path());
    let gw = Gateway::start(&cfg);
    wait_step(&gw, "shadow", Duration::from_secs(10)).await;
    (gw, cfg, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_steers_and_diffs() {
    let (gw, _cfg, _state) = at_the_shadow_step().await;
    tokio::task::block_in_place(|| {
        let (code, out, err) = cli(&gw, &["rollout", "status"]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.starts_with("items: step 1/2 shadow (serving shadow, cap extracted)") && out.contains("next extracted"),
            "{out}"
        );
        let (code, out, err) = cli(&gw, &["rollout", "pause", "--route", "items"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("PAUSED (paused by admin (bob))"), "{out}");
        let (code, _, err) = cli(&gw, &["rollout", "promote", "--route", "nope"]);
        assert_eq!(code, 1);
        assert!(err.contains("route \"nope\" has no rollout"), "{err}");
        let (code, out, _) = cli(&gw, &["history", "--route", "items"]);
        assert_eq!(code, 0);
        assert!(out.contains("items        pause    shadow -> shadow  by admin (bob)"), "{out}");

        // diff: the file as it is changes nothing; capping the rollout at legacy would
        let (code, out, err) = cli(&gw, &["diff", gw.path.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
        let capped = gw.dir.path().join("capped.toml");
        std::fs::write(
            &capped,
            std::fs::read_to_string(&gw.path)
                .unwrap()
                .replace("stage = \"extracted\"\nfallback", "stage = \"legacy\"\nfallback"),
        )
        .unwrap();
        let (code, out, err) = cli(&gw, &["diff", capped.to_str().unwrap()]);
        assert_eq!((code, out.trim()), (1, "route items: shadow -> legacy"), "{err}");
        std::fs::write(&capped, "[defaults]\nupstream = \"nope\"\n").unwrap();
        let (code, _, err) = cli(&gw, &["diff", capped.to_str().unwrap()]);
        assert_eq!(code, 2);
        assert!(err.contains("unknown upstream \"nope\""), "{err}");
    });
}

/// A real Prometheus (Debian's `prometheus`) on a private port, scraping the gateway.
struct Prometheus {
    _child: strangler_support::ChildGuard,
    url: String,
    _dir: tempfile::TempDir,
}

fn prometheus(scrape_admin: u16) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let port = strangler_support::free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\nscrape_configs:\n  - job_name: gateway\n    \
             authorization:\n      credentials: {TOKEN}\n    static_configs:\n      - targets: ['127.0.0.1:{scrape_admin}']\n"
        ),
    )
    .unwrap();
    let child = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus is installed (scripts/ensure-deps.sh installs it)");
    let child = strangler_support::ChildGuard::new("prometheus", child);
    strangler_support::wait_for_http(SocketAddr::from(([127, 0, 0, 1], port)), "/-/ready", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("prometheus not ready: {e}"));
    Prometheus { _child: child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_gate_asks_a_real_prometheus() {
    let ((legacy, _), (svc, _)) = (upstream("legacy").await, upstream("svc").await);
    let state = tempfile::tempdir().unwrap();
    // parked on shadow first (a 1 h step), while Prometheus starts scraping the gateway
    let base = |shadow_for: &str| {
        config(
            legacy,
            svc,
            &format!("{{ stage = \"shadow\", duration = \"{shadow_for}\" }}, {{ stage = \"extracted\" }}"),
            50, // failed analyses tolerated while Prometheus has no data yet (10 s)
            state.path(),
        )
    };
    let gw = Gateway::start(&base("1h"));
    wait_step(&gw, "shadow", Duration::from_secs(10)).await;
    let prom = prometheus(gw.admin);
    let stop = Arc::new(AtomicBool::new(false));
    let client = load(&gw, stop.clone());
    // the gate: Prometheus must have seen (scraped from the gateway) traffic on the route; the
    // step edit keeps the route on shadow (same step), whose 300 ms are long over
    let with_gate = |query: &str, range: &str| {
        format!("{}prometheus = {{ url = \"{}\", query = '{query}', {range} }}\n", base("300ms"), prom.url)
    };
    let old = gw.version().await;
    gw.write_config(&with_gate("sum(strangler_gateway_requests_total{route=\"items\"})", "min = 5"));
    gw.wait_version_change(&old).await;
    let s = wait_step(&gw, "extracted", Duration::from_secs(30)).await;
    stop.store(true, Ordering::SeqCst);
    client.await.unwrap();
    let promoted = history(&gw).await.into_iter().filter(|e| e["kind"] == "promote").collect::<Vec<_>>();
    let gate = promoted.last().unwrap()["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "prometheus")
        .cloned()
        .unwrap();
    assert_eq!(gate["verdict"], "pass", "{gate:#}");
    assert!(gate["value"].as_f64().unwrap() >= 5.0, "{gate:#} {s:#}");

    // a query whose value is out of range fails: rolled back and paused, the gate named
    let old = gw.version().await;
    gw.write_config(&with_gate("vector(7)", "max = 1"));
    gw.wait_version_change(&old).await;
    let s = wait_step(&gw, "shadow", Duration::from_secs(20)).await;
    assert_eq!(s["paused"], true);
    let rollback = history(&gw).await.into_iter().find(|e| e["kind"] == "rollback").unwrap();
    assert!(rollback["why"].as_str().unwrap().contains("prometheus"), "{rollback:#}");
    assert!(rollback["gates"].to_string().contains("vector(7) = 7"), "{rollback:#}");
}

/// POSTs an operator's action; returns the status the answer shows.
async fn act(gw: &Gateway, action: &str) -> Value {
    let url = gw.admin_url(&format!("/admin/rollouts/items/{action}"));
    let r = gw.client.post(url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200, "{action}");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_removed_and_added_again_starts_over_not_where_the_old_one_stood() {
    let (gw, cfg, state) = at_the_shadow_step().await;
    let s = act(&gw, "promote").await;
    assert_eq!(s["serving"], "extracted", "{s:#}");

    // the rollout is removed and the route set back to legacy: the controller forgets its state
    let (head, _) = cfg.split_once("[routes.shadow]").unwrap();
    let old = gw.version().await;
    gw.write_config(&head.replace("stage = \"extracted\"", "stage = \"legacy\""));
    gw.wait_version_change(&old).await;
    let saved = state.path().join("rollouts.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&saved).unwrap_or_default();
        if !text.contains("\"items\"") {
            break;
        }
        assert!(Instant::now() < deadline, "the removed rollout's state is still saved:\n{text}\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // added again (capped at extracted): it starts from what the route serves, legacy, and
    // moves on to its first step, not to where the old rollout stood
    let old = gw.version().await;
    gw.write_config(&cfg);
    gw.wait_version_change(&old).await;
    let s = status(&gw).await;
    assert!(["legacy", "shadow"].contains(&s["serving"].as_str().unwrap()), "{s:#}");
    // the controller's next tick records the new rollout's start
    let deadline = Instant::now() + Duration::from_secs(10);
    let started = loop {
        let starts: Vec<Value> = history(&gw).await.into_iter().filter(|e| e["kind"] == "start").collect();
        if starts.len() == 2 {
            break starts[1].clone();
        }
        assert!(Instant::now() < deadline, "the rollout never started again: {starts:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(started["to"], "legacy", "{started:#}");
    let s = wait_step(&gw, "shadow", Duration::from_secs(10)).await;
    assert_eq!(s["serving"], "shadow", "{s:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_held_at_its_cap_waits_there_and_takes_the_next_step_when_the_cap_is_raised() {
    let ((legacy, _), (svc, _)) = (upstream("legacy").await, upstream("svc").await);
    let state = tempfile::tempdir().unwrap();
    let steps =
        "{ stage = \"shadow\", duration = \"300ms\" }, { stage = \"canary\", weight = 25, duration = \"300ms\" }, \
                 { stage = \"canary\", weight = 50, duration = \"300ms\" }, { stage = \"extracted\" }";
    let uncapped = config(legacy, svc, steps, 2, state.path());
    let capped = uncapped.replace("stage = \"extracted\"\nfallback", "stage = \"canary\"\nweight = 25\nfallback");
    let gw = Gateway::start(&capped);
    let stop = Arc::new(AtomicBool::new(false));
    let client = load(&gw, stop.clone());
    let s = wait_step(&gw, "canary 25%", Duration::from_secs(20)).await;
    let since = s["since_unix_ms"].as_u64().unwrap();

    // analyses keep passing after the step's 300 ms: the rollout stays at its cap
    let (mut passed, mut seen) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while passed < 3 {
        let s = status(&gw).await;
        assert_eq!((s["step"].as_str(), s["serving"].as_str()), (Some("canary 25%"), Some("canary 25%")), "{s:#}");
        let at = s["last_check"]["at_unix_ms"].as_u64().unwrap_or(0);
        if at != seen && at >= since + 300 && s["last_check"]["verdict"] == "pass" {
            passed += 1;
        }
        seen = at;
        assert!(Instant::now() < deadline, "only {passed} passing analyses at the cap: {s:#}\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // the cap is raised: the next step is canary 50%, then extracted
    let old = gw.version().await;
    gw.write_config(&uncapped);
    gw.wait_version_change(&old).await;
    wait_step(&gw, "extracted", Duration::from_secs(20)).await;
    stop.store(true, Ordering::SeqCst);
    let (n, failed) = client.await.unwrap();
    assert!(failed.is_empty(), "{} of {n} failed", failed.len());
    let moves: Vec<(String, String, String)> = history(&gw)
        .await
        .iter()
        .filter(|e| e["from"] != e["to"])
        .map(|e| {
            (e["kind"].as_str().unwrap().into(), e["from"].as_str().unwrap().into(), e["to"].as_str().unwrap().into())
        })
        .collect();
    let want = [
        ("promote", "legacy", "shadow"),
        ("promote", "shadow", "canary 25%"),
        ("promote", "canary 25%", "canary 50%"),
        ("promote", "canary 50%", "extracted"),
    ]
    .map(|(k, f, t)| (k.to_string(), f.to_string(), t.to_string()));
    assert_eq!(moves, want);
}
