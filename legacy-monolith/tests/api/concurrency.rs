//! The transactional order write under contention.

use std::sync::Arc;

use serde_json::json;

use crate::common::{assert_error, create_customer, create_product, ok_data, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_orders_for_the_last_ten_items() {
    let app = Arc::new(TestApp::seeded().await);
    let cust = create_customer(&app, "rush@example.com").await;
    let p = create_product(&app, "LAST-TEN", "19.99", 10).await;
    let start = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (app, start) = (app.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            app.post(
                "/api/orders",
                json!({"customer_id": cust, "items": [{"product_id": p, "quantity": 1}], "payment": {"method": "card"}}),
            )
            .await
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        let got = t.await.expect("task");
        match got.0.as_u16() {
            201 => {
                ok_data(&got, 201);
                created += 1;
            }
            _ => {
                assert_error(&got, 409, "out_of_stock");
                refused += 1;
            }
        }
    }
    assert_eq!((created, refused), (10, 40));
    assert_eq!(app.sql_i64("SELECT quantity FROM inventory WHERE sku = 'LAST-TEN'"), 0);
    let orders = app.sql_i64(&format!("SELECT count(DISTINCT order_id) FROM order_items WHERE product_id = {p}"));
    assert_eq!(orders, 10);
    assert_eq!(app.sql_i64(&format!("SELECT count(*) FROM orders WHERE cust_id = {cust}")), 10);
    assert_eq!(
        app.sql_i64(&format!(
            "SELECT count(*) FROM payments pm JOIN orders o ON o.id = pm.order_id WHERE o.cust_id = {cust}"
        )),
        10
    );
    assert_eq!(
        app.sql_i64(&format!(
            "SELECT count(*) FROM notifications WHERE cust_id = {cust} AND template = 'order_placed'"
        )),
        10
    );
    assert_eq!(
        app.sql_i64(
            "SELECT -sum(delta) FROM inventory_movements m JOIN inventory i ON i.id = m.inventory_id
              WHERE i.sku = 'LAST-TEN' AND m.reason = 'order_placed'"
        ),
        10
    );
    // And the API agrees.
    let inv = ok_data(&app.get("/api/inventory/LAST-TEN").await, 200);
    assert_eq!(inv["quantity"], 0);
    assert_eq!(inv["open_order_units"], 10);
}

/// Orders that name the same two products in opposite orders, racing with cancellations, must
/// neither deadlock nor lose units: stock rows are always locked in product id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_orders_and_cancellations_do_not_deadlock() {
    let app = Arc::new(TestApp::seeded().await);
    let cust = create_customer(&app, "cross@example.com").await;
    let a = create_product(&app, "CROSS-A", "1.00", 1000).await;
    let b = create_product(&app, "CROSS-B", "2.00", 1000).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = app.clone();
        let items = if i % 2 == 0 {
            json!([{"product_id": a, "quantity": 1}, {"product_id": b, "quantity": 2}])
        } else {
            json!([{"product_id": b, "quantity": 2}, {"product_id": a, "quantity": 1}])
        };
        tasks.push(tokio::spawn(async move {
            let got = app.post("/api/orders", json!({"customer_id": cust, "items": items})).await;
            let id = ok_data(&got, 201)["id"].as_i64().unwrap();
            if i % 4 == 0 {
                let got = app.post(&format!("/api/orders/{id}/cancel"), json!({})).await;
                assert_eq!(ok_data(&got, 200)["status"], "cancelled");
            }
        }));
    }
    for t in tasks {
        t.await.expect("no request failed");
    }
    // 40 orders, 10 cancelled: 30 remain.
    assert_eq!(app.sql_i64("SELECT quantity FROM inventory WHERE sku = 'CROSS-A'"), 1000 - 30);
    assert_eq!(app.sql_i64("SELECT quantity FROM inventory WHERE sku = 'CROSS-B'"), 1000 - 60);
}
