//! The dry-run header belongs to the gateway. A client that sends `x-strangler-shadow` through
//! the gateway — the old bare `1`, or a guessed secret — must not turn its own write into a dry
//! run: with the order routes extracted, its order is committed (readable afterwards, the row is
//! in the service's database), and the service never even sees the header (the gateway strips
//! it, so the service counts no ignored header). A write the gateway mirrors itself (stage
//! `shadow`) still runs as a dry run: the gateway and the services share the stack's secret.

mod common;

use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{json, Value};
use strangler_support::{Stack, StackOptions};

use common::{sample, set_stage, Admin};

/// The orders service's dry-run counters: (dry runs, ignored headers by reason).
async fn dry_run_counters(http: &Client, orders: &str) -> (f64, [(&'static str, f64); 3]) {
    let m = http.get(format!("{orders}/metrics")).send().await.unwrap().text().await.unwrap();
    let dry_runs = sample(&m, "kit_shadow_dry_runs_total{service=\"orders\"}").expect("kit_shadow_dry_runs_total");
    let ignored = ["missing_secret", "wrong_secret", "not_configured"].map(|reason| {
        let series = format!("kit_shadow_header_ignored_total{{reason=\"{reason}\",service=\"orders\"}}");
        (reason, sample(&m, &series).unwrap_or_else(|| panic!("no {series} in:\n{m}")))
    });
    (dry_runs, ignored)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_make_its_own_write_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StackOptions::for_test(dir.path());
    let token = opts.admin_token.clone();
    let stack =
        tokio::task::spawn_blocking(move || Stack::start(opts)).await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    let (gateway, orders) = (stack.gateway_url(), stack.orders_url());
    let http = Client::new();
    let admin = Admin { http: http.clone(), url: stack.admin_url(), token };
    let sql_orders = |q: &str| stack.services_pg.psql("orders", q).unwrap();
    let product: i64 = stack
        .legacy_pg
        .psql(
            "legacy",
            "SELECT p.id FROM products p JOIN inventory i ON i.product_id = p.id
              WHERE p.active_flg AND p.currency = 'USD' AND i.quantity >= 50 ORDER BY p.id LIMIT 1",
        )
        .unwrap()
        .parse()
        .unwrap();
    let order =
        json!({"customer_id": 1, "items": [{"product_id": product, "quantity": 1}], "payment": {"method": "card"}});

    // Order writes and reads go to the orders service.
    for r in ["order-create", "order-read"] {
        set_stage(stack.routes_path(), r, "extracted", None);
    }
    for r in ["order-create", "order-read"] {
        admin.wait_stage(r, "extracted", None).await;
    }

    for value in ["1", "1; secret=guess-guess-guess-1", "true"] {
        let r =
            http.post(format!("{gateway}/api/orders")).header("x-strangler-shadow", value).json(&order).send().await;
        let r = r.unwrap_or_else(|e| panic!("{value:?}: {e}"));
        assert_eq!(r.status(), 201, "{value:?}");
        let id = r.json::<Value>().await.unwrap()["data"]["id"].as_i64().unwrap();
        assert!(id >= 1_000_000_000, "{value:?}: order {id} was not placed by the orders service");
        // committed: in the service's database, and readable through the gateway
        assert_eq!(sql_orders(&format!("SELECT count(*) FROM orders WHERE id = {id}")), "1", "{value:?}");
        let r = http.get(format!("{gateway}/api/orders/{id}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{value:?}: order {id} is not readable");
        assert_eq!(r.json::<Value>().await.unwrap()["data"]["status"], "paid", "{value:?}");
    }
    // The gateway stripped the header: the service neither ran a dry run nor saw one to ignore.
    let (dry_runs, ignored) = dry_run_counters(&http, &orders).await;
    assert_eq!(dry_runs, 0.0);
    assert!(ignored.iter().all(|(_, n)| *n == 0.0), "the service saw a client's x-strangler-shadow: {ignored:?}");

    // A write the gateway mirrors itself is a dry run: same secret on both sides.
    set_stage(stack.routes_path(), "order-create", "shadow", None);
    admin.wait_stage("order-create", "shadow", None).await;
    let service_orders_before = sql_orders("SELECT count(*) FROM orders WHERE id >= 1000000000");
    let r = http.post(format!("{gateway}/api/orders")).json(&order).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["data"]["id"].as_i64().unwrap();
    assert!(id < 1_000_000_000, "at stage shadow legacy answers, not order {id} of the service");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (dry_runs, ignored) = loop {
        let (dry_runs, ignored) = dry_run_counters(&http, &orders).await;
        if dry_runs + ignored.iter().map(|(_, n)| n).sum::<f64>() >= 1.0 {
            break (dry_runs, ignored);
        }
        assert!(
            Instant::now() < deadline,
            "the mirrored write never reached the orders service: {:#}",
            admin.shadow("order-create").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((dry_runs, ignored.map(|(_, n)| n)), (1.0, [0.0; 3]), "the mirrored write: {ignored:?}");
    assert_eq!(
        sql_orders("SELECT count(*) FROM orders WHERE id >= 1000000000"),
        service_orders_before,
        "the mirrored dry run left an order in the service"
    );
}
