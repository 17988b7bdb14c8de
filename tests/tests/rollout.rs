//! Unattended rollouts on the real stack (PostgreSQL, legacy monolith, cdc-sync, the catalog and
//! orders services, the gateway), under client load:
//! - `products` moves legacy → shadow → canary 50% → extracted on its own, gated on the shadow
//!   match rate, the 5xx rate and the catalog pipeline's lag, with zero failed client requests,
//!   and the history shows every step with its gate values;
//! - `order-create` goes bad mid-canary (the orders service dies): it is back on shadow, paused,
//!   within interval × failure_limit plus an interval, the history naming the failing gate, and
//!   no write is lost: `cdc-sync verify` is equal for both pipelines afterwards.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Admin;
use reqwest::Client;
use serde_json::{json, Value};
use strangler_support::{Stack, StackOptions};

/// Gives `route` a rollout in the live routes.toml: its stage becomes the cap ("extracted") and
/// the rollout table goes after the route's own tables.
fn add_rollout(routes: &Path, route: &str, rollout: &str) {
    let text = std::fs::read_to_string(routes).unwrap();
    let start = text.find(&format!("name = \"{route}\"\n")).unwrap_or_else(|| panic!("no route {route}"));
    let end = text[start..].find("[[routes]]").map(|i| start + i).unwrap_or(text.len());
    let block = text[start..end].replacen("stage = \"legacy\"", "stage = \"extracted\"", 1);
    let new = format!("{}{}\n{}\n\n{}", &text[..start], block.trim_end(), rollout.trim(), &text[end..]);
    let tmp = routes.with_extension("toml.tmp");
    std::fs::write(&tmp, new).unwrap();
    std::fs::rename(&tmp, routes).unwrap();
}

#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: Mutex<Vec<String>>,
    stop: AtomicBool,
}

