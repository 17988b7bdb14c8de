//! The catalog service over HTTP against its own real PostgreSQL database.

use std::net::SocketAddr;
use std::sync::OnceLock;

use serde_json::Value;
use strangler_support::PgCluster;

static PG: OnceLock<PgCluster> = OnceLock::new();

const FIXTURE: &str = "
INSERT INTO categories (id, parent_id, title, slug, position, created_at) VALUES
  (1, NULL, 'Tools', 'tools', 1, '2024-01-01T00:00:00Z'),
  (2, 1, 'Hammers', 'hammers', 2, '2024-01-01T00:00:00Z'),
  (3, NULL, 'Garden', 'garden', 3, '2024-01-01T00:00:00Z');
INSERT INTO products (id, sku, title, description, category_id, attributes, tags, is_active, created_at, updated_at) VALUES
  (10, 'HAM-1', 'Claw hammer', 'Steel claw hammer', 2, '{\"weight_g\": 450}', '{steel,sale}', true, '2024-02-01T10:00:00.123456Z', '2024-02-02T10:00:00Z'),
  (11, 'SAW-1', 'Hand saw', 'Fine teeth, ünïcode ok', 1, '{}', '{}', true, '2024-02-01T10:00:00Z', '2024-02-01T10:00:00Z'),
  (12, 'HOSE-1', 'Garden hose', '25 m', 3, '{}', '{sale}', false, '2024-02-01T10:00:00Z', '2024-02-01T10:00:00Z');
INSERT INTO product_prices (product_id, price_cents, currency) VALUES (10, 1999, 'USD'), (11, 500, 'USD'), (12, 12345, 'EUR');
INSERT INTO stock_levels (id, product_id, sku, on_hand, warehouse, updated_at) VALUES
  (100, 10, 'HAM-1', 7, 'MAIN', '2024-03-01T00:00:00Z'), (101, 11, 'SAW-1', 0, 'EAST', '2024-03-01T00:00:00Z');
INSERT INTO order_states (id, status) VALUES (1, 'paid'), (2, 'cancelled'), (3, 'pending_payment'), (4, 'shipped');
INSERT INTO open_order_lines (id, order_id, product_id, qty) VALUES (1, 1, 10, 2), (2, 2, 10, 5), (3, 3, 10, 1), (4, 4, 10, 9);
";

async fn start() -> SocketAddr {
    let pg = PG.get_or_init(|| PgCluster::start().expect("postgres"));
    let (db, conn) = pg.create_unique_database("catalog").unwrap();
    let service = catalog::service();
    let pool = strangler_kit::pool(&conn, 4).unwrap();
    service.migrate(&pool).await.unwrap();
    pg.psql(&db, FIXTURE).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(service.serve(listener, pool, std::future::pending()));
    addr
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn a_product_has_the_legacy_shape() {
    let addr = start().await;
    let (status, v) = get(addr, "/api/products/10").await;
    assert_eq!(status, 200, "{v}");
    let p = &v["data"];
    assert_eq!(p["name"], "Claw hammer");
    assert_eq!(p["description"], "Steel claw hammer");
    assert_eq!(p["price"], "19.99");
    assert_eq!(p["currency"], "USD");
    assert_eq!(p["category"], serde_json::json!({"id": 2, "name": "Hammers", "slug": "hammers"}));
    assert_eq!(p["attributes"]["weight_g"], 450);
    assert_eq!(p["tags"], serde_json::json!(["steel", "sale"]));
    assert_eq!(p["active"], true);
    assert_eq!(p["stock"], serde_json::json!({"quantity": 7, "warehouse": "MAIN", "in_stock": true}));
    assert_eq!(p["created_at"], "2024-02-01T10:00:00.123456Z");
    assert!(v["request_id"].is_string() && v["generated_at"].is_string());
    // No stock row → stock is null.
    let (_, v) = get(addr, "/api/products/12").await;
    assert!(v["data"]["stock"].is_null());
    assert_eq!(v["data"]["price"], "123.45");
}

#[tokio::test]
async fn listing_filters_and_pages_like_legacy() {
    let addr = start().await;
    let ids = |v: &Value| v["data"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect::<Vec<_>>();
    let (_, v) = get(addr, "/api/products").await;
    assert_eq!(ids(&v), [10, 11, 12]);
    assert_eq!(v["page"], serde_json::json!({"limit": 20, "offset": 0, "total": 3}));
    // A parent category includes its children's products.
    let (_, v) = get(addr, "/api/products?category=tools").await;
    assert_eq!(ids(&v), [10, 11]);
    let (_, v) = get(addr, "/api/products?category=2").await;
    assert_eq!(ids(&v), [10]);
    let (_, v) = get(addr, "/api/products?q=FINE%20TEETH").await;
    assert_eq!(ids(&v), [11], "case-insensitive search in the description");
    let (_, v) = get(addr, "/api/products?q=%C3%BCn%C3%AFcode").await;
    assert_eq!(ids(&v), [11], "unicode text matches");
    let (_, v) = get(addr, "/api/products?tag=sale&limit=1&offset=1").await;
    assert_eq!(ids(&v), [12]);
    assert_eq!(v["page"]["total"], 2);
}

#[tokio::test]
async fn categories_count_their_products() {
    let addr = start().await;
    let (status, v) = get(addr, "/api/categories").await;
    assert_eq!(status, 200);
    let counts: Vec<(i64, i64, i64)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_i64().unwrap(), c["product_count"].as_i64().unwrap(), c["sort_order"].as_i64().unwrap()))
        .collect();
    assert_eq!(counts, [(1, 1, 1), (2, 1, 2), (3, 1, 3)]);
}

#[tokio::test]
async fn stock_counts_units_in_open_orders_only() {
    let addr = start().await;
    let (status, v) = get(addr, "/api/inventory/HAM-1").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["quantity"], 7);
    assert_eq!(v["data"]["open_order_units"], 3, "paid 2 + pending 1; cancelled and shipped excluded");
    assert_eq!(v["data"]["product_name"], "Claw hammer");
    let (_, v) = get(addr, "/api/inventory/SAW-1").await;
    assert_eq!(v["data"]["in_stock"], false);
}

#[tokio::test]
async fn bad_input_gets_the_legacy_error_codes() {
    let addr = start().await;
    for (path, status, code) in [
        ("/api/products/999", 404, "not_found"),
        ("/api/products/abc", 400, "invalid_path"),
        ("/api/products?limit=0", 400, "invalid_query"),
        ("/api/products?limit=x", 400, "invalid_query"),
        ("/api/inventory/NOPE", 404, "not_found"),
        ("/api/nothing", 404, "no_route"),
    ] {
        let (s, v) = get(addr, path).await;
        assert_eq!((s, v["error"]["code"].as_str().unwrap()), (status, code), "{path}: {v}");
    }
    let r = reqwest::Client::new().delete(format!("http://{addr}/api/products/10")).send().await.unwrap();
    assert_eq!(r.status(), 405);
}
