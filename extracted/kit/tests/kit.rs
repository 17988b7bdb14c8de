//! The kit against a real PostgreSQL: unit of work, shadow dry-run (only with the shared
//! secret), health, errors, metrics.

use std::net::SocketAddr;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
use strangler_kit::{ApiError, Db, KitState, Migration, RequestId, Service, SharedSecret, SHADOW_HEADER};
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

/// The secret the test services share with their (imaginary) gateway.
const SECRET: &str = "kit-test-secret-0123456789abcdef";

impl Fixture {
    /// A service with the shared secret [`SECRET`].
    async fn start() -> Fixture {
        Self::start_with(Some(SECRET)).await
    }

    async fn start_with(secret: Option<&str>) -> Fixture {
        let pg = PgCluster::start().expect("postgres");
        let (db, conn) = pg.create_unique_database("kit").unwrap();
        let secret = secret.map(|s| SharedSecret::new(s).unwrap());
        let service = Service::new("notes", MIGRATIONS, routes).shadow_secret(secret);
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

    /// POST /notes with `x-strangler-shadow: <shadow>`; the status and body.
    async fn post_shadow(&self, body: &str, shadow: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/notes"))
            .header(SHADOW_HEADER, shadow)
            .json(&json!({ "body": body }))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// The value of the sample `name` in /metrics (exact series text, e.g. `x{a="b"}`).
    async fn metric(&self, series: &str) -> Option<f64> {
        let m = self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap();
        m.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    async fn ignored(&self, reason: &str) -> f64 {
        let series = format!("kit_shadow_header_ignored_total{{reason=\"{reason}\",service=\"notes\"}}");
        self.metric(&series).await.unwrap_or_else(|| panic!("no series {series}"))
    }

    async fn dry_runs(&self) -> f64 {
        self.metric("kit_shadow_dry_runs_total{service=\"notes\"}").await.expect("kit_shadow_dry_runs_total")
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
async fn a_shadow_write_with_the_secret_runs_for_real_but_leaves_no_row() {
    let f = Fixture::start().await;
    let (status, v) = f.post_shadow("mirrored", &format!("1; secret={SECRET}")).await;
    // The handler ran (real insert, real id) and answered as it would for real ...
    assert_eq!(status, 201);
    assert_eq!(v["shadow"], true);
    assert!(v["id"].as_i64().unwrap() >= 1);
    // ... but nothing was committed.
    assert_eq!((f.count("notes"), f.count("audit")), (0, 0));
    // And the dry run is counted, as no ignored header.
    assert_eq!(f.dry_runs().await, 1.0);
    for reason in ["missing_secret", "wrong_secret", "not_configured"] {
        assert_eq!(f.ignored(reason).await, 0.0, "{reason}");
    }
    // A following normal write still commits (the pooled connection was left clean).
    let r = f.http.post(f.url("/notes")).json(&json!({"body": "real"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(f.count("notes"), 1);
}

#[tokio::test]
async fn a_shadow_header_without_the_right_secret_is_ignored_and_the_write_commits() {
    let f = Fixture::start().await;
    let cases = [
        ("1", "missing_secret"),
        ("true", "missing_secret"),
        ("1; secret=", "missing_secret"),
        ("1; secret=guess-guess-guess-1", "wrong_secret"),
        // one character off, same length
        (&format!("1; secret={}X", &SECRET[..SECRET.len() - 1]), "wrong_secret"),
    ];
    for (i, (value, reason)) in cases.iter().enumerate() {
        let before = f.ignored(reason).await;
        let (status, v) = f.post_shadow(&format!("direct-{i}"), value).await;
        assert_eq!(status, 201, "{value}: {v}");
        assert_eq!(v["shadow"], false, "{value}");
        // committed: readable, and the row (with its audit row) is there
        let r = f.http.get(f.url(&format!("/notes/{}", v["id"]))).send().await.unwrap();
        assert_eq!(r.status(), 200, "{value}");
        assert_eq!((f.count("notes"), f.count("audit")), (i as i64 + 1, i as i64 + 1), "{value}");
        assert_eq!(f.ignored(reason).await, before + 1.0, "{value}: counted as {reason}");
    }
    assert_eq!(f.dry_runs().await, 0.0);
}

#[tokio::test]
async fn a_service_without_a_secret_honours_no_dry_run() {
    let f = Fixture::start_with(None).await;
    for (i, value) in ["1", &format!("1; secret={SECRET}")].iter().enumerate() {
        let (status, v) = f.post_shadow("unconfigured", value).await;
        assert_eq!(status, 201, "{value}: {v}");
        assert_eq!(v["shadow"], false, "{value}");
        assert_eq!(f.count("notes"), i as i64 + 1, "{value}: the write committed");
    }
    assert_eq!(f.ignored("not_configured").await, 2.0);
    assert_eq!(f.ignored("missing_secret").await, 0.0);
    assert_eq!(f.dry_runs().await, 0.0);
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
