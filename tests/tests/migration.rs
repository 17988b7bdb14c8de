//! The migration, lived end to end on the README's stack: two PostgreSQL clusters, the legacy
//! monolith, cdc-sync both pipelines, the catalog and orders services and the gateway. A client
//! load runs through the gateway the whole time while routes.toml is edited step by step:
//!
//! 1. everything on legacy;
//! 2. catalog routes shadowed: 100% match over >= 1,000 compared requests;
//! 3. catalog reads canaried at 25%, then 100% (both sides really serve);
//! 4. order writes shadowed as dry runs: no extra rows anywhere;
//! 5. order routes extracted: orders are written by the service;
//! 6. order routes rolled back to legacy;
//!
//! and then: zero failed client requests across every step, `cdc-sync verify` equal for both
//! pipelines, and every order created through the extracted service readable through legacy.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{json, Value};
use strangler_support::{Stack, StackOptions};

use common::{set_stage, Admin};

/// Requests sent through the gateway by the background client, and every failure.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    fn record(&self, what: &str, result: Result<reqwest::Response, reqwest::Error>) {
        match result {
            Ok(r) if r.status().is_success() => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => self.fail(format!("{what}: {}", r.status())),
            Err(e) => self.fail(format!("{what}: {e}")),
        }
    }

    fn fail(&self, msg: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut f = self.failures.lock().unwrap();
        if f.len() < 20 {
            f.push(msg);
        }
    }
}

/// A read-only client load through the gateway over every migrated read route.
async fn read_load(load: Arc<Load>, gateway: String, products: i64, customers: i64, skus: Vec<String>, worker: u64) {
    let http = Client::new();
    let mut i: u64 = worker;
    while !load.stop.load(Ordering::Relaxed) {
        i += 7;
        let path = match i % 6 {
            0 => format!("/api/products/{}", 1 + (i as i64 % products)),
            1 => format!("/api/products?limit=20&offset={}", i % 200),
            2 => "/api/categories".to_string(),
            3 => format!("/api/inventory/{}", skus[i as usize % skus.len()]),
            4 => format!("/api/orders/{}", 1 + (i as i64 % 300)),
            _ => format!("/api/customers/{}/orders", 1 + (i as i64 % customers)),
        };
        let r = http.get(format!("{gateway}{path}")).send().await;
        load.record(&format!("GET {path}"), r);
    }
}

