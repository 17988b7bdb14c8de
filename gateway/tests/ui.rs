//! The dashboard (`/ui`) in a real headless Chromium, driven over WebDriver (chromedriver),
//! against the real gateway binary: the page loads without errors, follows a routes.toml change
//! without a reload, shows a shadow mismatch as a highlighted diff with redacted values still
//! redacted, reads cdc-sync status endpoints and rejected reloads, and its JSON needs the admin
//! token. The screenshots in docs/ are taken on the way.
//!
//! Chromium and chromedriver are Debian's (`scripts/ensure-deps.sh` installs them): without them
//! these tests fail, they never skip.

mod common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use common::{Gateway, TOKEN};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use strangler_support::{free_port, wait_for_http, ChildGuard};

// ---------------------------------------------------------------------------------------------
// The browser

/// The flags the dashboard's tests run Chromium with: headless, no sandbox (CI runs as root),
/// and nothing that reaches for the network (the machine has none).
const CHROMIUM_FLAGS: [&str; 12] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--lang=en-US",
    "--force-color-profile=srgb",
];

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// chromedriver on a free port, and one Chromium session with a fresh profile.
struct Browser {
    client: Option<Client>,
    driver: Option<ChildGuard>,
    port: u16,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let chromedriver = on_path("chromedriver").unwrap_or_else(|| {
            panic!(
                "chromedriver is not installed: the dashboard's browser tests need Debian's chromium and \
                 chromium-driver (scripts/ensure-deps.sh installs them as root). These tests never skip."
            )
        });
        let chromium = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .or_else(|| on_path("chromium"))
            .unwrap_or_else(|| panic!("chromium is not installed (scripts/ensure-deps.sh installs it as root)"));
        let port = free_port();
        let mut cmd = Command::new(&chromedriver);
        // its own process group: whatever it starts can be swept up with it
        cmd.arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
        let driver = ChildGuard::new("chromedriver", cmd.spawn().expect("starting chromedriver"));
        if let Err(e) = wait_for_http(SocketAddr::from(([127, 0, 0, 1], port)), "/status", Duration::from_secs(20)) {
            panic!("chromedriver did not come up on port {port}: {e}");
        }
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push("--window-size=1366,900".into());
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let Value::Object(caps) = caps else { unreachable!() };
        let mut b = Browser { client: None, driver: Some(driver), port, session: None, _profile: profile };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("chromedriver could not start {}: {e}", chromium.display()));
        b.session = client.session_id().await.unwrap();
        b.client = Some(client);
        b
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn js(&self, script: &str) -> Value {
        self.c().execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns something truthy, and returns that.
    async fn wait_js(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script).await;
            if !matches!(v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("") {
                return v;
            }
            if Instant::now() > deadline {
                let page = self.js("return document.getElementById('main').innerText").await;
                panic!("timed out waiting for {what}\npage errors: {:?}\npage:\n{page}", self.errors().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What went wrong in the page: the page's own record (script errors, rejected promises,
    /// failed assets, CSP violations; see boot.js) and the browser log's SEVERE entries.
    async fn errors(&self) -> Vec<String> {
        let mut errors: Vec<String> = match self.js("return window.__stranglerErrors || ['boot.js did not run']").await
        {
            Value::Array(a) => a.iter().map(|v| v.as_str().unwrap_or("?").to_string()).collect(),
            v => vec![format!("unexpected error record {v}")],
        };
        let url = format!("http://127.0.0.1:{}/session/{}/se/log", self.port, self.session.as_deref().unwrap_or(""));
        let log: Value = reqwest::Client::new()
            .post(url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .expect("chromedriver's log endpoint")
            .json()
            .await
            .expect("chromedriver's log as JSON");
        let entries = log["value"].as_array().unwrap_or_else(|| panic!("chromedriver has no browser log: {log}"));
        errors.extend(
            entries
                .iter()
                .filter(|e| e["level"] == "SEVERE")
                .map(|e| format!("console: {}", e["message"].as_str().unwrap_or("?"))),
        );
        errors
    }

    async fn assert_no_errors(&self) {
        let errors = self.errors().await;
        assert!(errors.is_empty(), "the page logged errors:\n{}", errors.join("\n"));
    }

    /// Opens the dashboard and gets past the token prompt as a person would.
    async fn sign_in(&self, gw: &Gateway) {
        self.c().goto(&gw.admin_url("/ui")).await.unwrap();
        self.wait_js("the token prompt", "return document.getElementById('token')").await;
        let input = self.c().find(Locator::Css("#token")).await.unwrap();
        input.send_keys(TOKEN).await.unwrap();
        self.c().find(Locator::Css("#token-form button[type=submit]")).await.unwrap().click().await.unwrap();
        self.wait_js("the routes table", "return document.querySelectorAll('#routes-table tbody tr').length").await;
        let stored = self.js("return sessionStorage.getItem('strangler.adminToken')").await;
        assert_eq!(stored, json!(TOKEN), "the token lives in the tab's session storage");
        let local = self.js("return localStorage.length + document.cookie.length").await;
        assert_eq!(local, json!(0), "and nowhere else");
    }

    async fn go(&self, hash: &str) {
        self.js(&format!("location.hash = {}", json!(hash))).await;
    }

    /// Saves a PNG of the page `width` wide and as tall as its content (capped) to docs/.
    async fn screenshot(&self, name: &str, width: u32) {
        self.c().set_window_size(width, 900).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let height = self.js("return document.documentElement.scrollHeight").await.as_u64().unwrap_or(900);
        self.c().set_window_size(width, height.clamp(600, 4000) as u32).await.unwrap();
        // the charts redraw at the new width on the next poll
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let png = self.c().screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        // docs/ only when asked (`STRANGLER_UPDATE_SCREENSHOTS=1`), so that running the tests
        // leaves the work tree clean; otherwise next to the other test artefacts
        let dir = match std::env::var_os("STRANGLER_UPDATE_SCREENSHOTS") {
            Some(v) if v == "1" => Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs"),
            _ => Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
        };
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Emulates the system's dark or light preference (`prefers-color-scheme`).
    async fn color_scheme(&self, scheme: &str) {
        let url = format!(
            "http://127.0.0.1:{}/session/{}/goog/cdp/execute",
            self.port,
            self.session.as_deref().unwrap_or("")
        );
        let body = json!({"cmd": "Emulation.setEmulatedMedia",
            "params": {"features": [{"name": "prefers-color-scheme", "value": scheme}]}});
        let r = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "emulating {scheme}: {}", r.text().await.unwrap_or_default());
    }

    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            c.close().await.unwrap();
            self.session = None;
        }
    }
}

impl Drop for Browser {
    /// Ends the session (which quits Chromium), then chromedriver, then anything left in its
    /// process group, so no browser outlives a failed test.
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            use std::io::{Read, Write};
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let req = format!("DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(req.as_bytes());
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        if let Some(mut driver) = self.driver.take() {
            let group = driver.pid();
            driver.stop(Duration::from_secs(5));
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).stderr(Stdio::null()).status();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Upstreams, traffic and config

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Legacy,
    Extracted,
}

struct Up {
    role: Role,
    n: AtomicU64,
}

async fn answer(State(up): State<Arc<Up>>, uri: Uri) -> Response {
    let legacy = up.role == Role::Legacy;
    let n = up.n.fetch_add(1, Ordering::Relaxed);
    let jitter = rand::random::<u64>() % if legacy { 4 } else { 9 };
    tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
    let path = uri.path();
    let body = if path.starts_with("/api/products/") {
        // product 7 differs in every way a comparison looks at; the others match
        let differs = !legacy && path == "/api/products/7";
        let mut v = json!({"id": 7, "name": "widget", "price": if differs { 12 } else { 10 },
            "tags": ["garden", "tools"], "stock": {"warehouse": "north", "count": 3}, "currency": "EUR"});
        if differs {
            v.as_object_mut().unwrap().remove("currency");
            v["tags"] = json!(["garden", "tools", "sale"]);
        }
        let cookie = if differs { "sid=extracted-secret-cookie" } else { "sid=legacy-secret-cookie" };
        return ([("content-type", "application/json"), ("set-cookie", cookie)], v.to_string()).into_response();
    } else if path.starts_with("/api/orders/") {
        if !legacy && n % 40 == 0 {
            return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
        }
        json!({"order": 42, "lines": 3})
    } else {
        json!({"path": path, "ok": true})
    };
    ([("content-type", "application/json")], body.to_string()).into_response()
}

async fn upstream(role: Role) -> SocketAddr {
    let app = axum::Router::new().fallback(answer).with_state(Arc::new(Up { role, n: AtomicU64::new(0) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A cdc-sync status endpoint answering what cdc-sync's `/status` does.
async fn cdc_status() -> SocketAddr {
    let status = json!({
        "ready": true, "role": "active",
        "pipelines": {
            "forward": {"state": "streaming", "ready": true, "stopped": false, "error": null, "retries": 0,
                "last_retry": null, "rows_applied": 182_344, "txns_applied": 9_120, "conflicts": 0,
                "applied_lsn": "0/3A2F1C8", "source_lsn": "0/3A2F1C8", "lag_bytes": 0, "lag_seconds": 0.0,
                "rows_per_second": 412.5, "retained_wal_bytes": 1_048_576},
            "reverse": {"state": "retrying: connection refused", "ready": false, "stopped": false, "error": null,
                "retries": 3, "conflicts": 2, "rows_applied": 1_203, "applied_lsn": "0/1F00A10",
                "source_lsn": "0/1F3C000", "lag_bytes": 243_184, "lag_seconds": 12.4, "rows_per_second": 0.0,
                "retained_wal_bytes": 25_165_824,
                "last_retry": {"kind": "connection", "retryable": true, "table": "products", "key": "(7)",
                    "lsn": "0/1F00A10", "sqlstate": "57P01", "message": "terminating connection due to administrator command",
                    "detail": null, "error": "db error: terminating connection", "attempts": 3, "at": "2025-01-01T10:00:00Z"}},
        }
    });
    let app = axum::Router::new().route("/status", axum::routing::get(move || async move { axum::Json(status) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Steady requests through the gateway until stopped (bounded: ~150 req/s on loopback).
struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(gw: &Gateway) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (client, base) = (gw.client.clone(), gw.url(""));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let paths = [
                "/api/products/7",
                "/api/orders/42",
                "/api/search?q=saw",
                "/api/products/1",
                "/api/accounts/3",
                "/api/products/2",
                "/api/history/9",
                "/api/products/3",
            ];
            for i in 0..20_000u64 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let p = paths[(i % paths.len() as u64) as usize];
                if let Ok(r) = client.get(format!("{base}{p}")).send().await {
                    let _ = r.bytes().await;
                }
                tokio::time::sleep(Duration::from_millis(6)).await;
            }
        });
        Traffic { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

fn config(legacy: SocketAddr, svc: SocketAddr, accounts: &str) -> String {
    format!(
        r#"[defaults]
upstream = "legacy"

[upstreams.legacy]
endpoints = ["{legacy}"]

[upstreams.svc]
endpoints = ["{svc}"]

[[routes]]
name = "products"
match = {{ path = "/api/products/**" }}
to = "svc"
stage = "shadow"
[routes.shadow]
compare = {{ status = true, headers = ["set-cookie"], body = true }}

[[routes]]
name = "orders"
match = {{ path = "/api/orders/**" }}
to = "svc"
stage = "canary"
weight = 30

[[routes]]
name = "search"
match = {{ path = "/api/search", methods = ["GET"] }}
to = "svc"
stage = "shadow"

[[routes]]
name = "accounts"
match = {{ path = "/api/accounts/**" }}
to = "svc"
{accounts}

[[routes]]
name = "order-history"
match = {{ path = "/api/history/**" }}
to = "svc"
stage = "extracted"
"#
    )
}

const ROW_NAMES: &str = "return [...document.querySelectorAll('#routes-table tbody tr')].map(r => r.dataset.route)";

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_view_follows_routes_toml_without_a_reload() {
    let (legacy, svc, status) = (upstream(Role::Legacy).await, upstream(Role::Extracted).await, cdc_status().await);
    let dead = common::dead_addr();
    let gw = Gateway::start_with(
        &config(legacy, svc, "stage = \"legacy\""),
        &[
            "--sync-status",
            &format!("catalog=http://{status}/status"),
            "--sync-status",
            &format!("http://{dead}/status"),
        ],
    );
    let traffic = Traffic::start(&gw);
    let b = Browser::start().await;
    b.sign_in(&gw).await;
    assert_eq!(b.js(ROW_NAMES).await, json!(["products", "orders", "search", "accounts", "order-history"]));
    b.js("window.__sameDocument = 'still here'").await;

    // the sampler's last minute: the canary's split, per-side rates
    b.wait_js(
        "the canary's split of the last minute",
        "const c = document.querySelector('tr[data-route=\"orders\"] td.col-split'); \
         return c && / legacy · \\d+% extracted/.test(c.textContent) && !c.textContent.includes('100% legacy')",
    )
    .await;
    b.wait_js("the shadow match rate", "return document.querySelector('tr[data-route=\"products\"] .rate')").await;
    let rollout =
        b.js("return [...document.querySelectorAll('#routes-table [data-rollout]')].map(e => e.dataset.rollout)").await;
    assert_eq!(rollout, json!(["none", "none", "none", "none", "none"]), "no route has a rollout here");

    // filter and sort
    b.js("const f = document.getElementById('route-filter'); f.value = 'canary'; \
          f.dispatchEvent(new Event('input'))")
        .await;
    assert_eq!(b.js(ROW_NAMES).await, json!(["orders"]));
    b.js("const f = document.getElementById('route-filter'); f.value = ''; f.dispatchEvent(new Event('input'))").await;
    b.c().find(Locator::Css("button[data-sort=stage]")).await.unwrap().click().await.unwrap();
    assert_eq!(b.js(ROW_NAMES).await, json!(["accounts", "products", "search", "orders", "order-history"]));
    b.c().find(Locator::Css("button[data-sort=stage]")).await.unwrap().click().await.unwrap();
    assert_eq!(b.js(ROW_NAMES).await[0], json!("order-history"));
    let sorted = b.js("return document.querySelector('th[aria-sort]').getAttribute('aria-sort')").await;
    assert_eq!(sorted, json!("descending"));
    b.c().find(Locator::Css("button[data-sort=order]")).await.unwrap().click().await.unwrap();
    b.wait_js(
        "a few samples of traffic",
        "return document.querySelector('tr[data-route=\"products\"] td.col-L_p99').textContent !== '—'",
    )
    .await;
    b.screenshot("dashboard-routes.png", 1366).await;

    // routes.toml moves a route: the page follows without reloading
    let before = gw.version().await;
    gw.write_config(&config(legacy, svc, "stage = \"canary\"\nweight = 10"));
    let after = gw.wait_version_change(&before).await;
    b.wait_js(
        "accounts at canary 10%",
        "const r = document.querySelector('tr[data-route=\"accounts\"]'); \
         return r && r.dataset.stage === 'canary' && r.querySelector('td.col-weight').textContent === '10%'",
    )
    .await;
    assert_eq!(b.js("return document.getElementById('config-version').textContent").await, json!(after));
    assert_eq!(b.js("return window.__sameDocument").await, json!("still here"), "the page was reloaded");

    // History: the audit trail; the reload above moved accounts to canary 10%
    b.c().find(Locator::Css("nav a[data-view=history]")).await.unwrap().click().await.unwrap();
    let moved = b
        .wait_js(
            "the reload in the history",
            "const r = document.querySelector('#history-table tr[data-route=accounts][data-kind=reload]'); return r && r.innerText",
        )
        .await;
    assert!(moved.as_str().unwrap().contains("canary 10%"), "{moved}");

    // Data sync: one source answering, one not
    b.c().find(Locator::Css("nav a[data-view=sync]")).await.unwrap().click().await.unwrap();
    let reverse = b
        .wait_js(
            "the catalog pipelines",
            "const r = document.querySelector('[data-source=catalog] tr[data-direction=reverse]'); return r && r.innerText",
        )
        .await;
    let reverse = reverse.as_str().unwrap().to_string();
    for want in ["retrying", "12 s", "24.0 MiB", "terminating connection", "57P01"] {
        assert!(reverse.contains(want), "reverse pipeline row lacks {want:?}: {reverse}");
    }
    let verdict = b.js("return document.querySelector('[data-source=catalog] .verdict').textContent").await;
    assert!(verdict.as_str().unwrap().contains("not streaming"), "{verdict}");
    b.wait_js(
        "the silent source",
        &format!("const s = document.querySelector('[data-source=\"{dead}\"]'); return s && s.textContent.includes('not answering')"),
    )
    .await;
    b.screenshot("dashboard-sync.png", 1366).await;

    // Config: a rejected reload with its place in the file
    let broken = config(legacy, svc, "stage = \"sideways\"");
    gw.write_config(&broken);
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.admin_get("/admin/config-errors").await["last_error"].is_null() {
        assert!(Instant::now() < deadline, "the broken file was not rejected\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.c().find(Locator::Css("nav a[data-view=config]")).await.unwrap().click().await.unwrap();
    let place = b
        .wait_js(
            "the rejected reload",
            "const p = document.querySelector('#last-rejected code.place'); return p && p.textContent",
        )
        .await;
    let line = broken.lines().position(|l| l.contains("sideways")).unwrap() + 1 + 5; // + the [gateway] header
    assert!(place.as_str().unwrap().ends_with(&format!("routes.toml:{line}:9")), "{place} (line {line})");
    assert_eq!(b.js("return document.getElementById('config-version').textContent").await, json!(after));

    // a phone: the routes table becomes cards, nothing wider than the screen
    b.go("#/routes").await;
    b.wait_js("the routes table again", "return document.querySelectorAll('#routes-table tbody tr').length === 5")
        .await;
    b.c().set_window_size(390, 844).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let overflow = b.js("return document.documentElement.scrollWidth - window.innerWidth").await;
    assert!(overflow.as_i64().unwrap() <= 0, "the page is {overflow} px wider than a phone's screen");
    b.screenshot("dashboard-routes-phone.png", 390).await;

    b.assert_no_errors().await;
    b.close().await;
    traffic.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_mismatch_shows_as_a_highlighted_diff() {
    let (legacy, svc) = (upstream(Role::Legacy).await, upstream(Role::Extracted).await);
    let gw = Gateway::start(&config(legacy, svc, "stage = \"legacy\""));
    let traffic = Traffic::start(&gw);
    let b = Browser::start().await;
    b.sign_in(&gw).await;
    b.c().find(Locator::Css("tr[data-route=products] a.route-link")).await.unwrap().click().await.unwrap();
    b.wait_js("the products page", "return document.querySelector('.view-route[data-route=products] #route-title')")
        .await;

    // the newest sample is open, the differing paths marked on both sides
    let price = b
        .wait_js(
            "a highlighted diff",
            "const s = document.querySelector('details.sample[open]'); if (!s) return null; \
             const l = s.querySelector('.pane.legacy mark.diff[data-pointer=\"/price\"]'); \
             const e = s.querySelector('.pane.extracted mark.diff[data-pointer=\"/price\"]'); \
             return l && e && [l.textContent, e.textContent]",
        )
        .await;
    assert_eq!(price, json!(["\"price\": 10", "\"price\": 12"]));
    let marks = b
        .js("const s = document.querySelector('details.sample[open]'); \
             return [...s.querySelectorAll('mark.diff')].map(m => m.closest('.pane').classList[1] + ' ' + \
               (m.dataset.pointer || 'header:' + m.dataset.header) + (m.classList.contains('absent') ? ' absent' : ''))")
        .await;
    for want in [
        "legacy /currency",
        "extracted /currency absent",
        "legacy /tags/2 absent",
        "extracted /tags/2",
        "legacy header:set-cookie",
        "extracted header:set-cookie",
    ] {
        assert!(marks.as_array().unwrap().contains(&json!(want)), "no {want:?} among the marks {marks}");
    }
    // redacted on the server, redacted on the page
    let cookie = b
        .js("return document.querySelector('details.sample[open] .pane.legacy mark[data-header=\"set-cookie\"]').textContent")
        .await;
    assert_eq!(cookie, json!("[redacted]"));
    let html = b.js("return document.documentElement.outerHTML").await;
    assert!(!html.as_str().unwrap().contains("secret-cookie"), "a redacted value reached the page");
    // bodies are parsed keeping numbers as written: a 64-bit id is shown exactly
    let parsed = b
        .js(r#"return import('/ui/assets/diff.js').then(m => {
                 const t = m.parseJson('{"id": 12345678901234567890, "a": [1, 2.50, true, null, "x\\"y"]}');
                 let bad = 'accepted';
                 try { m.parseJson('{"a": 1,}'); } catch (e) { bad = 'refused'; }
                 return [t.e[0][1].raw, t.e[1][1].e[1].raw, t.e[1][1].e[4].v, bad];
               })"#)
        .await;
    assert_eq!(parsed, json!(["12345678901234567890", "2.50", "x\"y", "refused"]));
    // the fields that differ most; no rollout, so no actions
    b.wait_js("the top fields", "return document.querySelector('tr[data-field=\"/price\"]')").await;
    let rollout = b.js("return document.getElementById('actions').innerText").await;
    assert!(rollout.as_str().unwrap().contains("No [routes.rollout]"), "{rollout}");
    assert_eq!(b.js("return document.querySelectorAll('#actions button').length").await, json!(0));

    // charts with their text alternatives, once the sampler has a few points
    b.wait_js(
        "a minute of charts",
        "return document.querySelectorAll('#chart-p99 details.data-table tbody tr').length >= 5",
    )
    .await;
    for id in ["chart-match-hour", "chart-match-stage", "chart-p99", "chart-errors", "chart-rps"] {
        let alt = b
            .js(&format!(
                "const f = document.getElementById('{id}'); const svg = f.querySelector('svg[role=img]'); \
                 return [svg.querySelector('title').textContent, svg.querySelector('desc').textContent, \
                   f.querySelectorAll('details.data-table table').length]"
            ))
            .await;
        assert!(!alt[0].as_str().unwrap().is_empty() && alt[2] == json!(1), "{id}: {alt}");
        assert!(!alt[1].as_str().unwrap().contains("No data"), "{id} has no data: {alt}");
    }
    // one product in four differs
    let desc = b.js("return document.querySelector('#chart-match-hour desc').textContent").await;
    let latest = desc.as_str().unwrap().split("match rate: latest ").nth(1).and_then(|r| r.split('%').next());
    let latest: f64 = latest.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{desc}"));
    assert!((50.0..=90.0).contains(&latest), "{desc}");
    b.assert_no_errors().await;
    b.screenshot("dashboard-route.png", 1280).await;
    b.color_scheme("dark").await;
    let bg = b.js("return getComputedStyle(document.body).backgroundColor").await;
    assert_eq!(bg, json!("rgb(14, 17, 21)"), "the dark theme follows the system");
    b.screenshot("dashboard-route-dark.png", 1280).await;
    b.assert_no_errors().await;
    b.close().await;
    traffic.stop().await;
}

#[tokio::test]
async fn the_dashboard_json_needs_the_admin_token() {
    let (legacy, svc) = (upstream(Role::Legacy).await, upstream(Role::Extracted).await);
    let gw = Gateway::start(&config(legacy, svc, "stage = \"legacy\""));
    let c = &gw.client;
    let page = c.get(gw.admin_url("/ui")).send().await.unwrap();
    assert_eq!(page.status(), 200, "the page itself is open");
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert!(page.text().await.unwrap().contains("/ui/assets/app.js"));
    let js = c.get(gw.admin_url("/ui/assets/app.js")).send().await.unwrap();
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(c.get(gw.admin_url("/ui/assets/nope.js")).send().await.unwrap().status(), 404);

    for path in ["/ui/api/routes", "/ui/api/routes/products", "/ui/api/sync", "/ui/api/config"] {
        let none = c.get(gw.admin_url(path)).send().await.unwrap();
        assert_eq!(none.status(), 401, "{path} without a token");
        let wrong = c.get(gw.admin_url(path)).bearer_auth("n0pe").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
        let ok = c.get(gw.admin_url(path)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(ok.status(), 200, "{path} with the token");
        assert_eq!(ok.headers()["cache-control"], "no-store");
        let _: Value = ok.json().await.unwrap();
    }
    let session = |token: Option<&'static str>| {
        let mut rb = c.get(gw.admin_url("/ui/api/session"));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        async move { rb.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(session(None).await, json!({"token_required": true, "token_valid": false}));
    assert_eq!(session(Some("n0pe")).await, json!({"token_required": true, "token_valid": false}));
    assert_eq!(session(Some(TOKEN)).await, json!({"token_required": true, "token_valid": true}));
    let missing = c.get(gw.admin_url("/ui/api/routes/nope")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let routes: Value = gw.admin_get("/ui/api/routes").await;
    assert_eq!(routes["routes"][1]["stage"], "canary");
    assert_eq!(routes["routes"][1]["weight"], 30);
    assert_eq!(routes["routes"][0]["rollout"], Value::Null, "the rollout step is not wired yet");
}

/// A route with a rollout: the routes view and the route's page show its step; an action without
/// the token is refused, and with it (the page's button) it takes effect and lands in the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_actions_need_the_token_and_take_effect() {
    let (legacy, svc) = (upstream(Role::Legacy).await, upstream(Role::Extracted).await);
    let state = tempfile::tempdir().unwrap();
    let accounts = "stage = \"extracted\"\n[routes.rollout]\ninterval = \"200ms\"\n\
                    steps = [{ stage = \"shadow\", duration = \"1h\" }, { stage = \"extracted\" }]\n";
    let cfg = format!("rollout_state_dir = \"{}\"\n\n{}", state.path().display(), config(legacy, svc, accounts));
    let gw = Gateway::start(&cfg);
    let b = Browser::start().await;
    b.sign_in(&gw).await;
    b.wait_js(
        "the rollout step in the routes view",
        "const e = document.querySelector('tr[data-route=accounts] [data-rollout]'); return e && e.dataset.rollout === 'shadow'",
    )
    .await;
    b.go("#/route/accounts").await;
    b.wait_js(
        "the rollout section",
        "const e = document.getElementById('rollout-step'); return e && e.dataset.step === 'shadow'",
    )
    .await;

    // without the token: refused (the same request the button makes, minus the header)
    let refused = gw.client.post(gw.admin_url("/admin/rollouts/accounts/pause")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(gw.admin_get("/admin/rollouts/accounts").await["paused"], json!(false));

    // with it: the page's Pause button
    b.c().find(Locator::Css("#actions button[data-action=pause]")).await.unwrap().click().await.unwrap();
    b.wait_js(
        "the pause to show",
        "const e = document.getElementById('rollout-step'); return e && e.dataset.paused === 'true'",
    )
    .await;
    let s = gw.admin_get("/admin/rollouts/accounts").await;
    assert_eq!((s["paused"].as_bool(), s["paused_reason"].as_str()), (Some(true), Some("paused by admin (dashboard)")));
    b.go("#/history").await;
    b.wait_js(
        "the pause in the history",
        "return document.querySelector('#history-table tr[data-route=accounts][data-kind=pause]')",
    )
    .await;
    b.assert_no_errors().await;
    b.close().await;
}
