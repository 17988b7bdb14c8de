//! Host routing and route metadata against the real gateway binary: exact and wildcard hosts
//! (the Host header, port and case ignored), and `owner`/`description`/`labels` in `check`, the
//! admin API and the route_info metric.

mod common;

use std::process::Command;

use common::*;

fn config(legacy: std::net::SocketAddr, svc: std::net::SocketAddr) -> String {
    format!(
        r#"{}
[[routes]]
name = "api"
match = {{ host = "api.shop.test", path = "/orders/**" }}
to = "svc"
stage = "extracted"
owner = "team-orders"
description = "orders API for partners"
labels = {{ tier = "1", domain = "orders" }}

[[routes]]
name = "tenants"
match = {{ host = "*.tenants.shop.test", path = "/orders/**" }}
to = "svc"
stage = "extracted"
owner = "team-tenants"

[[routes]]
name = "web"
match = {{ path = "/orders/**" }}
stage = "legacy"
"#,
        upstreams(legacy, svc)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_pick_routes_and_metadata_is_shown() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let gw = Gateway::start(&config(legacy.addr, svc.addr));
    let cases = [
        ("api.shop.test", "svc"),
        ("API.shop.test:8080", "svc"),
        ("acme.tenants.shop.test", "svc"),
        ("tenants.shop.test", "legacy"),
        ("www.shop.test", "legacy"),
    ];
    for (host, want) in cases {
        let (status, body) = gw.get("/orders/1", &[("host", host)]).await;
        assert_eq!(status, 200, "{host}");
        assert_eq!(body["upstream"], want, "{host}: {body}");
    }

    let routes = gw.admin_get("/admin/routes").await;
    let api = &routes["routes"][0];
    assert_eq!(api["host"], "api.shop.test");
    assert_eq!(api["owner"], "team-orders");
    assert_eq!(api["description"], "orders API for partners");
    assert_eq!(api["labels"]["tier"], "1");
    assert_eq!(routes["routes"][1]["host"], "*.tenants.shop.test");
    let m = gw.metrics().await;
    assert!(
        m.contains("strangler_gateway_route_info{owner=\"team-orders\",route=\"api\",stage=\"extracted\"} 1"),
        "{m}"
    );
    // a reload that changes a route's owner replaces its series (and keeps the others)
    let old = gw.version().await;
    gw.write_config(&config(legacy.addr, svc.addr).replace("team-orders", "team-partners"));
    gw.wait_version_change(&old).await;
    let m = gw.metrics().await;
    assert!(
        m.contains("strangler_gateway_route_info{owner=\"team-partners\",route=\"api\",stage=\"extracted\"} 1"),
        "{m}"
    );
    assert!(!m.contains("owner=\"team-orders\""), "the old owner's series is gone: {m}");
    assert!(m.contains("strangler_gateway_route_info{owner=\"team-tenants\",route=\"tenants\""), "{m}");
    gw.write_config(&config(legacy.addr, svc.addr));
    let out = Command::new(env!("CARGO_BIN_EXE_strangler-gateway")).arg("check").arg(&gw.path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let header = text.lines().next().unwrap();
    assert!(header.contains("OWNER"), "{text}");
    let api_line = text.lines().find(|l| l.starts_with("api ")).unwrap();
    assert!(api_line.contains("api.shop.test/orders/**") && api_line.contains("team-orders"), "{text}");
    assert!(text.contains("route api: orders API for partners domain=orders tier=1"), "{text}");
}