async fn wait_step(admin: &Admin, route: &str, step: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        // 404 until the reload that adds the rollout went through
        let r = admin
            .http
            .get(format!("{}/admin/rollouts/{route}", admin.url))
            .bearer_auth(&admin.token)
            .send()
            .await
            .unwrap();
        let s: Value = r.json().await.unwrap_or(Value::Null);
        if s["step"] == step {
            return s;
        }
        assert!(Instant::now() < deadline, "{route} never reached {step:?}: {s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_promote_themselves_and_a_bad_canary_rolls_back_without_losing_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StackOptions::for_test(dir.path());
    let token = opts.admin_token.clone();
    let (cdc_catalog, cdc_orders) = (opts.ports.cdc_catalog, opts.ports.cdc_orders);
    let mut stack =
        tokio::task::spawn_blocking(move || Stack::start(opts)).await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    let gateway = stack.gateway_url();
    let routes = stack.routes_path().to_path_buf();
    let http = Client::new();
    let admin = Admin { http: http.clone(), url: stack.admin_url(), token };
    let products: i64 = stack.legacy_pg.psql("legacy", "SELECT count(*) FROM products").unwrap().parse().unwrap();
    let order_product: i64 = stack
        .legacy_pg
        .psql(
            "legacy",
            "SELECT p.id FROM products p JOIN inventory i ON i.product_id = p.id \
             WHERE p.active_flg AND p.currency = 'USD' AND i.quantity >= 500 ORDER BY p.id LIMIT 1",
        )
        .unwrap()
        .parse()
        .unwrap();

    // readers of products, one writer of orders
    let reads = Arc::new(Load::default());
    let writes = Arc::new(Load::default());
    let mut tasks = Vec::new();
    for w in 0..2u64 {
        let (load, http, gateway) = (reads.clone(), http.clone(), gateway.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while !load.stop.load(Ordering::Relaxed) {
                i = (i * 7 + 13) % products as u64;
                match http.get(format!("{gateway}/api/products/{}", i + 1)).send().await {
                    Ok(r) if r.status().is_success() || r.status() == 404 => {
                        load.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => load.failed.lock().unwrap().push(format!("GET products: {}", r.status())),
                    Err(e) => load.failed.lock().unwrap().push(format!("GET products: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    {
        let (load, http, gateway) = (writes.clone(), http.clone(), gateway.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = 0i64;
            while !load.stop.load(Ordering::Relaxed) {
                c = c % 50 + 1;
                let body = json!({"customer_id": c, "items": [{"product_id": order_product, "quantity": 1}], "payment": {"method": "card"}});
                match http.post(format!("{gateway}/api/orders")).json(&body).send().await {
                    Ok(r) if r.status().as_u16() == 201 => {
                        load.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => load.failed.lock().unwrap().push(format!("POST orders: {}", r.status())),
                    Err(e) => load.failed.lock().unwrap().push(format!("POST orders: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }));
    }

    // 1. products: shadow -> canary 50% -> extracted, unattended
    add_rollout(
        &routes,
        "products",
        &format!(
            "[routes.rollout]\ninterval = \"300ms\"\nfailure_limit = 3\n\
             steps = [{{ stage = \"shadow\", duration = \"2s\" }}, {{ stage = \"canary\", weight = 50, duration = \"2s\" }}, {{ stage = \"extracted\" }}]\n\
             [routes.rollout.gates]\nmatch_rate = {{ min = 0.95, min_comparisons = 10 }}\n\
             error_rate = {{ max_delta = 0.05, min_requests = 10 }}\n\
             cdc_lag = {{ status = [\"http://127.0.0.1:{cdc_catalog}/status\"], max = \"5s\" }}"
        ),
    );
    let s = wait_step(&admin, "products", "extracted", Duration::from_secs(90)).await;
    assert_eq!(s["serving"], "extracted", "{s:#}");
    let history = admin.get("/admin/history?route=products").await["events"].as_array().unwrap().clone();
    let moves: Vec<(&str, &str)> = history
        .iter()
        .filter(|e| e["kind"] == "promote")
        .map(|e| (e["from"].as_str().unwrap(), e["to"].as_str().unwrap()))
        .collect();
    assert_eq!(moves, [("legacy", "shadow"), ("shadow", "canary 50%"), ("canary 50%", "extracted")], "{history:#?}");
    let gate_names: Vec<&str> = history
        .iter()
        .flat_map(|e| e["gates"].as_array().unwrap().iter().map(|g| g["gate"].as_str().unwrap()))
        .collect();
    for g in ["match_rate", "error_rate", "cdc_lag"] {
        assert!(gate_names.contains(&g), "{g} never judged: {history:#?}");
    }
    let failed_reads = reads.failed.lock().unwrap().clone();
    assert!(
        failed_reads.is_empty(),
        "{} reads failed: {:?}",
        failed_reads.len(),
        &failed_reads[..failed_reads.len().min(5)]
    );

    // 2. order-create: the orders service dies mid-canary
    add_rollout(
        &routes,
        "order-create",
        &format!(
            "[routes.rollout]\ninterval = \"300ms\"\nfailure_limit = 2\n\
             steps = [{{ stage = \"shadow\", duration = \"1s\" }}, {{ stage = \"canary\", weight = 50, duration = \"10m\" }}, {{ stage = \"extracted\" }}]\n\
             [routes.rollout.gates]\nerror_rate = {{ max_delta = 0.05, min_requests = 3 }}\n\
             cdc_lag = {{ status = [\"http://127.0.0.1:{cdc_orders}/status\"], max = \"5s\" }}"
        ),
    );
    wait_step(&admin, "order-create", "canary 50%", Duration::from_secs(60)).await;
    let before = writes.ok.load(Ordering::Relaxed);
    while writes.ok.load(Ordering::Relaxed) < before + 10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stack.kill("orders"), "the orders service runs in the stack");
    let killed = Instant::now();
    let s = wait_step(&admin, "order-create", "shadow", Duration::from_secs(20)).await;
    let took = killed.elapsed();
    assert_eq!(s["paused"], true, "{s:#}");
    // interval x failure_limit + interval, plus the time for 3 extracted requests to fail
    assert!(took < Duration::from_secs(6), "rolled back after {took:?}");
    let history = admin.get("/admin/history?route=order-create").await["events"].as_array().unwrap().clone();
    let rollback = history.iter().find(|e| e["kind"] == "rollback").expect("a rollback");
    assert!(
        rollback["gates"].as_array().unwrap().iter().any(|g| g["gate"] == "error_rate" && g["verdict"] == "fail"),
        "{rollback:#}"
    );
    eprintln!("rolled back {took:?} after the orders service died: {}", rollback["why"]);
    // orders keep being placed (on legacy) after the rollback
    let after = writes.ok.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    while writes.ok.load(Ordering::Relaxed) < after + 10 {
        assert!(Instant::now() < deadline, "orders stopped after the rollback");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 3. stop the load; no write lost: both pipelines' sides are equal
    reads.stop.store(true, Ordering::Relaxed);
    writes.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "{} reads, {} orders placed, {} order requests failed while the service was down",
        reads.ok.load(Ordering::Relaxed),
        writes.ok.load(Ordering::Relaxed),
        writes.failed.lock().unwrap().len()
    );
    let stack = Arc::new(stack);
    for p in ["catalog", "orders"] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s2 = stack.clone();
            let (equal, out) = tokio::task::spawn_blocking(move || s2.cdc_verify(p)).await.unwrap().unwrap();
            if equal {
                break;
            }
            assert!(Instant::now() < deadline, "cdc-sync verify {p}: not equal\n{out}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
