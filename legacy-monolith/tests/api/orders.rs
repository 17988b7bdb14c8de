//! Order placement, lookup and cancellation.

use reqwest::Method;
use serde_json::json;

use crate::common::{assert_error, create_customer, create_product, is_money, ok_data, TestApp};

#[tokio::test]
async fn place_order_reserves_stock_records_payment_and_notifies() {
    let app = TestApp::seeded().await;
    let cust = create_customer(&app, "buyer@example.com").await;
    let a = create_product(&app, "ORD-A", "10.25", 5).await;
    let b = create_product(&app, "ORD-B", "1.10", 20).await;
    let got = app
        .post(
            "/api/orders",
            json!({
                "customer_id": cust,
                // Repeated lines of one product are merged.
                "items": [{"product_id": b, "quantity": 2}, {"product_id": a, "quantity": 2}, {"product_id": b, "quantity": 1}],
                "payment": {"method": "card"},
                "notes": "leave at the door"
            }),
        )
        .await;
    let o = ok_data(&got, 201);
    assert_eq!(o["status"], "paid");
    assert_eq!(o["customer"]["id"], cust);
    assert_eq!(o["total"], "23.80");
    assert_eq!(o["notes"], "leave at the door");
    assert_eq!(o["shipping_address"]["line1"], "1 Test St", "the default shipping address is used");
    let items = o["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["product_id"], a);
    assert_eq!(
        (items[0]["quantity"].clone(), items[0]["unit_price"].clone(), items[0]["line_total"].clone()),
        (json!(2), json!("10.25"), json!("20.50"))
    );
    assert_eq!((items[1]["quantity"].clone(), items[1]["line_total"].clone()), (json!(3), json!("3.30")));
    assert_eq!(o["payments"].as_array().unwrap().len(), 1);
    assert_eq!(o["payments"][0]["status"], "captured");
    assert_eq!(o["payments"][0]["amount"], "23.80");
    assert_eq!(o["payments"][0]["method"], "card");

    let id = o["id"].as_i64().unwrap();
    assert_eq!(ok_data(&app.get(&format!("/api/orders/{id}")).await, 200), o);
    assert_eq!(app.sql_i64("SELECT quantity FROM inventory WHERE sku = 'ORD-A'"), 3);
    assert_eq!(app.sql_i64("SELECT quantity FROM inventory WHERE sku = 'ORD-B'"), 17);
    assert_eq!(app.sql_i64(&format!("SELECT count(*) FROM inventory_movements WHERE order_id = {id}")), 2);
    let notes = ok_data(&app.get(&format!("/api/notifications?customer={cust}")).await, 200);
    let placed: Vec<_> = notes.as_array().unwrap().iter().filter(|n| n["template"] == "order_placed").collect();
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0]["order_id"], id);
    assert_eq!(placed[0]["payload"]["total"], "23.80");
    let summary = ok_data(&app.get(&format!("/api/customers/{cust}/orders")).await, 200);
    assert_eq!(summary[0]["id"], id);
    assert_eq!(summary[0]["unit_count"], 5);
    let inv = ok_data(&app.get("/api/inventory/ORD-A").await, 200);
    assert_eq!(inv["open_order_units"], 2);
}

#[tokio::test]
async fn order_without_payment_is_pending_until_paid() {
    let app = TestApp::seeded().await;
    let cust = create_customer(&app, "later@example.com").await;
    let p = create_product(&app, "PAY-LATER", "5.00", 3).await;
    let o = ok_data(
        &app.post("/api/orders", json!({"customer_id": cust, "items": [{"product_id": p, "quantity": 3}]})).await,
        201,
    );
    assert_eq!(o["status"], "pending_payment");
    assert_eq!(o["payments"], json!([]));
    let id = o["id"].as_i64().unwrap();
    let pay =
        ok_data(&app.post("/api/payments", json!({"order_id": id, "method": "paypal", "amount": "15.00"})).await, 201);
    assert_eq!(pay["order_id"], id);
    assert_eq!(pay["amount"], "15.00");
    assert_eq!(pay["status"], "captured");
    assert_eq!(pay["order_status"], "paid");
    assert!(pay["provider_ref"].as_str().unwrap().starts_with("psp_"));
    let pid = pay["id"].as_i64().unwrap();
    assert_eq!(ok_data(&app.get(&format!("/api/payments/{pid}")).await, 200), pay);
    assert_eq!(ok_data(&app.get(&format!("/api/orders/{id}")).await, 200)["status"], "paid");
    assert_error(&app.post("/api/payments", json!({"order_id": id, "method": "card"})).await, 409, "already_paid");
}

