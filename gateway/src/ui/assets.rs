//! The dashboard's page and its assets, compiled into the binary (`gateway/ui/`): nothing is
//! fetched from anywhere else, so it works offline. Served with a Content-Security-Policy that
//! allows only this origin (no inline script or style, no framing).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// Allows only this origin's scripts, styles and fetches; nothing inline, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// (name under /ui/assets/, content type, bytes)
const ASSETS: [(&str, &str, &str); 9] = [
    ("boot.js", JS, include_str!("../../ui/boot.js")),
    ("app.js", JS, include_str!("../../ui/app.js")),
    ("lib.js", JS, include_str!("../../ui/lib.js")),
    ("views.js", JS, include_str!("../../ui/views.js")),
    ("route.js", JS, include_str!("../../ui/route.js")),
    ("charts.js", JS, include_str!("../../ui/charts.js")),
    ("diff.js", JS, include_str!("../../ui/diff.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../ui/style.css")),
    ("favicon.svg", "image/svg+xml", include_str!("../../ui/favicon.svg")),
];
const JS: &str = "text/javascript; charset=utf-8";

const INDEX: &str = include_str!("../../ui/index.html");

fn headers(content_type: &'static str) -> [(header::HeaderName, &'static str); 5] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        // small files; revalidated so a new binary's assets are picked up at once
        (header::CACHE_CONTROL, "no-cache"),
    ]
}

/// `GET /ui`: the page (open: it holds no data; the data come from token-protected JSON).
pub async fn index() -> Response {
    (headers("text/html; charset=utf-8"), INDEX).into_response()
}

/// `GET /ui/assets/{name}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ctype, body)) => (headers(ctype), *body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_embedded_assets() {
        let mut named: Vec<&str> = INDEX.split("/ui/assets/").skip(1).map(|p| p.split('"').next().unwrap()).collect();
        for (_, _, body) in ASSETS {
            named.extend(body.split("from './").skip(1).map(|p| p.split('\'').next().unwrap()));
        }
        assert!(named.len() > ASSETS.len(), "{named:?}");
        for name in named {
            assert!(ASSETS.iter().any(|(n, _, _)| *n == name), "{name} is named but not embedded");
        }
        for (name, _, body) in ASSETS.iter().chain([&("index.html", "", INDEX)]) {
            // XML namespace names are identifiers, never fetched
            let body = body.replace("http://www.w3.org/2000/svg", "");
            assert!(!body.contains("http://") && !body.contains("https://"), "{name} refers to another site");
            assert!(!body.contains("//cdn") && !body.contains("@import"), "{name} loads something");
        }
    }
}
