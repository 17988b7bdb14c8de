//! The access log against the real binary: one JSON line per request with route, side, status,
//! bytes, durations, upstream and ids; the format switches on reload; a log file moved away
//! (logrotate) is reopened.

mod common;

use std::time::{Duration, Instant};

use common::{upstreams, Gateway, Upstream};

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

async fn wait_lines(path: &std::path::Path, n: usize, gw: &Gateway) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = lines(path);
        if l.len() >= n {
            return l;
        }
        assert!(Instant::now() < deadline, "{} has {} lines, want {n}\n{}", path.display(), l.len(), gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_line_per_request_off_the_request_path() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    let cfg = |format: &str| {
        format!(
            "max_body_bytes = 10\n\n[gateway.access_log]\npath = \"{}\"\nformat = \"{format}\"\n\n{}[[routes]]\nname = \"orders\"\nmatch = {{ path = \"/api/orders/**\" }}\nto = \"svc\"\nstage = \"extracted\"\n",
            path.display(),
            upstreams(legacy.addr, svc.addr)
        )
    };
    let gw = Gateway::start(&cfg("json"));
    let r = gw.client.get(gw.url("/api/orders/7?x=1")).header("user-agent", "probe/1").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let sent = r.bytes().await.unwrap().len();
    assert_eq!(gw.get("/other", &[("x-request-id", "rid-2")]).await.0, 200);
    assert_eq!(gw.client.post(gw.url("/big")).body("x".repeat(11)).send().await.unwrap().status(), 413);

    let l = wait_lines(&path, 3, &gw).await;
    let v: Vec<serde_json::Value> = l.iter().map(|x| serde_json::from_str(x).unwrap()).collect();
    let first = &v[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["target"], "/api/orders/7?x=1");
    assert_eq!(
        (first["route"].as_str(), first["stage"].as_str(), first["side"].as_str()),
        (Some("orders"), Some("extracted"), Some("extracted"))
    );
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes_sent"].as_u64(), Some(sent as u64));
    assert_eq!(first["upstream"], svc.addr.to_string());
    assert_eq!(first["user_agent"], "probe/1");
    assert_eq!(first["trace_id"].as_str().map(str::len), Some(32));
    assert!(first["duration_ms"].as_f64().unwrap() >= first["upstream_header_ms"].as_f64().unwrap());
    assert_eq!(
        (v[1]["route"].is_null(), v[1]["side"].as_str(), v[1]["request_id"].as_str()),
        (true, Some("legacy"), Some("rid-2"))
    );
    assert_eq!(v[2]["status"], 413);
    assert!(v[2]["upstream"].is_null(), "{}", v[2]);

    // the format follows a reload
    let old = gw.version().await;
    gw.write_config(&cfg("combined"));
    gw.wait_version_change(&old).await;
    assert_eq!(gw.get("/api/orders/8", &[]).await.0, 200);
    let l = wait_lines(&path, 4, &gw).await;
    assert!(
        l[3].contains("\"GET /api/orders/8 HTTP/1.1\" 200 ") && l[3].contains(" route=orders side=extracted "),
        "{}",
        l[3]
    );

    // logrotate moves the file away: the gateway writes a new one
    std::fs::rename(&path, logs.path().join("access.log.1")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines(&path).is_empty() {
        assert!(Instant::now() < deadline, "the access log was not reopened\n{}", gw.log());
        assert_eq!(gw.get("/after-rotation", &[]).await.0, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lines(&path).iter().all(|l| l.contains("/after-rotation")));
}
