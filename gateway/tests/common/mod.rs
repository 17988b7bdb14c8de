//! Shared harness: echoing upstream servers and a real gateway process.
#![allow(dead_code)]

pub mod certs;
pub mod raw_http;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use strangler_support::{free_port, wait_for_http, ChildGuard};

pub const TOKEN: &str = "t0ken";

/// An HTTP server on 127.0.0.1:0 that answers every request with JSON naming itself and echoing
/// what it received. `/slow` waits 2 s, `/fail` answers 503, `/flaky` answers 503 too.
pub struct Upstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Every request received: method, path and query, headers.
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

/// A request an [`Upstream`] received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: HeaderMap,
}

struct UpState {
    name: &'static str,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn echo(State(s): State<Arc<UpState>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let target = uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    s.seen.lock().unwrap().push(Seen { method: method.to_string(), target, headers: headers.clone() });
    match uri.path() {
        "/slow" => tokio::time::sleep(Duration::from_secs(2)).await,
        "/fail" | "/flaky" => {
            return (StatusCode::SERVICE_UNAVAILABLE, [("x-upstream", s.name)], "down at 10.1.2.3").into_response()
        }
        _ => {}
    }
    let hdrs: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), serde_json::Value::String(v.to_str().unwrap_or("").to_string())))
        .collect();
    let body = serde_json::json!({
        "upstream": s.name,
        "method": method.as_str(),
        "path": uri.path(),
        "headers": hdrs,
        "body_len": body.len(),
    });
    ([("x-upstream", s.name), ("content-type", "application/json")], body.to_string()).into_response()
}

impl Upstream {
    pub async fn start(name: &'static str) -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(UpState { name, hits: hits.clone(), seen: seen.clone() });
        let app = axum::Router::new().fallback(echo).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Upstream { name, addr, hits, seen }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The requests received whose path (and query) starts with `prefix`.
    pub fn seen(&self, prefix: &str) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| s.target.starts_with(prefix)).cloned().collect()
    }

    /// Waits (polling, at most 10 s) until a request to `prefix` arrived; returns the first one.
    pub async fn wait_seen(&self, prefix: &str) -> Seen {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.seen(prefix).into_iter().next() {
                return s;
            }
            assert!(Instant::now() < deadline, "{} never received a request to {prefix}", self.name);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// An address where nothing listens.
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A running gateway binary with its own config file and ports.
pub struct Gateway {
    pub child: ChildGuard,
    pub port: u16,
    pub admin: u16,
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub client: reqwest::Client,
}

impl Gateway {
    fn header(port: u16, admin: u16) -> String {
        format!("[gateway]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nadmin_token = \"{TOKEN}\"\n\n")
    }

    /// Starts the gateway with `body` (everything but `[gateway]`) and waits for readiness.
    pub fn start(body: &str) -> Gateway {
        Self::start_with(body, &[])
    }

    pub fn start_with(body: &str, extra_args: &[&str]) -> Gateway {
        Self::start_with_env(body, extra_args, &[])
    }

    /// [`Self::start_with`] with extra environment variables for the gateway process.
    pub fn start_with_env(body: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        let (port, admin) = (free_port(), free_port());
        std::fs::write(&path, format!("{}{body}", Self::header(port, admin))).unwrap();
        let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strangler-gateway"));
        cmd.arg("run")
            .arg("--config")
            .arg(&path)
            .arg("--pid-file")
            .arg(dir.path().join("gw.pid"))
            .arg("--upgrade-sock")
            .arg(dir.path().join("upgrade.sock"))
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let child = ChildGuard::new("strangler-gateway", cmd.spawn().unwrap());
        let ready = wait_for_http(SocketAddr::from(([127, 0, 0, 1], admin)), "/health/ready", Duration::from_secs(20));
        if let Err(e) = ready {
            panic!(
                "gateway not ready: {e}\n{}",
                std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default()
            );
        }
        // a port taken by another process would have the test talk to that process instead
        let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
        assert!(!log.contains("is in use"), "the gateway could not bind its ports {port}/{admin}:\n{log}");
        let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
        Gateway { child, port, admin, dir, path, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }
}

/// When a test fails, the gateway's own log (in a temp dir that is about to be removed) is the
/// evidence: print its tail so a rare failure can be diagnosed from the CI output.
impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!("--- last {} lines of the gateway log (port {}) ---\n{}", tail.len(), self.port, tail.join("\n"));
        }
    }
}

impl Gateway {
    /// Replaces the config atomically (write a temp file, rename over), as editors do.
    pub fn write_config(&self, body: &str) {
        let tmp = self.dir.path().join(".routes.toml.tmp");
        std::fs::write(&tmp, format!("{}{body}", Self::header(self.port, self.admin))).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        self.client.get(self.admin_url(path)).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap()
    }

    pub async fn version(&self) -> String {
        self.admin_get("/admin/routes").await["version"].as_str().unwrap().to_string()
    }

    /// Polls the admin API until the serving version differs from `old`.
    pub async fn wait_version_change(&self, old: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.version().await;
            if v != old {
                return v;
            }
            assert!(Instant::now() < deadline, "config version stayed {old}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// GET through the gateway; returns (status, json body or null, x-upstream header).
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let mut rb = self.client.get(self.url(path));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    pub async fn metrics(&self) -> String {
        self.client.get(self.admin_url("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap()
    }
}

/// `[defaults]` + upstreams block for the usual legacy/extracted pair.
pub fn upstreams(legacy: SocketAddr, extracted: SocketAddr) -> String {
    format!(
        "[defaults]\nupstream = \"legacy\"\n\n[upstreams.legacy]\nendpoints = [\"{legacy}\"]\n\n[upstreams.svc]\nendpoints = [\"{extracted}\"]\nconnect_timeout = \"200ms\"\n\n"
    )
}

/// Sends raw bytes and returns the whole response (the connection is closed by either side).
pub async fn raw_request(port: u16, req: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// The counter at `ptr` (e.g. `/compared`, `/errors/shadow`) of `route` in an `/admin/shadow`
/// answer (0 when absent).
pub fn shadow_count(v: &serde_json::Value, route: &str, ptr: &str) -> u64 {
    v["routes"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["route"] == route))
        .and_then(|r| r.pointer(ptr))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

impl Gateway {
    /// Polls `/admin/shadow` (at most 30 s) until `route` has `n` outcomes (compared or failed on
    /// the shadow side); returns the answer.
    pub async fn wait_shadow_outcomes(&self, route: &str, n: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.admin_get("/admin/shadow").await;
            if shadow_count(&v, route, "/compared") + shadow_count(&v, route, "/errors/shadow") >= n {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {n} mirrors of {route}: {v:#}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
