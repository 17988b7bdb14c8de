//! The kit against a real PostgreSQL: unit of work, shadow dry-run, health, errors, metrics.

use std::net::SocketAddr;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
use strangler_kit::{ApiError, Db, KitState, Migration, RequestId, Service};
use strangler_support::PgCluster;

const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "notes", sql: "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL)" },
    Migration { version: 2, name: "audit", sql: "CREATE TABLE audit (note_id bigint NOT NULL)" },
];

async fn create(
    db: Db,
    Extension(rid): Extension<RequestId>,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let text = body["body"].as_str().ok_or_else(|| ApiError::unprocessable("invalid_field", "body is required"))?;
    let c = db.client().await?;
    let id: i64 = c.query_one("INSERT INTO notes(body) VALUES ($1) RETURNING id", &[&text]).await?.get(0);
    c.execute("INSERT INTO audit(note_id) VALUES ($1)", &[&id]).await?;
    if text == "fail-after-write" {
        // Both rows above were written in this request's transaction; the error must undo them.
        return Err(ApiError::conflict("refused", "refused after writing"));
    }
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "body": text, "shadow": db.is_shadow(), "request_id": rid.0 }))))
}

async fn read(db: Db, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let row = db.client().await?.query_opt("SELECT body FROM notes WHERE id = $1", &[&id]).await?;
    let row = row.ok_or_else(|| ApiError::not_found("note", id))?;
    Ok(Json(json!({ "id": id, "body": row.get::<_, String>(0) })))
}

fn routes(r: Router<KitState>) -> Router<KitState> {
    r.route("/notes", post(create)).route("/notes/{id}", get(read))
}

struct Fixture {
    pg: PgCluster,
    db: String,
    addr: SocketAddr,
    http: reqwest::Client,
}

impl Fixture {
    async fn start() -> Fixture {
        let pg = PgCluster::start().expect("postgres");
        let (db, conn) = pg.create_unique_database("kit").unwrap();
        let service = Service::new("notes", MIGRATIONS, routes);
        let pool = strangler_kit::pool(&conn, 4).unwrap();
        service.migrate(&pool).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(service.serve(listener, pool, std::future::pending()));
        Fixture { pg, db, addr, http: reqwest::Client::new() }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn count(&self, table: &str) -> i64 {
        self.pg.psql(&self.db, &format!("SELECT count(*) FROM {table}")).unwrap().parse().unwrap()
    }
}

#[tokio::test]
async fn a_normal_write_commits() {
    let f = Fixture::start().await;
    let r = f.http.post(f.url("/notes")).json(&json!({"body": "hello"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["shadow"], false);
    assert_eq!((f.count("notes"), f.count("audit")), (1, 1));
    let r = f.http.get(f.url(&format!("/notes/{}", v["id"]))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["body"], "hello");
}

#[tokio::test]
async fn a_shadow_write_runs_for_real_but_leaves_no_row() {
    let f = Fixture::start().await;
    let r = f
        .http
        .post(f.url("/notes"))
        .header("x-strangler-shadow", "1")
        .json(&json!({"body": "mirrored"}))
        .send()
        .await
        .unwrap();
    // The handler ran (real insert, real id) and answered as it would for real ...
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["shadow"], true);
    assert!(v["id"].as_i64().unwrap() >= 1);
    // ... but nothing was committed.
    assert_eq!((f.count("notes"), f.count("audit")), (0, 0));
    // And the dry run is counted.
    let m = f.http.get(f.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("kit_shadow_dry_runs_total{service=\"notes\"} 1"), "{m}");
    // A following normal write still commits (the pooled connection was left clean).
    let r = f.http.post(f.url("/notes")).json(&json!({"body": "real"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(f.count("notes"), 1);
}

#[tokio::test]
async fn an_error_after_writing_rolls_back_every_write_of_the_request() {
    let f = Fixture::start().await;
    let r = f.http.post(f.url("/notes")).json(&json!({"body": "fail-after-write"})).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "refused");
    assert_eq!((f.count("notes"), f.count("audit")), (0, 0));
}

#[tokio::test]
async fn errors_are_json_with_a_code() {
    let f = Fixture::start().await;
    for (path, status, code) in [("/notes/999", 404, "not_found"), ("/no/such/route", 404, "no_route")] {
        let r = f.http.get(f.url(path)).send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{path}: {v}");
    }
    let r = f.http.post(f.url("/notes")).json(&json!({"nobody": 1})).send().await.unwrap();
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn request_ids_are_kept_or_generated() {
    let f = Fixture::start().await;
    let r = f
        .http
        .post(f.url("/notes"))
        .header("x-request-id", "abc-123")
        .json(&json!({"body": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    assert_eq!(r.json::<Value>().await.unwrap()["request_id"], "abc-123");
    let r = f.http.get(f.url("/health/live")).send().await.unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36, "{generated}");
}

#[tokio::test]
async fn ready_follows_the_database() {
    let mut f = Fixture::start().await;
    let r = f.http.get(f.url("/health/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    f.pg.stop();
    let r = f.http.get(f.url("/health/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "not_ready");
    // Liveness does not depend on the database.
    assert_eq!(f.http.get(f.url("/health/live")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let f = Fixture::start().await;
    let conn = f.pg.connection_string(&f.db);
    let service = Service::new("notes", MIGRATIONS, routes);
    let pool = strangler_kit::pool(&conn, 2).unwrap();
    service.migrate(&pool).await.unwrap();
    service.migrate(&pool).await.unwrap();
    assert_eq!(f.count("kit_schema_migrations"), 2);
}
