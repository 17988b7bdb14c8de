//! Customers, their orders and their notifications.

use reqwest::Method;
use serde_json::json;

use crate::common::{assert_error, create_customer, is_money, ok_data, TestApp};

#[tokio::test]
async fn get_customer_with_addresses_and_stats() {
    let app = TestApp::seeded().await;
    let c = ok_data(&app.get("/api/customers/3").await, 200);
    assert_eq!(c["id"], 3);
    assert!(c["email"].as_str().unwrap().ends_with(".3@example.com"));
    let addresses = c["addresses"].as_array().unwrap();
    let n_addr = app.sql_i64("SELECT count(*) FROM addresses WHERE cust_id = 3");
    assert_eq!(addresses.len() as i64, n_addr);
    assert!(addresses.iter().any(|a| a["kind"] == "shipping"));
    let orders = app.sql_i64("SELECT count(*) FROM orders WHERE cust_id = 3");
    assert_eq!(c["stats"]["order_count"].as_i64(), Some(orders));
    assert!(is_money(&c["stats"]["lifetime_value"]));
    let ltv = app.sql(
        "SELECT COALESCE(sum(total_amt), 0)::numeric(12,2)::text FROM orders
          WHERE cust_id = 3 AND status_cd IN ('paid', 'shipped')",
    );
    assert_eq!(c["stats"]["lifetime_value"], ltv.as_str());

    assert_error(&app.get("/api/customers/abc").await, 400, "invalid_path");
    assert_error(&app.get("/api/customers/424242").await, 404, "not_found");
}

#[tokio::test]
async fn create_customer_queues_a_welcome() {
    let app = TestApp::seeded().await;
    let got = app
        .post(
            "/api/customers",
            json!({
                "email": "  New.Person@Example.COM ", "first_name": "New", "last_name": "Person",
                "phone": "+1-555-0100", "loyalty_tier": "gold",
                "address": {"line1": "9 Elm St", "city": "Lyon", "postal_code": "69001", "country": "fr"}
            }),
        )
        .await;
    let c = ok_data(&got, 201);
    assert_eq!(c["email"], "new.person@example.com");
    assert_eq!(c["loyalty_tier"], "gold");
    assert_eq!(c["addresses"][0]["country"], "FR");
    assert_eq!(c["addresses"][0]["is_default"], true);
    assert_eq!(c["stats"], json!({"order_count": 0, "lifetime_value": "0.00", "last_order_at": null}));
    let id = c["id"].as_i64().unwrap();
    assert_eq!(id, 11);
    assert_eq!(ok_data(&app.get(&format!("/api/customers/{id}")).await, 200), c);
    let notes = ok_data(&app.get(&format!("/api/notifications?customer={id}")).await, 200);
    assert_eq!(notes.as_array().unwrap().len(), 1);
    assert_eq!(notes[0]["template"], "welcome");
    assert_eq!(notes[0]["status"], "queued");
    // Minimal body: no address.
    let c = ok_data(
        &app.post("/api/customers", json!({"email": "a@b.io", "first_name": "A", "last_name": "B"})).await,
        201,
    );
    assert_eq!(c["addresses"], json!([]));
}

