//! Products and categories.

use reqwest::Method;
use serde_json::json;

use crate::common::{assert_error, is_money, ok_data, TestApp};

fn ids(data: &serde_json::Value) -> Vec<i64> {
    data.as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn list_products_paginates_in_id_order() {
    let app = TestApp::seeded().await;
    let got = app.get("/api/products").await;
    let data = ok_data(&got, 200);
    assert_eq!(ids(&data), (1..=20).collect::<Vec<_>>());
    assert_eq!(got.1["page"], json!({"limit": 20, "offset": 0, "total": 40}));
    let p = &data[0];
    assert!(is_money(&p["price"]), "price {} is not a money string", p["price"]);
    assert_eq!(p["currency"], "USD");
    assert!(p["category"]["id"].as_i64().is_some() && p["category"]["slug"].is_string());
    assert!(p["attributes"].is_object() && p["tags"].is_array());
    assert!(p["stock"]["quantity"].as_i64().is_some());

    let got = app.get("/api/products?limit=5&offset=10").await;
    assert_eq!(ids(&ok_data(&got, 200)), vec![11, 12, 13, 14, 15]);
    assert_eq!(got.1["page"]["total"], 40);
    let got = app.get("/api/products?limit=100&offset=38").await;
    assert_eq!(ids(&ok_data(&got, 200)), vec![39, 40]);
}

#[tokio::test]
async fn list_products_filters_by_category_search_and_tag() {
    let app = TestApp::seeded().await;
    // A sub-category: exactly its own products.
    let cat = app.sql_i64("SELECT cat_id FROM products ORDER BY id LIMIT 1");
    let expected = app.sql_i64(&format!("SELECT count(*) FROM products WHERE cat_id = {cat}"));
    let got = app.get(&format!("/api/products?category={cat}&limit=100")).await;
    let data = ok_data(&got, 200);
    assert_eq!(data.as_array().unwrap().len() as i64, expected);
    assert!(data.as_array().unwrap().iter().all(|p| p["category"]["id"] == cat));
    // The same by slug.
    let slug = app.sql(&format!("SELECT slug FROM categories WHERE id = {cat}"));
    let by_slug = ok_data(&app.get(&format!("/api/products?category={slug}&limit=100")).await, 200);
    assert_eq!(by_slug, data);
    // A department includes its sub-categories.
    let dept = app.sql_i64(&format!("SELECT parent_id FROM categories WHERE id = {cat}"));
    let expected = app.sql_i64(&format!(
        "SELECT count(*) FROM products p JOIN categories c ON c.id = p.cat_id
          WHERE c.id = {dept} OR c.parent_id = {dept}"
    ));
    let got = app.get(&format!("/api/products?category={dept}&limit=100")).await;
    assert_eq!(got.1["page"]["total"].as_i64(), Some(expected));
    assert!(expected > 0);
    // Unknown category: an empty page, not an error.
    let got = app.get("/api/products?category=no-such-thing").await;
    assert_eq!(ok_data(&got, 200), json!([]));

    // Search on name and description, case-insensitively.
    let id = crate::common::create_product(&app, "ZZ-1", "3.50", 1).await;
    app.put(&format!("/api/products/{id}"), json!({"description": "Handmade in Zanzibar"})).await;
    let got = app.get("/api/products?q=zanZIBAR").await;
    assert_eq!(ids(&ok_data(&got, 200)), vec![id]);
    let got = app.get("/api/products?q=Product%20ZZ-1").await;
    assert_eq!(ids(&ok_data(&got, 200)), vec![id]);
    // Tag filter.
    app.put(&format!("/api/products/{id}"), json!({"tags": ["one-of-a-kind"]})).await;
    let got = app.get("/api/products?tag=one-of-a-kind").await;
    assert_eq!(ids(&ok_data(&got, 200)), vec![id]);
}

#[tokio::test]
async fn list_products_rejects_bad_query_parameters() {
    let app = TestApp::seeded().await;
    for q in ["limit=0", "limit=101", "limit=abc", "offset=-1", "limit=-5", "offset=x"] {
        assert_error(&app.get(&format!("/api/products?{q}")).await, 400, "invalid_query");
    }
    let long = "a".repeat(201);
    assert_error(&app.get(&format!("/api/products?q={long}")).await, 400, "invalid_query");
}

#[tokio::test]
async fn get_product_by_id() {
    let app = TestApp::seeded().await;
    let data = ok_data(&app.get("/api/products/7").await, 200);
    assert_eq!(data["id"], 7);
    assert_eq!(data["sku"], "SKU-000007");
    let price = app.sql("SELECT price::text FROM products WHERE id = 7");
    assert_eq!(data["price"], price.as_str());
    let qty = app.sql_i64("SELECT quantity FROM inventory WHERE product_id = 7");
    assert_eq!(data["stock"]["quantity"].as_i64(), Some(qty));
    assert!(data["created_at"].as_str().unwrap().ends_with('Z'));

    assert_error(&app.get("/api/products/abc").await, 400, "invalid_path");
    assert_error(&app.get("/api/products/1.5").await, 400, "invalid_path");
    assert_error(&app.get("/api/products/99999999999999999999").await, 400, "invalid_path");
    assert_error(&app.get("/api/products/999999").await, 404, "not_found");
    assert_error(&app.get("/api/products/-1").await, 404, "not_found");
}

#[tokio::test]
async fn create_product_with_stock() {
    let app = TestApp::seeded().await;
    let got = app
        .post(
            "/api/products",
            json!({
                "sku": "NEW-1", "name": "  Brand New  ", "description": "shiny", "category_id": 2,
                "price": "12.5", "attributes": {"color": "red"}, "tags": ["New", "gift"],
                "initial_stock": 7
            }),
        )
        .await;
    let p = ok_data(&got, 201);
    assert_eq!(p["sku"], "NEW-1");
    assert_eq!(p["name"], "Brand New");
    assert_eq!(p["price"], "12.50");
    assert_eq!(p["category"]["id"], 2);
    assert_eq!(p["attributes"], json!({"color": "red"}));
    assert_eq!(p["tags"], json!(["new", "gift"]));
    assert_eq!(p["stock"]["quantity"], 7);
    assert_eq!(p["id"], 41, "ids continue after the seeded rows");
    let again = ok_data(&app.get("/api/products/41").await, 200);
    assert_eq!(again, p);
    assert_eq!(app.sql("SELECT price::text FROM products WHERE sku = 'NEW-1'"), "12.50");
    assert_eq!(app.sql_i64("SELECT sum(delta) FROM inventory_movements m JOIN inventory i ON i.id = m.inventory_id WHERE i.sku = 'NEW-1'"), 7);
    // A number is accepted for the price too.
    let got = app.post("/api/products", json!({"sku": "NEW-2", "name": "n", "category_id": 1, "price": 3})).await;
    let p = ok_data(&got, 201);
    assert_eq!(p["price"], "3.00");
    assert_eq!(p["stock"]["quantity"], 0);
}

#[tokio::test]
async fn create_product_rejects_bad_input() {
    let app = TestApp::seeded().await;
    let base = json!({"sku": "BAD-1", "name": "n", "category_id": 1, "price": "1.00"});
    let with = |k: &str, v: serde_json::Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("price", json!("-1.00")), 422, "invalid_price"),
        (with("price", json!("1.234")), 422, "invalid_price"),
        (with("price", json!("cheap")), 422, "invalid_price"),
        (with("price", json!(true)), 422, "invalid_price"),
        (with("price", json!("100000000.00")), 422, "invalid_price"),
        (with("sku", json!("has space")), 422, "invalid_sku"),
        (with("sku", json!("")), 422, "invalid_sku"),
        (with("name", json!("   ")), 422, "invalid_field"),
        (with("category_id", json!(9999)), 422, "unknown_category"),
        (with("category_id", json!("one")), 422, "invalid_body"),
        (with("initial_stock", json!(-3)), 422, "invalid_quantity"),
        (with("attributes", json!([1, 2])), 422, "invalid_attributes"),
        (with("currency", json!("usd")), 422, "invalid_currency"),
        (json!({"name": "no sku", "category_id": 1, "price": "1.00"}), 422, "invalid_body"),
        (json!([]), 422, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let got = app.post("/api/products", body.clone()).await;
        assert_error(&got, status, code);
    }
    assert_error(&app.post("/api/products", with("sku", json!("SKU-000001"))).await, 409, "duplicate_sku");
    let got = app.send_raw(Method::POST, "/api/products", Some("application/json"), "{\"sku\":").await;
    assert_error(&got, 400, "malformed_json");
    let got = app.send_raw(Method::POST, "/api/products", Some("text/plain"), &base.to_string()).await;
    assert_error(&got, 415, "unsupported_media_type");
    let got = app.send_raw(Method::POST, "/api/products", None, &base.to_string()).await;
    assert_error(&got, 415, "unsupported_media_type");
    assert_eq!(app.sql_i64("SELECT count(*) FROM products"), 40, "nothing was written");
}

