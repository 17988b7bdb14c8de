//! Inventory by SKU.

use reqwest::Method;
use serde_json::json;

use crate::common::{assert_error, create_product, ok_data, TestApp};

#[tokio::test]
async fn get_inventory_by_sku() {
    let app = TestApp::seeded().await;
    let inv = ok_data(&app.get("/api/inventory/SKU-000004").await, 200);
    assert_eq!(inv["sku"], "SKU-000004");
    assert_eq!(inv["product_id"], 4);
    let qty = app.sql_i64("SELECT quantity FROM inventory WHERE sku = 'SKU-000004'");
    assert_eq!(inv["quantity"].as_i64(), Some(qty));
    assert_eq!(inv["in_stock"], qty > 0);
    let open = app.sql_i64(
        "SELECT COALESCE(sum(qty), 0) FROM order_items oi JOIN orders o ON o.id = oi.order_id
          WHERE oi.product_id = 4 AND o.status_cd IN ('pending_payment', 'paid')",
    );
    assert_eq!(inv["open_order_units"].as_i64(), Some(open));
    assert_eq!(inv["product_name"], app.sql("SELECT name FROM products WHERE id = 4").as_str());
    assert_error(&app.get("/api/inventory/NOPE-1").await, 404, "not_found");
    assert_error(&app.get(&format!("/api/inventory/{}", "X".repeat(65))).await, 400, "invalid_path");
}

#[tokio::test]
async fn adjust_inventory() {
    let app = TestApp::seeded().await;
    create_product(&app, "ADJ-1", "1.00", 5).await;
    let inv = ok_data(&app.post("/api/inventory/ADJ-1/adjust", json!({"delta": 7, "reason": "restock"})).await, 200);
    assert_eq!(inv["quantity"], 12);
    let inv = ok_data(&app.post("/api/inventory/ADJ-1/adjust", json!({"delta": -12})).await, 200);
    assert_eq!(inv["quantity"], 0);
    assert_eq!(inv["in_stock"], false);
    assert_eq!(
        app.sql("SELECT string_agg(delta || ':' || reason, ',' ORDER BY m.id) FROM inventory_movements m JOIN inventory i ON i.id = m.inventory_id WHERE i.sku = 'ADJ-1'"),
        "5:initial_stock,7:restock,-12:manual_adjustment"
    );
    assert_error(&app.post("/api/inventory/ADJ-1/adjust", json!({"delta": -1})).await, 409, "insufficient_stock");
    assert_eq!(app.sql_i64("SELECT quantity FROM inventory WHERE sku = 'ADJ-1'"), 0, "never negative");
    for (body, status, code) in [
        (json!({"delta": 0}), 422, "invalid_delta"),
        (json!({"delta": 5_000_000}), 422, "invalid_delta"),
        (json!({"delta": "many"}), 422, "invalid_body"),
        (json!({"delta": 1.5}), 422, "invalid_body"),
        (json!({}), 422, "invalid_body"),
        (json!({"delta": 1, "reason": ""}), 422, "invalid_field"),
    ] {
        assert_error(&app.post("/api/inventory/ADJ-1/adjust", body).await, status, code);
    }
    assert_error(&app.post("/api/inventory/NOPE/adjust", json!({"delta": 1})).await, 404, "not_found");
    let got = app.send_raw(Method::POST, "/api/inventory/ADJ-1/adjust", Some("application/json"), "{delta}").await;
    assert_error(&got, 400, "malformed_json");
    assert_error(&app.get("/api/inventory/ADJ-1/adjust").await, 405, "method_not_allowed");
}