#[tokio::test]
async fn create_customer_rejects_bad_input() {
    let app = TestApp::seeded().await;
    let ok = json!({"email": "x@y.com", "first_name": "X", "last_name": "Y"});
    let with = |k: &str, v: serde_json::Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    for (body, status, code) in [
        (with("email", json!("not-an-email")), 422, "invalid_email"),
        (with("email", json!("a@b")), 422, "invalid_email"),
        (with("email", json!("a b@c.com")), 422, "invalid_email"),
        (with("first_name", json!("")), 422, "invalid_field"),
        (with("loyalty_tier", json!("platinum")), 422, "invalid_field"),
        (
            with("address", json!({"line1": "x", "city": "y", "postal_code": "1", "country": "USA"})),
            422,
            "invalid_field",
        ),
        (with("address", json!({"line1": "x"})), 422, "invalid_body"),
        (json!({"email": "x@y.com", "first_name": "X"}), 422, "invalid_body"),
        (with("email", json!(5)), 422, "invalid_body"),
    ] {
        assert_error(&app.post("/api/customers", body).await, status, code);
    }
    let existing = app.sql("SELECT email FROM customers WHERE id = 1");
    assert_error(
        &app.post("/api/customers", with("email", json!(existing.to_uppercase()))).await,
        409,
        "duplicate_email",
    );
    let got = app.send_raw(Method::POST, "/api/customers", Some("application/json"), "{,}").await;
    assert_error(&got, 400, "malformed_json");
    assert_eq!(app.sql_i64("SELECT count(*) FROM customers"), 10);
}

#[tokio::test]
async fn customer_orders_are_listed_oldest_first() {
    let app = TestApp::seeded().await;
    let cust = app.sql_i64("SELECT cust_id FROM orders GROUP BY cust_id ORDER BY count(*) DESC, cust_id LIMIT 1");
    let n = app.sql_i64(&format!("SELECT count(*) FROM orders WHERE cust_id = {cust}"));
    assert!(n >= 3, "the seed gives the busiest customer several orders");
    let got = app.get(&format!("/api/customers/{cust}/orders")).await;
    let data = ok_data(&got, 200);
    assert_eq!(got.1["page"]["total"].as_i64(), Some(n));
    let list = data.as_array().unwrap();
    assert_eq!(list.len() as i64, n);
    let ids: Vec<i64> = list.iter().map(|o| o["id"].as_i64().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
    let first = &list[0];
    let items = app.sql_i64(&format!("SELECT count(*) FROM order_items WHERE order_id = {}", first["id"]));
    assert_eq!(first["item_count"].as_i64(), Some(items));
    assert!(is_money(&first["total"]));

    let got = app.get(&format!("/api/customers/{cust}/orders?limit=2&offset=1")).await;
    let page: Vec<i64> = ok_data(&got, 200).as_array().unwrap().iter().map(|o| o["id"].as_i64().unwrap()).collect();
    assert_eq!(page, ids[1..3].to_vec());

    assert_error(&app.get("/api/customers/abc/orders").await, 400, "invalid_path");
    assert_error(&app.get("/api/customers/99999/orders").await, 404, "not_found");
    assert_error(&app.get(&format!("/api/customers/{cust}/orders?limit=1000")).await, 400, "invalid_query");
    // A customer without orders: an empty page.
    let fresh = create_customer(&app, "noorders@example.com").await;
    let got = app.get(&format!("/api/customers/{fresh}/orders")).await;
    assert_eq!(ok_data(&got, 200), json!([]));
    assert_eq!(got.1["page"]["total"], 0);
}

#[tokio::test]
async fn notifications_for_a_customer() {
    let app = TestApp::seeded().await;
    let n = app.sql_i64("SELECT count(*) FROM notifications WHERE cust_id = 2");
    assert!(n >= 1, "every seeded customer has a welcome notification");
    let got = app.get("/api/notifications?customer=2&limit=100").await;
    let list = ok_data(&got, 200);
    assert_eq!(list.as_array().unwrap().len() as i64, n);
    assert_eq!(got.1["page"]["total"].as_i64(), Some(n));
    assert!(list.as_array().unwrap().iter().all(|x| x["customer_id"] == 2));
    assert_eq!(list[0]["template"], "welcome");

    assert_error(&app.get("/api/notifications").await, 400, "invalid_query");
    assert_error(&app.get("/api/notifications?customer=abc").await, 400, "invalid_query");
    assert_error(&app.get("/api/notifications?customer=2&limit=0").await, 400, "invalid_query");
    assert_error(&app.get("/api/notifications?customer=5555").await, 404, "not_found");
}
