//! Response compression against the real binary, decoded by curl: gzip, brotli and zstd by the
//! client's Accept-Encoding on a route that asks for it, nothing below `min_bytes`, nothing on a
//! route without `[routes.compression]`, and nothing for a client that does not accept it.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use axum::routing::get;
use common::Gateway;

fn big() -> String {
    let items: Vec<String> =
        (0..200).map(|i| format!("{{\"id\":{i},\"name\":\"product {i}\",\"price\":\"{i}.99\"}}")).collect();
    format!("{{\"data\":[{}]}}", items.join(","))
}

async fn server() -> SocketAddr {
    let app = axum::Router::new()
        .route("/c/big", get(|| async { ([("content-type", "application/json")], big()) }))
        .route("/c/small", get(|| async { ([("content-type", "application/json")], "{\"ok\":true}") }))
        .route("/plain/big", get(|| async { ([("content-type", "application/json")], big()) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// (content-encoding, bytes on the wire, decoded body) as curl sees them.
fn fetch(url: &str, accept: Option<&str>) -> (String, usize, String) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-D"]).arg(&headers).args(["-w", "\n%{size_download}"]);
    if let Some(a) = accept {
        cmd.args(["-H", &format!("accept-encoding: {a}"), "--compressed"]);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, size) = text.rsplit_once('\n').unwrap();
    let h = std::fs::read_to_string(&headers).unwrap().to_ascii_lowercase();
    let enc = h.lines().find_map(|l| l.strip_prefix("content-encoding: ")).unwrap_or("").trim().to_string();
    (enc, size.trim().parse().unwrap(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_compressed_per_route_by_accept_encoding() {
    let up = server().await;
    let gw = Gateway::start(&format!(
        "[defaults]\nupstream = \"legacy\"\n\n[upstreams.legacy]\nendpoints = [\"{up}\"]\n\n\
         [[routes]]\nname = \"c\"\nmatch = {{ path = \"/c/**\" }}\nstage = \"legacy\"\n\n\
         [routes.compression]\nlevel = 5\nmin_bytes = 512\n"
    ));
    let original = big();
    tokio::task::block_in_place(|| {
        for enc in ["gzip", "br", "zstd"] {
            let (got, wire, body) = fetch(&gw.url("/c/big"), Some(enc));
            assert_eq!(got, enc);
            assert_eq!(body, original, "{enc} decodes to the upstream's body");
            assert!(wire * 4 < original.len(), "{enc}: {wire} bytes on the wire for {}", original.len());
        }
        // below min_bytes, without [routes.compression], or not accepted: as the upstream sent it
        for (path, accept) in [("/c/small", Some("gzip")), ("/plain/big", Some("gzip")), ("/c/big", None)] {
            let (got, wire, body) = fetch(&gw.url(path), accept);
            assert_eq!(got, "", "{path} {accept:?}");
            assert_eq!(wire, body.len(), "{path} {accept:?}");
        }
    });
}
