//! Contract check: for every migrated endpoint, the same requests go to legacy and to the
//! extracted service, over data cdc-sync copied, and the answers must agree under the shadow
//! comparison rules — compared with the gateway's own `shadow::compare`, not a second diff.

use std::time::{Duration, Instant};

use reqwest::{Client, Method};
use serde_json::{json, Value};
use strangler_gateway::config::compare_rules;
use strangler_gateway::shadow::compare::{compare, Captured, CompareRules};
use strangler_support::{Stack, StackOptions};

/// The comparison rules of `route`, exactly as routes.toml's `[routes.shadow]` table states them
/// (the rules shadowing uses when the route is moved to stage "shadow").
fn rules(route: &str) -> CompareRules {
    let path = strangler_support::stack::repo_dir().join("routes.toml");
    let src = std::fs::read_to_string(&path).unwrap();
    let mut all = compare_rules("routes.toml", &src).unwrap_or_else(|e| panic!("{e}"));
    all.remove(route).unwrap_or_else(|| panic!("routes.toml: route {route:?} has no [routes.shadow] table"))
}

struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// `dry_run`: the `x-strangler-shadow` value (with the stack's secret) that makes it a dry run.
async fn call(http: &Client, method: Method, url: &str, body: Option<&Value>, dry_run: Option<&str>) -> Answer {
    let mut r = http.request(method, url);
    if let Some(b) = body {
        r = r.json(b);
    }
    if let Some(v) = dry_run {
        r = r.header("x-strangler-shadow", v);
    }
    let resp = r.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    Answer { status: resp.status().as_u16(), body: resp.bytes().await.unwrap().to_vec() }
}

/// The HTTP client, and the `x-strangler-shadow` value with the stack's secret.
struct Caller {
    http: Client,
    dry_run: String,
}

/// Sends `path` to both sides and returns the differences found (empty = contract holds).
async fn differences(
    caller: &Caller,
    legacy: &str,
    extracted: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
    rules: &CompareRules,
) -> Vec<String> {
    // The extracted side runs first as a dry run (rolled back), so both see the same state.
    let shadow = (method != Method::GET).then_some(caller.dry_run.as_str());
    let e = call(&caller.http, method.clone(), &format!("{extracted}{path}"), body, shadow).await;
    let l = call(&caller.http, method.clone(), &format!("{legacy}{path}"), body, None).await;
    let c = compare(
        rules,
        &Captured { status: l.status, headers: &[], body: &l.body, truncated: false, digest: None },
        &Captured { status: e.status, headers: &[], body: &e.body, truncated: false, digest: None },
    );
    c.differences.iter().map(|d| format!("{method} {path}: {d}")).collect()
}