#[tokio::test]
async fn update_product() {
    let app = TestApp::seeded().await;
    let before = ok_data(&app.get("/api/products/5").await, 200);
    let got = app
        .put(
            "/api/products/5",
            json!({"name": "Renamed", "price": "42.00", "tags": ["x"], "active": false, "sku": "SKU-000005"}),
        )
        .await;
    let after = ok_data(&got, 200);
    assert_eq!(after["name"], "Renamed");
    assert_eq!(after["price"], "42.00");
    assert_eq!(after["tags"], json!(["x"]));
    assert_eq!(after["active"], false);
    assert_eq!(after["description"], before["description"], "absent fields are kept");
    assert_eq!(after["category"], before["category"]);
    assert_ne!(after["updated_at"], before["updated_at"]);
    assert_eq!(ok_data(&app.get("/api/products/5").await, 200), after);
    let got = app.put("/api/products/5", json!({"category_id": 3})).await;
    assert_eq!(ok_data(&got, 200)["category"]["id"], 3);
}

#[tokio::test]
async fn update_product_rejects_bad_input() {
    let app = TestApp::seeded().await;
    assert_error(&app.put("/api/products/999999", json!({"name": "x"})).await, 404, "not_found");
    assert_error(&app.put("/api/products/abc", json!({"name": "x"})).await, 400, "invalid_path");
    assert_error(&app.put("/api/products/1", json!({})).await, 422, "empty_update");
    assert_error(&app.put("/api/products/1", json!({"sku": "OTHER"})).await, 422, "sku_immutable");
    assert_error(&app.put("/api/products/1", json!({"category_id": 777})).await, 422, "unknown_category");
    assert_error(&app.put("/api/products/1", json!({"price": "-2"})).await, 422, "invalid_price");
    assert_error(&app.put("/api/products/1", json!({"tags": "notalist"})).await, 422, "invalid_body");
    let got = app.send_raw(Method::PUT, "/api/products/1", Some("application/json"), "nope").await;
    assert_error(&got, 400, "malformed_json");
}

#[tokio::test]
async fn list_categories_with_product_counts() {
    let app = TestApp::seeded().await;
    let data = ok_data(&app.get("/api/categories").await, 200);
    let cats = data.as_array().unwrap();
    assert_eq!(cats.len(), 6);
    assert_eq!(ids(&data), (1..=6).collect::<Vec<_>>());
    let sum: i64 = cats.iter().map(|c| c["product_count"].as_i64().unwrap()).sum();
    assert_eq!(sum, 40);
    assert!(cats[0]["parent_id"].is_null());
    assert!(cats.iter().any(|c| c["parent_id"].as_i64().is_some()));
    for c in cats {
        let id = c["id"].as_i64().unwrap();
        let n = app.sql_i64(&format!("SELECT count(*) FROM products WHERE cat_id = {id}"));
        assert_eq!(c["product_count"].as_i64(), Some(n), "category {id}");
    }
    // Query strings are ignored; a wrong method is a JSON 405.
    assert_eq!(ok_data(&app.get("/api/categories?x=1").await, 200), data);
    assert_error(&app.post("/api/categories", json!({})).await, 405, "method_not_allowed");
}
