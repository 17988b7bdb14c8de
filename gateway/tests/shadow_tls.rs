//! Shadow mirrors to an extracted upstream that only speaks TLS (and h2): the upstream is a
//! second gateway with an HTTPS listener whose certificate a test CA signed (h2 and HTTP/1.1 by
//! ALPN), in front of a real HTTP server. The mirrors must go the way the primary path would go:
//! TLS verified against the upstream's `ca_file` and `sni`, h2 when `protocol` asks for it, h2c
//! by prior knowledge without TLS, any certificate with `verify = false`; with another CA or a
//! wrong name they fail and count as shadow errors.

mod common;

use std::path::{Path, PathBuf};

use common::certs::Ca;
use common::{shadow_count, Gateway, Upstream};
use serde_json::Value;
use strangler_support::free_port;

/// A test CA and one leaf certificate it signed for `names`; files in `dir`.
fn ca_and_leaf(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let ca = Ca::new(dir);
    let (crt, key) = ca.leaf("leaf", names, names[0]);
    (ca.ca_file(), crt, key)
}

/// The inner gateway: every request to `svc`; HTTPS on `https` (h2 offered by ALPN) and h2c on
/// its plain listener.
fn inner(https: u16, crt: &Path, key: &Path, svc: &Upstream) -> Gateway {
    Gateway::start(&format!(
        "h2c = true\n\n[gateway.tls]\nlisten = \"127.0.0.1:{https}\"\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n\n[defaults]\nupstream = \"svc\"\n\n[upstreams.svc]\nendpoints = [\"{}\"]\n\n[upstreams.unused]\nendpoints = [\"127.0.0.1:1\"]\n",
        crt.display(),
        key.display(),
        svc.addr
    ))
}

/// The outer gateway: `/orders/{id}` served by legacy and mirrored to `svc` (`svc_settings`).
fn outer(legacy: &Upstream, svc_settings: &str) -> Gateway {
    Gateway::start(&format!(
        "[defaults]\nupstream = \"legacy\"\n\n[upstreams.legacy]\nendpoints = [\"{}\"]\n\n[upstreams.svc]\n{svc_settings}\n\n[[routes]]\nname = \"orders\"\nmatch = {{ path = \"/orders/{{id}}\" }}\nto = \"svc\"\nstage = \"shadow\"\n[routes.shadow]\nsample = 1.0\n",
        legacy.addr
    ))
}

fn count(v: &Value, ptr: &str) -> u64 {
    shadow_count(v, "orders", ptr)
}

/// Sends `n` requests (all served by legacy) and waits until the report has `n` outcomes.
async fn mirror(gw: &Gateway, n: usize) -> Value {
    for i in 0..n {
        let (status, v) = gw.get(&format!("/orders/{i}"), &[]).await;
        assert_eq!((status, v["upstream"].as_str()), (200, Some("legacy")), "{v}\n{}", gw.log());
    }
    gw.wait_shadow_outcomes("orders", n as u64).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_reach_tls_and_h2_upstreams_as_the_primary_path_would() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let dir = tempfile::tempdir().unwrap();
    let (ca, crt, key) = ca_and_leaf(dir.path(), &["svc.test"]);
    let https = free_port();
    let inner = inner(https, &crt, &key, &svc);
    let other_dir = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = ca_and_leaf(other_dir.path(), &["svc.test"]);

    let tls = |ca: &Path, protocol: &str| {
        format!(
            "endpoints = [\"127.0.0.1:{https}\"]\nprotocol = \"{protocol}\"\ntls = {{ sni = \"svc.test\", ca_file = \"{}\" }}",
            ca.display()
        )
    };
    let mut expected = 0;
    for protocol in ["http1", "h2", "auto"] {
        let gw = outer(&legacy, &tls(&ca, protocol));
        let v = mirror(&gw, 3).await;
        assert_eq!((count(&v, "/compared"), count(&v, "/errors/shadow")), (3, 0), "{protocol}: {v:#}\n{}", gw.log());
        // the answers differ (`upstream` is legacy on one side, svc on the other): compared for real
        assert_eq!(count(&v, "/mismatched"), 3, "{protocol}: {v:#}");
        expected += 3;
        let samples = gw.admin_get("/admin/shadow/orders").await;
        for s in samples["samples"].as_array().unwrap() {
            let body: Value = serde_json::from_str(s["shadow"]["body"].as_str().unwrap_or("null")).unwrap_or_default();
            assert_eq!(
                (s["shadow"]["status"].as_u64(), body["upstream"].as_str()),
                (Some(200), Some("svc")),
                "{protocol}: {s:#}"
            );
        }
        assert_eq!(svc.hits(), expected, "{protocol}: every mirror went through TLS to svc: {samples:#}");
    }

    // h2c by prior knowledge to the inner gateway's plain listener
    let gw = outer(&legacy, &format!("endpoints = [\"127.0.0.1:{}\"]\nprotocol = \"h2\"", inner.port));
    let v = mirror(&gw, 2).await;
    assert_eq!((count(&v, "/compared"), count(&v, "/errors/shadow")), (2, 0), "h2c: {v:#}\n{}", gw.log());
    expected += 2;
    assert_eq!(svc.hits(), expected);

    // `verify = false` trusts any certificate, as on the primary path
    let gw = outer(
        &legacy,
        &format!(
            "endpoints = [\"127.0.0.1:{https}\"]\ntls = {{ sni = \"svc.test\", ca_file = \"{}\", verify = false }}",
            other_ca.display()
        ),
    );
    let v = mirror(&gw, 2).await;
    assert_eq!((count(&v, "/compared"), count(&v, "/errors/shadow")), (2, 0), "verify = false: {v:#}\n{}", gw.log());
    expected += 2;
    assert_eq!(svc.hits(), expected);

    // a certificate the upstream's CA did not sign, or a name it was not made for: no mirror
    for (what, settings) in [
        ("another CA", tls(&other_ca, "auto")),
        (
            "a wrong name",
            format!(
                "endpoints = [\"127.0.0.1:{https}\"]\ntls = {{ sni = \"wrong.test\", ca_file = \"{}\" }}",
                ca.display()
            ),
        ),
    ] {
        let gw = outer(&legacy, &settings);
        let v = mirror(&gw, 2).await;
        assert_eq!((count(&v, "/compared"), count(&v, "/errors/shadow")), (0, 2), "{what}: {v:#}");
    }
    assert_eq!(svc.hits(), expected, "no unverified mirror reached svc");
}
