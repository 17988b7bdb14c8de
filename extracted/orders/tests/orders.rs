//! The orders service over HTTP against its own real PostgreSQL database.

use std::net::SocketAddr;
use std::sync::OnceLock;

use serde_json::{json, Value};
use strangler_support::PgCluster;

static PG: OnceLock<PgCluster> = OnceLock::new();

/// The dry-run secret the test service shares with its (imaginary) gateway.
const SECRET: &str = "orders-test-secret-0123456789";

const FIXTURE: &str = "
INSERT INTO customers (id, email, given_name, family_name) VALUES (1, 'ada@example.com', 'Ada', 'Lovelace'), (2, 'bob@example.com', 'Bob', 'Byte');
INSERT INTO addresses (id, customer_id, kind, line1, city, postal_code, country, is_default) VALUES
  (10, 1, 'shipping', '1 Analytical St', 'London', 'N1', 'GB', true), (11, 2, 'billing', '2 Bit Rd', 'Paris', '75001', 'FR', true);
INSERT INTO products (id, sku, name, price_cents, currency, active) VALUES
  (100, 'HAM-1', 'Claw hammer', 1999, 'USD', true), (101, 'SAW-1', 'Hand saw', 500, 'USD', true),
  (102, 'OLD-1', 'Retired', 100, 'USD', false), (103, 'EUR-1', 'Euro thing', 100, 'EUR', true);
INSERT INTO stock (id, product_id, sku, quantity) VALUES (1000, 100, 'HAM-1', 10), (1001, 101, 'SAW-1', 3), (1002, 103, 'EUR-1', 5);
";

struct Svc {
    addr: SocketAddr,
    db: String,
    http: reqwest::Client,
}

impl Svc {
    async fn start() -> Svc {
        let pg = PG.get_or_init(|| PgCluster::start().expect("postgres"));
        let (db, conn) = pg.create_unique_database("orders").unwrap();
        let service = orders::service().shadow_secret(Some(strangler_kit::SharedSecret::new(SECRET).unwrap()));
        let pool = strangler_kit::pool(&conn, 16).unwrap();
        service.migrate(&pool).await.unwrap();
        pg.psql(&db, FIXTURE).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(service.serve(listener, pool, std::future::pending()));
        Svc { addr, db, http: reqwest::Client::new() }
    }

    fn sql(&self, q: &str) -> String {
        PG.get().unwrap().psql(&self.db, q).unwrap()
    }

    async fn post(&self, path: &str, body: Value, shadow: bool) -> (u16, Value) {
        let mut r = self.http.post(format!("http://{}{path}", self.addr)).json(&body);
        if shadow {
            r = r.header(strangler_kit::SHADOW_HEADER, format!("1; secret={SECRET}"));
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("http://{}{path}", self.addr)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

fn order(items: Value) -> Value {
    json!({"customer_id": 1, "items": items, "payment": {"method": "card"}})
}

#[tokio::test]
async fn placing_an_order_reserves_stock_pays_and_notifies_in_one_go() {
    let s = Svc::start().await;
    let (status, v) = s.post("/api/orders", order(json!([{"product_id": 100, "quantity": 2}, {"product_id": 101, "quantity": 1}, {"product_id": 100, "quantity": 1}])), false).await;
    assert_eq!(status, 201, "{v}");
    let o = &v["data"];
    assert!(o["id"].as_i64().unwrap() >= 1_000_000_000, "service ids never collide with legacy's");
    assert_eq!(o["status"], "paid");
    assert_eq!(o["total"], "64.97");
    assert_eq!(o["customer"], json!({"id": 1, "email": "ada@example.com", "name": "Ada Lovelace"}));
    assert_eq!(o["shipping_address"]["id"], 10);
    let items: Vec<(i64, i64, &str)> = o["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (i["product_id"].as_i64().unwrap(), i["quantity"].as_i64().unwrap(), i["line_total"].as_str().unwrap())
        })
        .collect();
    assert_eq!(items, [(100, 3, "59.97"), (101, 1, "5.00")], "repeated products merged, ordered by product");
    assert_eq!(o["payments"][0]["amount"], "64.97");
    assert_eq!(o["payments"][0]["status"], "captured");
    assert_eq!(s.sql("SELECT quantity FROM stock WHERE product_id = 100"), "7");
    assert_eq!(s.sql("SELECT count(*) FROM stock_movements"), "2");
    assert_eq!(s.sql("SELECT payload->>'total' FROM notifications"), "64.97");
    let (status, again) = s.get(&format!("/api/orders/{}", o["id"])).await;
    assert_eq!(status, 200);
    assert_eq!(again["data"]["items"], o["items"]);
}

#[tokio::test]
async fn fifty_concurrent_orders_for_the_last_ten_items_never_oversell() {
    let s = std::sync::Arc::new(Svc::start().await);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                s.post("/api/orders", order(json!([{"product_id": 100, "quantity": 1}])), false).await.0
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 201).count(), 10, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 409).count(), 40, "{codes:?}");
    assert_eq!(s.sql("SELECT quantity FROM stock WHERE product_id = 100"), "0");
    assert_eq!(s.sql("SELECT count(*) FROM orders"), "10");
    assert_eq!(s.sql("SELECT count(*) FROM payments"), "10");
}

