//! Payments.

use reqwest::Method;
use serde_json::json;

use crate::common::{assert_error, create_customer, create_product, ok_data, TestApp};

#[tokio::test]
async fn get_payment() {
    let app = TestApp::seeded().await;
    let (id, order) = {
        let row = app.sql("SELECT id || ',' || order_id FROM payments ORDER BY id LIMIT 1");
        let (a, b) = row.split_once(',').unwrap();
        (a.parse::<i64>().unwrap(), b.parse::<i64>().unwrap())
    };
    let p = ok_data(&app.get(&format!("/api/payments/{id}")).await, 200);
    assert_eq!(p["id"], id);
    assert_eq!(p["order_id"], order);
    let amount = app.sql(&format!("SELECT amount::text FROM payments WHERE id = {id}"));
    assert_eq!(p["amount"], amount.as_str());
    assert!(["captured", "refunded"].contains(&p["status"].as_str().unwrap()));
    assert_error(&app.get("/api/payments/nope").await, 400, "invalid_path");
    assert_error(&app.get("/api/payments/777777").await, 404, "not_found");
}

#[tokio::test]
async fn create_payment_rejects_bad_input() {
    let app = TestApp::seeded().await;
    let cust = create_customer(&app, "payer@example.com").await;
    let p = create_product(&app, "PAY-1", "9.99", 5).await;
    let o = ok_data(
        &app.post("/api/orders", json!({"customer_id": cust, "items": [{"product_id": p, "quantity": 1}]})).await,
        201,
    );
    let id = o["id"].as_i64().unwrap();
    for (body, status, code) in [
        (json!({"order_id": 999999, "method": "card"}), 422, "unknown_order"),
        (json!({"order_id": id, "method": "iou"}), 422, "invalid_payment_method"),
        (json!({"order_id": id, "method": "card", "amount": "10.00"}), 422, "amount_mismatch"),
        (json!({"order_id": id, "method": "card", "amount": "-9.99"}), 422, "invalid_amount"),
        (json!({"order_id": "one", "method": "card"}), 422, "invalid_body"),
        (json!({"method": "card"}), 422, "invalid_body"),
    ] {
        assert_error(&app.post("/api/payments", body).await, status, code);
    }
    let got = app.send_raw(Method::POST, "/api/payments", Some("application/json"), "]").await;
    assert_error(&got, 400, "malformed_json");
    assert_eq!(app.sql_i64(&format!("SELECT count(*) FROM payments WHERE order_id = {id}")), 0);
    // The amount is optional and a number works too.
    let pay = ok_data(&app.post("/api/payments", json!({"order_id": id, "method": "card", "amount": 9.99})).await, 201);
    assert_eq!(pay["amount"], "9.99");
}
