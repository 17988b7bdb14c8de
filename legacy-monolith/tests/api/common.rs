//! Shared fixtures: one PostgreSQL cluster per test binary, one database per test, the real
//! axum app on 127.0.0.1:0 and a reqwest client.

use std::sync::OnceLock;

use legacy_monolith::{app, migrate, seed, AppState};
use reqwest::StatusCode;
use serde_json::Value;
use strangler_support::PgCluster;

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

/// The cluster shared by this test binary (started on first use).
pub fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(|| PgCluster::start().expect("start the ephemeral PostgreSQL cluster"))
}

/// A fresh, empty (not migrated) database: (name, key/value connection string).
pub fn fresh_database() -> (String, String) {
    cluster().create_unique_database("mono").expect("create a test database")
}

/// Small seed used by the read tests: 40 products in 6 categories, 10 customers, 30 orders.
pub fn small_seed() -> seed::SeedOptions {
    seed::SeedOptions { products: 40, customers: 10, orders: 30, categories: 6, seed: 7, force: false, progress: false }
}

pub struct TestApp {
    pub base: String,
    pub dbname: String,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestApp {
    /// A migrated, empty database behind a running server.
    pub async fn empty() -> TestApp {
        Self::start(None).await
    }

    /// A migrated database seeded with [`small_seed`] behind a running server.
    pub async fn seeded() -> TestApp {
        Self::start(Some(small_seed())).await
    }

    pub async fn start(seed_opts: Option<seed::SeedOptions>) -> TestApp {
        let (dbname, conn) = fresh_database();
        let mut client = legacy_monolith::db::connect(&conn).await.expect("connect");
        migrate::run(&mut client).await.expect("migrate");
        if let Some(opts) = seed_opts {
            seed::run(&mut client, &opts).await.expect("seed");
        }
        drop(client);
        let state = AppState::connect_lazy(&conn, 16).expect("pool");
        Self::serve(state, dbname).await
    }

    /// Serves `state` on 127.0.0.1:0.
    pub async fn serve(state: AppState, dbname: String) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let router = app(state);
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        TestApp { base: format!("http://{addr}"), dbname, http: reqwest::Client::new(), server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("GET");
        read(r).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self.http.post(self.url(path)).json(&body).send().await.expect("POST");
        read(r).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self.http.put(self.url(path)).json(&body).send().await.expect("PUT");
        read(r).await
    }

    /// Sends a raw body with the given content type.
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).body(body.to_string());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        read(req.send().await.expect("send")).await
    }

    /// Runs SQL through psql on this test's database.
    pub fn sql(&self, sql: &str) -> String {
        cluster().psql(&self.dbname, sql).expect("psql")
    }

    pub fn sql_i64(&self, sql: &str) -> i64 {
        let out = self.sql(sql);
        out.trim().parse().unwrap_or_else(|_| panic!("{sql:?} returned {out:?}, not an integer"))
    }
}

pub async fn read(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.expect("body");
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// Asserts an error response: the status and `{"error": {"code": code, "message": <non-empty>}}`.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) {
    let (s, body) = got;
    assert_eq!(s.as_u16(), status, "unexpected status; body: {body}");
    let err = body.get("error").unwrap_or_else(|| panic!("no `error` object in {body}"));
    assert_eq!(err["code"], code, "unexpected error code in {body}");
    let msg = err["message"].as_str().unwrap_or_else(|| panic!("no message in {body}"));
    assert!(!msg.is_empty(), "empty error message in {body}");
    assert!(body.get("data").is_none(), "error bodies carry no data: {body}");
}

/// Asserts a success envelope and returns its `data`.
#[track_caller]
pub fn ok_data(got: &(StatusCode, Value), status: u16) -> Value {
    let (s, body) = got;
    assert_eq!(s.as_u16(), status, "unexpected status; body: {body}");
    assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()), "no request_id: {body}");
    assert!(body["generated_at"].as_str().is_some_and(|s| s.ends_with('Z')), "no generated_at: {body}");
    body["data"].clone()
}

/// True if `s` is a money string with exactly two decimals, e.g. "19.99".
pub fn is_money(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        let Some((int, frac)) = s.split_once('.') else {
            return false;
        };
        !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.len() == 2
            && frac.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Creates a customer through the API and returns its id.
pub async fn create_customer(app: &TestApp, email: &str) -> i64 {
    let got = app
        .post(
            "/api/customers",
            serde_json::json!({
                "email": email, "first_name": "Test", "last_name": "Buyer",
                "address": {"line1": "1 Test St", "city": "Testville", "postal_code": "12345", "country": "us"}
            }),
        )
        .await;
    ok_data(&got, 201)["id"].as_i64().expect("customer id")
}

/// Creates a product with `stock` units through the API and returns (id, sku).
pub async fn create_product(app: &TestApp, sku: &str, price: &str, stock: i64) -> i64 {
    let got = app
        .post(
            "/api/products",
            serde_json::json!({
                "sku": sku, "name": format!("Product {sku}"), "category_id": 1,
                "price": price, "initial_stock": stock
            }),
        )
        .await;
    ok_data(&got, 201)["id"].as_i64().expect("product id")
}