#[tokio::test]
async fn an_order_failing_on_its_second_line_leaves_no_trace() {
    let s = Svc::start().await;
    let (status, v) = s
        .post(
            "/api/orders",
            order(json!([{"product_id": 100, "quantity": 1}, {"product_id": 101, "quantity": 4}])),
            false,
        )
        .await;
    assert_eq!((status, v["error"]["code"].as_str().unwrap()), (409, "out_of_stock"));
    assert_eq!(
        s.sql("SELECT quantity FROM stock WHERE product_id = 100"),
        "10",
        "first line's reservation rolled back"
    );
    assert_eq!(s.sql("SELECT count(*) FROM orders"), "0");
}

#[tokio::test]
async fn cancelling_restocks_refunds_and_is_not_repeatable() {
    let s = Svc::start().await;
    let (_, v) = s.post("/api/orders", order(json!([{"product_id": 101, "quantity": 3}])), false).await;
    let id = v["data"]["id"].as_i64().unwrap();
    assert_eq!(s.sql("SELECT quantity FROM stock WHERE product_id = 101"), "0");
    let (status, v) = s.post(&format!("/api/orders/{id}/cancel"), json!({}), false).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["status"], "cancelled");
    assert_eq!(v["data"]["payments"][0]["status"], "refunded");
    assert!(v["data"]["cancelled_at"].is_string());
    assert_eq!(s.sql("SELECT quantity FROM stock WHERE product_id = 101"), "3");
    let (status, v) = s.post(&format!("/api/orders/{id}/cancel"), json!({}), false).await;
    assert_eq!((status, v["error"]["code"].as_str().unwrap()), (409, "already_cancelled"));
    let (_, list) = s.get("/api/customers/1/orders").await;
    assert_eq!(list["data"][0]["status"], "cancelled");
    assert_eq!(list["data"][0]["unit_count"], 3);
    assert_eq!(list["page"]["total"], 1);
}

#[tokio::test]
async fn a_shadow_order_answers_for_real_and_writes_nothing() {
    let s = Svc::start().await;
    let (status, v) = s.post("/api/orders", order(json!([{"product_id": 100, "quantity": 2}])), true).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["data"]["total"], "39.98");
    for table in ["orders", "order_lines", "payments", "stock_movements", "notifications"] {
        assert_eq!(s.sql(&format!("SELECT count(*) FROM {table}")), "0", "{table}");
    }
    assert_eq!(s.sql("SELECT quantity FROM stock WHERE product_id = 100"), "10");
}

#[tokio::test]
async fn bad_input_gets_the_legacy_error_codes() {
    let s = Svc::start().await;
    let cases = [
        (json!({"customer_id": 9, "items": [{"product_id": 100, "quantity": 1}]}), 422, "unknown_customer"),
        (json!({"customer_id": 1, "items": []}), 422, "invalid_items"),
        (json!({"customer_id": 1, "items": [{"product_id": 100, "quantity": 0}]}), 422, "invalid_quantity"),
        (json!({"customer_id": 1, "items": [{"product_id": 100, "quantity": -1}]}), 422, "invalid_quantity"),
        (json!({"customer_id": 1, "items": [{"product_id": 999, "quantity": 1}]}), 422, "unknown_product"),
        (json!({"customer_id": 1, "items": [{"product_id": 102, "quantity": 1}]}), 422, "product_inactive"),
        (
            json!({"customer_id": 1, "items": [{"product_id": 100, "quantity": 1}, {"product_id": 103, "quantity": 1}]}),
            422,
            "mixed_currency",
        ),
        (
            json!({"customer_id": 1, "items": [{"product_id": 100, "quantity": 1}], "payment": {"method": "cash"}}),
            422,
            "invalid_payment_method",
        ),
        (
            json!({"customer_id": 1, "items": [{"product_id": 100, "quantity": 1}], "shipping_address_id": 11}),
            422,
            "unknown_address",
        ),
        (json!({"customer_id": "x"}), 422, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let (st, v) = s.post("/api/orders", body.clone(), false).await;
        assert_eq!((st, v["error"]["code"].as_str().unwrap_or("")), (status, code), "{body}: {v}");
    }
    let r = s
        .http
        .post(format!("http://{}/api/orders", s.addr))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for (path, status, code) in [
        ("/api/orders/5", 404, "not_found"),
        ("/api/orders/x", 400, "invalid_path"),
        ("/api/customers/99/orders", 404, "not_found"),
        ("/api/customers/1/orders?limit=500", 400, "invalid_query"),
    ] {
        let (st, v) = s.get(path).await;
        assert_eq!((st, v["error"]["code"].as_str().unwrap()), (status, code), "{path}");
    }
    assert_eq!(s.sql("SELECT count(*) FROM orders"), "0");
    assert_eq!(s.sql("SELECT quantity FROM stock WHERE product_id = 100"), "10");
}