#[tokio::test]
async fn place_order_rejects_bad_input_without_writing() {
    let app = TestApp::seeded().await;
    let cust = create_customer(&app, "picky@example.com").await;
    let p = create_product(&app, "ORD-BAD", "2.00", 2).await;
    let orders_before = app.sql_i64("SELECT count(*) FROM orders");
    let item = |pid: i64, q: i64| json!([{"product_id": pid, "quantity": q}]);
    for (body, status, code) in [
        (json!({"customer_id": cust, "items": []}), 422, "invalid_items"),
        (json!({"customer_id": cust, "items": item(p, -1)}), 422, "invalid_quantity"),
        (json!({"customer_id": cust, "items": item(p, 0)}), 422, "invalid_quantity"),
        (json!({"customer_id": cust, "items": item(p, 1001)}), 422, "invalid_quantity"),
        (
            json!({"customer_id": cust, "items": [{"product_id": p, "quantity": 600}, {"product_id": p, "quantity": 600}]}),
            422,
            "invalid_quantity",
        ),
        (json!({"customer_id": cust, "items": item(987654, 1)}), 422, "unknown_product"),
        (json!({"customer_id": 987654, "items": item(p, 1)}), 422, "unknown_customer"),
        (
            json!({"customer_id": cust, "items": item(p, 1), "payment": {"method": "cash"}}),
            422,
            "invalid_payment_method",
        ),
        (json!({"customer_id": cust, "items": item(p, 1), "shipping_address_id": 1}), 422, "unknown_address"),
        (json!({"items": item(p, 1)}), 422, "invalid_body"),
        (json!({"customer_id": cust, "items": [{"product_id": p, "quantity": 1.5}]}), 422, "invalid_body"),
        (json!({"customer_id": cust, "items": [{"product_id": p}]}), 422, "invalid_body"),
        (json!({"customer_id": cust, "items": item(p, 3)}), 409, "out_of_stock"),
    ] {
        assert_error(&app.post("/api/orders", body).await, status, code);
    }
    // An order whose second line is short rolls back the first line's reservation.
    let q = create_product(&app, "ORD-SHORT", "2.00", 0).await;
    let got = app
        .post(
            "/api/orders",
            json!({"customer_id": cust, "items": [{"product_id": p, "quantity": 1}, {"product_id": q, "quantity": 1}]}),
        )
        .await;
    assert_error(&got, 409, "out_of_stock");
    assert_eq!(app.sql_i64("SELECT quantity FROM inventory WHERE sku = 'ORD-BAD'"), 2);
    // An inactive product cannot be ordered.
    app.put(&format!("/api/products/{p}"), json!({"active": false})).await;
    assert_error(
        &app.post("/api/orders", json!({"customer_id": cust, "items": item(p, 1)})).await,
        422,
        "product_inactive",
    );

    let got = app.send_raw(Method::POST, "/api/orders", Some("application/json"), "{\"customer_id\": 1,").await;
    assert_error(&got, 400, "malformed_json");
    assert_eq!(app.sql_i64("SELECT count(*) FROM orders"), orders_before, "no order was written");
    assert_eq!(app.sql_i64("SELECT count(*) FROM inventory_movements WHERE order_id IS NOT NULL"), 0);
}