async fn json_get(http: &Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extracted_services_answer_like_legacy() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StackOptions::for_test(dir.path());
    opts.gateway = false;
    let stack =
        tokio::task::spawn_blocking(move || Stack::start(opts)).await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    let http = Client::new();
    let (legacy, catalog, orders) = (stack.legacy_url(), stack.catalog_url(), stack.orders_url());
    let caller = Caller { http: http.clone(), dry_run: stack.dry_run_header() };
    let mut diffs = Vec::new();

    // --- catalog: every read endpoint, with the data cdc-sync snapshotted -------------------
    let products = json_get(&http, &format!("{legacy}/api/products?limit=100")).await;
    let total = products["page"]["total"].as_i64().unwrap();
    assert!(total >= 300, "seeded products: {total}");
    let cats = json_get(&http, &format!("{legacy}/api/categories")).await;
    let slugs: Vec<String> =
        cats["data"].as_array().unwrap().iter().map(|c| c["slug"].as_str().unwrap().to_string()).collect();
    let skus: Vec<String> =
        products["data"].as_array().unwrap().iter().take(20).map(|p| p["sku"].as_str().unwrap().to_string()).collect();
    let tags: Vec<String> = products["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["tags"].as_array().unwrap().clone())
        .filter_map(|t| t.as_str().map(String::from))
        .take(3)
        .collect();
    let word = products["data"][3]["name"].as_str().unwrap().split_whitespace().next().unwrap().to_lowercase();

    let mut paths = vec![
        "/api/categories".to_string(),
        "/api/products".into(),
        format!("/api/products?limit=100&offset={}", total - 50),
    ];
    paths.extend((1..=40).map(|i| format!("/api/products/{i}")));
    paths.extend(slugs.iter().take(5).map(|s| format!("/api/products?category={s}&limit=100")));
    paths.extend(tags.iter().map(|t| format!("/api/products?tag={t}")));
    paths.push(format!("/api/products?q={word}&limit=100"));
    paths.extend(skus.iter().map(|s| format!("/api/inventory/{s}")));
    // Bad input must fail the same way.
    paths.extend(
        [
            "/api/products/999999",
            "/api/products/abc",
            "/api/products?limit=0",
            "/api/products?limit=x",
            "/api/inventory/NOPE",
        ]
        .map(String::from),
    );
    for p in &paths {
        let route = if p.starts_with("/api/categories") {
            "categories"
        } else if p.starts_with("/api/inventory") {
            "inventory"
        } else {
            "products"
        };
        diffs.extend(differences(&caller, &legacy, &catalog, Method::GET, p, None, &rules(route)).await);
    }
    let catalog_checked = paths.len();

    // --- orders: reads -----------------------------------------------------------------------
    let mut paths: Vec<String> = (1..=40).map(|i| format!("/api/orders/{i}")).collect();
    paths.extend((1..=20).map(|i| format!("/api/customers/{i}/orders")));
    paths.extend(
        ["/api/orders/99999999", "/api/orders/x", "/api/customers/99999/orders", "/api/customers/1/orders?limit=500"]
            .map(String::from),
    );
    for p in &paths {
        let route = if p.starts_with("/api/customers") { "customer-orders" } else { "order-read" };
        diffs.extend(differences(&caller, &legacy, &orders, Method::GET, p, None, &rules(route)).await);
    }

    // --- orders: writes (extracted side as a dry run, then legacy for real) -----------------
    let write = rules("order-create");
    let pid = products["data"][5]["id"].as_i64().unwrap();
    let good = json!({"customer_id": 3, "items": [{"product_id": pid, "quantity": 1}], "payment": {"method": "card"}, "notes": "contract"});
    let bad_bodies = [
        json!({"customer_id": 999999, "items": [{"product_id": pid, "quantity": 1}]}),
        json!({"customer_id": 3, "items": []}),
        json!({"customer_id": 3, "items": [{"product_id": pid, "quantity": 0}]}),
        json!({"customer_id": 3, "items": [{"product_id": 99999999, "quantity": 1}]}),
        json!({"customer_id": 3, "items": [{"product_id": pid, "quantity": 1}], "payment": {"method": "cash"}}),
        json!({"customer_id": "three"}),
    ];
    for b in &bad_bodies {
        diffs.extend(differences(&caller, &legacy, &orders, Method::POST, "/api/orders", Some(b), &write).await);
    }
    let orders_before = stack.services_pg.psql("orders", "SELECT count(*) FROM orders").unwrap();
    diffs.extend(differences(&caller, &legacy, &orders, Method::POST, "/api/orders", Some(&good), &write).await);

    // The legacy order (a real write) reaches the orders service through cdc-sync; its lookup
    // must then be identical on both sides, ids and timestamps included.
    let legacy_order: i64 =
        stack.legacy_pg.psql("legacy", "SELECT max(id) FROM orders WHERE notes = 'contract'").unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.services_pg.psql("orders", &format!("SELECT count(*) FROM orders WHERE id = {legacy_order}")).unwrap()
        != "1"
    {
        assert!(Instant::now() < deadline, "order {legacy_order} never reached the orders service");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dry_run_left_rows =
        stack.services_pg.psql("orders", "SELECT count(*) FROM orders WHERE id >= 1000000000").unwrap();
    assert_eq!(dry_run_left_rows, "0", "the dry run must not leave an order in the service's database");
    assert_ne!(orders_before, "0");
    diffs.extend(
        differences(
            &caller,
            &legacy,
            &orders,
            Method::GET,
            &format!("/api/orders/{legacy_order}"),
            None,
            &rules("order-read"),
        )
        .await,
    );

    if !diffs.is_empty() {
        // One line per request (the first difference, shortened) keeps a failure readable.
        let mut seen = std::collections::BTreeSet::new();
        let shown: Vec<String> = diffs
            .iter()
            .filter(|d| seen.insert(d.split(": ").next().unwrap_or_default().to_string()))
            .take(40)
            .map(|d| d.chars().take(300).collect())
            .collect();
        panic!(
            "{} contract differences in {} requests (catalog paths checked: {catalog_checked}); first per request:\n{}",
            diffs.len(),
            seen.len(),
            shown.join("\n")
        );
    }
}