/// Places an order through the gateway; returns its id.
async fn place_order(http: &Client, gateway: &str, load: &Load, customer: i64, product: i64) -> Option<i64> {
    let body = json!({"customer_id": customer, "items": [{"product_id": product, "quantity": 1}], "payment": {"method": "card"}});
    let r = http.post(format!("{gateway}/api/orders")).json(&body).send().await;
    match r {
        Ok(r) if r.status().as_u16() == 201 => {
            load.ok.fetch_add(1, Ordering::Relaxed);
            let v: Value = r.json().await.unwrap();
            v["data"]["id"].as_i64()
        }
        other => {
            load.record("POST /api/orders", other);
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_and_its_rollback_lose_no_request_and_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StackOptions::for_test(dir.path());
    let token = opts.admin_token.clone();
    let stack = Arc::new(
        tokio::task::spawn_blocking(move || Stack::start(opts)).await.unwrap().unwrap_or_else(|e| panic!("{e}")),
    );
    let gateway = stack.gateway_url();
    let routes = stack.routes_path().to_path_buf();
    let http = Client::new();
    let admin = Admin { http: http.clone(), url: stack.admin_url(), token };
    let sql_legacy = |q: &str| stack.legacy_pg.psql("legacy", q).unwrap();
    let sql_orders = |q: &str| stack.services_pg.psql("orders", q).unwrap();

    // In-stock products with room for every order this test places, and customers.
    let products: i64 = sql_legacy("SELECT count(*) FROM products").parse().unwrap();
    let customers: i64 = sql_legacy("SELECT count(*) FROM customers").parse().unwrap();
    let order_products: Vec<i64> = sql_legacy(
        "SELECT p.id FROM products p JOIN inventory i ON i.product_id = p.id
          WHERE p.active_flg AND p.currency = 'USD' AND i.quantity >= 50 ORDER BY p.id LIMIT 5",
    )
    .lines()
    .map(|l| l.parse().unwrap())
    .collect();
    assert_eq!(order_products.len(), 5);
    let skus: Vec<String> =
        sql_legacy("SELECT sku FROM inventory ORDER BY id LIMIT 50").lines().map(String::from).collect();

    let load = Arc::new(Load::default());
    let readers: Vec<_> = (0..3)
        .map(|w| tokio::spawn(read_load(load.clone(), gateway.clone(), products, customers, skus.clone(), w)))
        .collect();
    let wait_requests = |n: u64| {
        let load = load.clone();
        async move {
            let target = load.ok.load(Ordering::Relaxed) + n;
            let deadline = Instant::now() + Duration::from_secs(120);
            while load.ok.load(Ordering::Relaxed) < target {
                assert!(Instant::now() < deadline, "load stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // 1. Everything on legacy.
    wait_requests(300).await;

    // 2. Catalog routes shadowed: legacy answers, the catalog service is compared.
    for r in ["products", "categories", "inventory"] {
        set_stage(&routes, r, "shadow", None);
    }
    for r in ["products", "categories", "inventory"] {
        admin.wait_stage(r, "shadow", None).await;
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    let compared = loop {
        let mut compared = 0;
        for r in ["products", "categories", "inventory"] {
            compared += admin.shadow(r).await["compared"].as_u64().unwrap_or(0);
        }
        if compared >= 1000 {
            break compared;
        }
        assert!(Instant::now() < deadline, "only {compared} shadow comparisons");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for r in ["products", "categories", "inventory"] {
        let rep = admin.shadow(r).await;
        assert_eq!(rep["mismatched"], 0, "route {r} differs from legacy: {rep:#}");
        assert_eq!(rep["errors"], json!({"legacy": 0, "shadow": 0}), "route {r}: {rep:#}");
    }
    eprintln!("step 2: {compared} catalog requests compared, 100% match");

    // 3. Canary 25%, then 100% of catalog reads to the catalog service.
    for w in [25, 100] {
        for r in ["products", "categories", "inventory"] {
            set_stage(&routes, r, "canary", Some(w));
        }
        for r in ["products", "categories", "inventory"] {
            admin.wait_stage(r, "canary", Some(w)).await;
        }
        wait_requests(500).await;
    }
    let metrics = http
        .get(format!("{}/metrics", stack.admin_url()))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("strangler_gateway_requests_total")
            && l.contains("route=\"products\"")
            && l.contains("side=\"extracted\"")),
        "the catalog service never served a canary request"
    );

    // 4. Order writes shadowed as dry runs.
    let legacy_orders_before: i64 = sql_legacy("SELECT count(*) FROM orders").parse().unwrap();
    set_stage(&routes, "order-create", "shadow", None);
    admin.wait_stage("order-create", "shadow", None).await;
    let mut placed = 0;
    for i in 0..10 {
        if place_order(&http, &gateway, &load, 1 + i % customers, order_products[i as usize % 5]).await.is_some() {
            placed += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin.shadow("order-create").await["mirrored"].as_u64().unwrap_or(0) < 10 {
        assert!(Instant::now() < deadline, "order writes were not mirrored: {:#}", admin.shadow("order-create").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let legacy_orders_after: i64 = sql_legacy("SELECT count(*) FROM orders").parse().unwrap();
    assert_eq!(legacy_orders_after - legacy_orders_before, placed, "exactly the primary writes reached legacy");
    assert_eq!(
        sql_orders("SELECT count(*) FROM orders WHERE id >= 1000000000"),
        "0",
        "a dry run left an order in the service"
    );
    assert_eq!(sql_legacy("SELECT count(*) FROM orders WHERE id >= 1000000000"), "0");
    eprintln!(
        "step 4: {placed} orders shadowed as dry runs, no extra rows: {:#}",
        admin.shadow("order-create").await["match_rate"]
    );

    // 5. Order routes extracted: the orders service takes the writes.
    let order_routes = ["order-create", "order-read", "order-cancel", "customer-orders"];
    for r in order_routes {
        set_stage(&routes, r, "extracted", None);
    }
    for r in order_routes {
        admin.wait_stage(r, "extracted", None).await;
    }
    let mut extracted_orders = Vec::new();
    for i in 0..20 {
        let id = place_order(&http, &gateway, &load, 1 + (i * 3) % customers, order_products[i as usize % 5]).await;
        if let Some(id) = id {
            assert!(id >= 1_000_000_000, "order {id} was not created by the orders service");
            extracted_orders.push(id);
        }
        wait_requests(20).await;
    }
    assert_eq!(extracted_orders.len(), 20);
    let cancelled = extracted_orders[0];
    let r = http.post(format!("{gateway}/api/orders/{cancelled}/cancel")).send().await;
    load.record("POST cancel", r);

    // 6. Roll the order routes back to legacy.
    for r in order_routes {
        set_stage(&routes, r, "legacy", None);
    }
    for r in order_routes {
        admin.wait_stage(r, "legacy", None).await;
    }
    // Every order the service created is readable through legacy (reverse sync), as it was.
    for id in &extracted_orders {
        let deadline = Instant::now() + Duration::from_secs(30);
        let v = loop {
            let r = http.get(format!("{gateway}/api/orders/{id}")).send().await.unwrap();
            if r.status() == 200 {
                break r.json::<Value>().await.unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "order {id} is not readable through legacy after the rollback ({})",
                r.status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let want = if *id == cancelled { "cancelled" } else { "paid" };
        if v["data"]["status"] != want {
            // the cancel may still be in flight through reverse sync
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let v: Value =
                    http.get(format!("{gateway}/api/orders/{id}")).send().await.unwrap().json().await.unwrap();
                if v["data"]["status"] == want {
                    break;
                }
                assert!(Instant::now() < deadline, "order {id}: {}", v["data"]["status"]);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Legacy keeps taking orders after the rollback.
    assert!(place_order(&http, &gateway, &load, 2, order_products[0]).await.is_some_and(|id| id < 1_000_000_000));
    wait_requests(200).await;

    load.stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    let (ok, failed) = (load.ok.load(Ordering::Relaxed), load.failed.load(Ordering::Relaxed));
    assert_eq!(
        failed,
        0,
        "{failed} failed client requests out of {}: {:#?}",
        ok + failed,
        load.failures.lock().unwrap()
    );
    eprintln!("client: {ok} requests, 0 failed");

    // Both pipelines prove the two sides agree.
    let stack2 = stack.clone();
    let verdicts = tokio::task::spawn_blocking(move || {
        ["catalog", "orders"].map(|p| {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let (equal, out) = stack2.cdc_verify(p).unwrap();
                if equal || Instant::now() >= deadline {
                    return (p, equal, out);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    })
    .await
    .unwrap();
    for (p, equal, out) in verdicts {
        assert!(equal, "cdc-sync verify {p}: not equal\n{out}");
    }
}