#[tokio::test]
async fn get_order_joins_items_payments_and_customer() {
    let app = TestApp::seeded().await;
    let id = app.sql_i64("SELECT id FROM orders WHERE status_cd = 'shipped' ORDER BY id LIMIT 1");
    let o = ok_data(&app.get(&format!("/api/orders/{id}")).await, 200);
    assert_eq!(o["status"], "shipped");
    let n_items = app.sql_i64(&format!("SELECT count(*) FROM order_items WHERE order_id = {id}"));
    assert_eq!(o["items"].as_array().unwrap().len() as i64, n_items);
    assert!(o["items"][0]["name"].as_str().is_some_and(|n| !n.is_empty()));
    assert_eq!(o["payments"][0]["status"], "captured");
    assert!(is_money(&o["total"]));
    let total = app.sql(&format!("SELECT total_amt::text FROM orders WHERE id = {id}"));
    assert_eq!(o["total"], total.as_str());
    assert!(o["customer"]["email"].as_str().unwrap().contains('@'));

    assert_error(&app.get("/api/orders/xyz").await, 400, "invalid_path");
    assert_error(&app.get("/api/orders/0").await, 404, "not_found");
    assert_error(&app.get("/api/orders/31").await, 404, "not_found");
}

#[tokio::test]
async fn cancel_restores_stock_refunds_and_notifies_once() {
    let app = TestApp::seeded().await;
    let cust = create_customer(&app, "regret@example.com").await;
    let p = create_product(&app, "CANCEL-ME", "4.00", 10).await;
    let o = ok_data(
        &app.post("/api/orders", json!({"customer_id": cust, "items": [{"product_id": p, "quantity": 4}], "payment": {"method": "gift_card"}}))
            .await,
        201,
    );
    let id = o["id"].as_i64().unwrap();
    assert_eq!(app.sql_i64("SELECT quantity FROM inventory WHERE sku = 'CANCEL-ME'"), 6);
    let c = ok_data(&app.post(&format!("/api/orders/{id}/cancel"), json!({})).await, 200);
    assert_eq!(c["status"], "cancelled");
    assert!(c["cancelled_at"].is_string());
    assert_eq!(c["payments"][0]["status"], "refunded");
    assert_eq!(app.sql_i64("SELECT quantity FROM inventory WHERE sku = 'CANCEL-ME'"), 10);
    assert_eq!(app.sql_i64(&format!("SELECT sum(delta) FROM inventory_movements WHERE order_id = {id}")), 0);
    let templates =
        app.sql(&format!("SELECT string_agg(template, ',' ORDER BY id) FROM notifications WHERE order_id = {id}"));
    assert_eq!(templates, "order_placed,order_cancelled");

    // Twice: 409 and nothing changes.
    assert_error(&app.post(&format!("/api/orders/{id}/cancel"), json!({})).await, 409, "already_cancelled");
    assert_eq!(app.sql_i64("SELECT quantity FROM inventory WHERE sku = 'CANCEL-ME'"), 10);
    assert_eq!(app.sql_i64(&format!("SELECT count(*) FROM notifications WHERE order_id = {id}")), 2);
    // A cancelled order cannot be paid.
    assert_error(&app.post("/api/payments", json!({"order_id": id, "method": "card"})).await, 409, "order_cancelled");

    let shipped = app.sql_i64("SELECT id FROM orders WHERE status_cd = 'shipped' ORDER BY id LIMIT 1");
    assert_error(&app.post(&format!("/api/orders/{shipped}/cancel"), json!({})).await, 409, "already_shipped");
    assert_error(&app.post("/api/orders/123456/cancel", json!({})).await, 404, "not_found");
    assert_error(&app.post("/api/orders/abc/cancel", json!({})).await, 400, "invalid_path");
    // No body at all is fine too (the endpoint takes none).
    let o2 = ok_data(
        &app.post("/api/orders", json!({"customer_id": cust, "items": [{"product_id": p, "quantity": 1}]})).await,
        201,
    );
    let got = app.send_raw(Method::POST, &format!("/api/orders/{}/cancel", o2["id"]), None, "").await;
    assert_eq!(ok_data(&got, 200)["status"], "cancelled");
}
