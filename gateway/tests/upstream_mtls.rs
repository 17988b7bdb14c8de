//! mTLS to services, on the primary path and for shadow mirrors: the upstream is a real TLS
//! server (tests/common/wire.rs) that requires a client certificate signed by the services' CA.
//! With the configured `client_cert`/`client_key` a request is answered and a mirror compared;
//! without one, or with a certificate another CA signed, the handshake is refused: the primary
//! path answers 502 (or legacy with `fallback = "legacy"`), a mirror counts as a shadow error
//! and the client's answer (from legacy) is unaffected. Over TLS 1.3 (the client learns of the
//! refusal on its first read) and TLS 1.2 (the handshake itself fails) alike.

mod common;

use std::path::Path;

use common::certs::Ca;
use common::wire::{WireServer, WireTls};
use common::{shadow_count, Gateway, Upstream};

/// `tls = {...}` for the services' CA and name, with the client certificate of `client`.
fn tls(ca: &Path, client: Option<&(std::path::PathBuf, std::path::PathBuf)>) -> String {
    let cert = client
        .map(|(c, k)| format!(", client_cert = \"{}\", client_key = \"{}\"", c.display(), k.display()))
        .unwrap_or_default();
    format!("tls = {{ sni = \"svc.test\", ca_file = \"{}\"{cert} }}", ca.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_required_by_the_upstream_on_both_paths() {
    client_certificate_required(false).await
}

/// With TLS 1.2 the refusal fails the handshake itself (a connect error, not a read error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_required_over_tls12_too() {
    client_certificate_required(true).await
}

async fn client_certificate_required(tls12_only: bool) {
    let legacy = Upstream::start("legacy").await;
    let (dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ca = Ca::new(dir.path());
    let (crt, key) = ca.leaf("svc", &["svc.test"], "svc");
    let gateway_cert = ca.client("gateway", "strangler-gateway");
    let intruder = Ca::new(other_dir.path()).client("intruder", "strangler-gateway");
    let svc = WireServer::start(
        "svc",
        Some(WireTls { cert: &crt, key: &key, alpn: &["h2", "http/1.1"], client_ca: Some(ca.ca_file()), tls12_only }),
    )
    .await;

    let caf = ca.ca_file();
    let mut config =
        format!("[defaults]\nupstream = \"legacy\"\n\n[upstreams.legacy]\nendpoints = [\"{}\"]\n\n", legacy.addr);
    for (name, client) in [("with_cert", Some(&gateway_cert)), ("no_cert", None), ("other_ca", Some(&intruder))] {
        config += &format!(
            "[upstreams.{name}]\nendpoints = [\"{}\"]\nprotocol = \"auto\"\n{}\n\n",
            svc.addr,
            tls(&caf, client)
        );
        config += &format!(
            "[[routes]]\nname = \"p-{name}\"\nmatch = {{ path = \"/p/{name}/**\" }}\nto = \"{name}\"\nstage = \"extracted\"\n\n\
             [[routes]]\nname = \"s-{name}\"\nmatch = {{ path = \"/s/{name}/{{id}}\" }}\nto = \"{name}\"\nstage = \"shadow\"\n[routes.shadow]\nsample = 1.0\n\n"
        );
    }
    config += "[[routes]]\nname = \"fallback\"\nmatch = { path = \"/f/**\" }\nto = \"no_cert\"\nstage = \"extracted\"\nfallback = \"legacy\"\n";
    let gw = Gateway::start(&config);

    // primary path: the certificate opens the door...
    let (status, v) = gw.get("/p/with_cert/1", &[]).await;
    assert_eq!((status, v["upstream"].as_str()), (200, Some("svc")), "{v}\n{}", gw.log());
    let seen = svc.wait_seen("/p/with_cert/", 1).await;
    assert!(seen.iter().all(|s| s.client_cert), "{seen:?}");
    assert_eq!(svc.refused(), 0);
    // ...and without it, or with another CA's, the upstream refuses the handshake: 502
    for name in ["no_cert", "other_ca"] {
        let refused = svc.refused();
        let (status, v) = gw.get(&format!("/p/{name}/1"), &[]).await;
        assert_eq!(status, 502, "{name}: {v}\n{}", gw.log());
        assert_eq!(v["error"]["code"], "bad_gateway", "{name}: {v}");
        assert!(svc.refused() > refused, "{name}: the upstream refused the handshake");
    }
    // with `fallback = "legacy"` an idempotent request is answered by legacy; a POST is not
    let (status, v) = gw.get("/f/1", &[]).await;
    assert_eq!((status, v["upstream"].as_str()), (200, Some("legacy")), "{v}\n{}", gw.log());
    let r = gw.client.post(gw.url("/f/1")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 502, "a POST never falls back");
    assert!(svc.seen("/p/no_cert").is_empty() && svc.seen("/p/other_ca").is_empty() && svc.seen("/f").is_empty());

    // shadow: the client always gets legacy's answer; only the mirror with the certificate is
    // compared, the others fail on the shadow side
    for name in ["with_cert", "no_cert", "other_ca"] {
        for i in 0..3 {
            let (status, v) = gw.get(&format!("/s/{name}/{i}"), &[]).await;
            assert_eq!((status, v["upstream"].as_str()), (200, Some("legacy")), "{name}: {v}\n{}", gw.log());
        }
    }
    for (name, compared, errors) in [("with_cert", 3, 0), ("no_cert", 0, 3), ("other_ca", 0, 3)] {
        let route = format!("s-{name}");
        let v = gw.wait_shadow_outcomes(&route, 3).await;
        let got = (shadow_count(&v, &route, "/compared"), shadow_count(&v, &route, "/errors/shadow"));
        assert_eq!(got, (compared, errors), "{route}: {v:#}");
        assert_eq!(shadow_count(&v, &route, "/errors/legacy"), 0, "{route}: {v:#}");
    }
    let seen = svc.wait_seen("/s/with_cert/", 3).await;
    assert!(seen.iter().all(|s| s.client_cert), "{seen:?}");
    assert!(svc.seen("/s/no_cert").is_empty() && svc.seen("/s/other_ca").is_empty(), "no mirror got through");
    let m = gw.metrics().await;
    for line in [
        "strangler_shadow_compared_total{route=\"s-with_cert\"} 3",
        "strangler_shadow_errors_total{route=\"s-no_cert\",side=\"shadow\"} 3",
        "strangler_shadow_errors_total{route=\"s-other_ca\",side=\"shadow\"} 3",
        "strangler_shadow_errors_total{route=\"s-with_cert\",side=\"shadow\"} 0",
    ] {
        assert!(m.contains(line), "{line} missing:\n{m}");
    }
}
