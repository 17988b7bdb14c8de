//! Hot reload under load (file edit, SIGHUP, admin POST) and rejection of invalid files.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use strangler_support::Signal;

fn cfg(up: &str, weight: u32, generation: usize) -> String {
    format!(
        r#"# generation {generation}
{up}
[[routes]]
name = "products"
match = {{ path = "/api/products/**" }}
to = "svc"
stage = "canary"
weight = {weight}

[[routes]]
name = "orders"
match = {{ path = "/api/orders/{{id}}" }}
to = "svc"
stage = "{stage}"
"#,
        stage = if generation.is_multiple_of(2) { "legacy" } else { "extracted" }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let up = upstreams(legacy.addr, svc.addr);
    let gw = Gateway::start(&cfg(&up, 0, 0));

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..6 {
        let (c, stop, ok, failures) = (gw.client.clone(), stop.clone(), ok.clone(), failures.clone());
        let base = gw.url("");
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let path =
                    if i.is_multiple_of(2) { format!("/api/products/{w}-{i}") } else { format!("/api/orders/{i}") };
                match c.get(format!("{base}{path}")).send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.lock().unwrap().push(format!("{path}: body: {e}")),
                    },
                    Ok(r) => failures.lock().unwrap().push(format!("{path}: status {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("{path}: {e}")),
                }
            }
        }));
    }

    let mut version = gw.version().await;
    for generation in 1..=50 {
        gw.write_config(&cfg(&up, (generation * 7 % 101) as u32, generation));
        match generation % 3 {
            0 => {} // the file watcher picks it up
            1 => gw.child.signal(Signal::SIGHUP).unwrap(),
            _ => {
                let r = gw.client.post(gw.admin_url("/admin/reload")).bearer_auth(TOKEN).send().await.unwrap();
                assert!(r.status().is_success());
            }
        }
        version = gw.wait_version_change(&version).await;
    }
    // keep the load going until at least 20k requests completed
    while ok.load(Ordering::Relaxed) < 20_000 && failures.lock().unwrap().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        gw.log()
    );
    assert!(ok.load(Ordering::Relaxed) >= 20_000);
    assert!(legacy.hits() > 0 && svc.hits() > 0);
    let m = gw.metrics().await;
    assert!(!m.contains("result=\"error\""), "a reload failed:\n{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reload_is_rejected_and_old_config_keeps_serving() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let up = upstreams(legacy.addr, svc.addr);
    let gw = Gateway::start(&cfg(&up, 100, 1));
    let good = gw.version().await;
    let (_, body) = gw.get("/api/products/1", &[]).await;
    assert_eq!(body["upstream"], "svc");

    // break it: unknown upstream + weight out of range, via the admin API
    let bad = cfg(&up, 100, 1)
        .replace("weight = 100", "weight = 150")
        .replace("to = \"svc\"\nstage = \"extracted\"", "to = \"nope\"\nstage = \"extracted\"");
    gw.write_config(&bad);
    let r = gw.client.post(gw.admin_url("/admin/reload")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let v: serde_json::Value = r.json().await.unwrap();
    let errs: Vec<String> = v["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("routes.toml:") && errs[0].contains("weight 150 is outside 0–100"), "{errs:?}");
    assert!(errs[1].contains("unknown upstream \"nope\""), "{errs:?}");

    // still serving the old config
    assert_eq!(gw.version().await, good);
    let (status, body) = gw.get("/api/products/2", &[]).await;
    assert_eq!((status, body["upstream"].as_str()), (200, Some("svc")));

    let e = gw.admin_get("/admin/config-errors").await;
    assert_eq!(e["serving_version"], good.as_str());
    assert_eq!(e["last_error"]["trigger"], "admin");
    let m = gw.metrics().await;
    assert!(m.contains("strangler_gateway_config_reloads_total{result=\"error\",trigger=\"admin\"} 1"), "{m}");
    assert!(m.contains("strangler_gateway_config_last_reload_failed 1"), "{m}");

    // a broken file written while watching is rejected as well (syntax error this time)
    gw.write_config("[[routes]\nname = ");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let e = gw.admin_get("/admin/config-errors").await;
        if e["last_error"]["trigger"] == "file" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "file watcher did not report the broken file");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(gw.version().await, good);
    assert_eq!(gw.get("/api/products/3", &[]).await.0, 200);

    // fixing the file recovers
    gw.write_config(&cfg(&up, 0, 2));
    gw.wait_version_change(&good).await;
    let (_, body) = gw.get("/api/products/4", &[]).await;
    assert_eq!(body["upstream"], "legacy");
    assert!(gw.admin_get("/admin/config-errors").await["last_error"].is_null());
}

/// A reload that changes the admin token (a leaked one rotated) takes effect at once: the old
/// token stops working, the new one works, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_admin_token_takes_effect_on_reload() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let up = upstreams(legacy.addr, svc.addr);
    let gw = Gateway::start(&cfg(&up, 0, 0));
    let status = |token: &'static str| {
        let req = gw.client.get(gw.admin_url("/admin/routes")).bearer_auth(token);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!((status(TOKEN).await, status("rotated-token").await), (200, 401));
    let header = format!(
        "[gateway]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\nadmin_token = \"rotated-token\"\n\n",
        gw.port, gw.admin
    );
    let tmp = gw.path.with_extension("tmp");
    std::fs::write(&tmp, format!("{header}{}", cfg(&up, 0, 0))).unwrap();
    std::fs::rename(&tmp, &gw.path).unwrap();
    // the file watcher or the SIGHUP reloads it, whichever comes first
    gw.child.signal(Signal::SIGHUP).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status("rotated-token").await != 200 {
        assert!(std::time::Instant::now() < deadline, "the new token never worked:\n{}", gw.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status(TOKEN).await, 401, "the old token still works");
    // the dashboard's data follows too
    let r = gw.client.get(gw.admin_url("/ui/api/routes")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 401);
}
