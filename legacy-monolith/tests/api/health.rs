use legacy_monolith::AppState;
use serde_json::json;

use crate::common::{assert_error, ok_data, TestApp};

#[tokio::test]
async fn live_and_ready_answer_when_the_database_is_up() {
    let app = TestApp::empty().await;
    let (s, body) = app.get("/health/live").await;
    assert_eq!(s, 200);
    assert_eq!(body, json!({"status": "live"}));
    let (s, body) = app.get("/health/ready").await;
    assert_eq!(s, 200);
    assert_eq!(body, json!({"status": "ready"}));
}

#[tokio::test]
async fn ready_is_503_when_the_database_is_down_but_live_is_200() {
    // A port nothing listens on: bind, read, release.
    let port = strangler_support::free_port();
    let conn = format!("host=127.0.0.1 port={port} user=postgres dbname=nowhere connect_timeout=1");
    let state = AppState::connect_lazy(&conn, 2).expect("a lazy pool needs no server");
    let app = TestApp::serve(state, "nowhere".into()).await;
    assert_eq!(app.get("/health/live").await.0, 200);
    assert_error(&app.get("/health/ready").await, 503, "not_ready");
    // API calls fail with a JSON 503, not a hang or a 500.
    assert_error(&app.get("/api/products/1").await, 503, "unavailable");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = TestApp::empty().await;
    assert_error(&app.get("/api/nope").await, 404, "no_route");
    assert_error(&app.get("/").await, 404, "no_route");
    let got = app.send_raw(reqwest::Method::DELETE, "/api/products/1", None, "").await;
    assert_error(&got, 405, "method_not_allowed");
}

#[tokio::test]
async fn request_id_is_echoed_or_generated_and_the_rest_is_deterministic() {
    let app = TestApp::seeded().await;
    let r = app.http.get(app.url("/api/products/3")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let (_, first) = crate::common::read(r).await;
    assert_eq!(first["request_id"], "abc-123");

    let r = app.http.get(app.url("/api/products/3")).send().await.unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let (_, mut second) = crate::common::read(r).await;
    assert_eq!(second["request_id"], generated.as_str());
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated} is not a UUID");
    assert!(chrono::DateTime::parse_from_rfc3339(second["generated_at"].as_str().unwrap()).is_ok());

    // Apart from the two noise fields, two reads of unchanged data are identical.
    let mut first = first;
    for b in [&mut first, &mut second] {
        let o = b.as_object_mut().unwrap();
        o.remove("request_id");
        o.remove("generated_at");
    }
    assert_eq!(first, second);
    let listed = ok_data(&app.get("/api/products?limit=5").await, 200);
    let again = ok_data(&app.get("/api/products?limit=5").await, 200);
    assert_eq!(listed, again);
}
