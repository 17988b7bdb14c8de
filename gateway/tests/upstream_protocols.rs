//! Which HTTP version reaches an upstream, on the wire: the upstreams are recording servers
//! (tests/common/wire.rs) that note the version each request was read with and the ALPN protocol
//! the handshake settled. For the primary path and for shadow mirrors alike: `protocol = "auto"`
//! ends up on HTTP/2 when the upstream offers h2 by ALPN and on HTTP/1.1 when it offers only
//! http/1.1; `h2` is HTTP/2 (by ALPN over TLS, by prior knowledge in cleartext: h2c) and never
//! falls back to HTTP/1.1; `http1` stays HTTP/1.1 even where h2 is offered.

mod common;

use common::certs::Ca;
use common::wire::{WireServer, WireTls};
use common::{shadow_count, Gateway, Upstream};
use hyper::Version;

/// An upstream, its server, `protocol`, whether it has `tls`, and the version and ALPN protocol
/// its requests arrive with (None: the upstream refuses the connection).
type Case<'a> = (&'static str, &'a WireServer, &'static str, bool, Option<(Version, Option<&'static str>)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_h2_h2c_and_http1_arrive_as_negotiated() {
    let legacy = Upstream::start("legacy").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let (crt, key) = ca.leaf("svc", &["svc.test"], "svc");
    let both = WireServer::start(
        "both",
        Some(WireTls { cert: &crt, key: &key, alpn: &["h2", "http/1.1"], client_ca: None, tls12_only: false }),
    )
    .await;
    let h1_only = WireServer::start(
        "h1_only",
        Some(WireTls { cert: &crt, key: &key, alpn: &["http/1.1"], client_ca: None, tls12_only: false }),
    )
    .await;
    let plain = WireServer::start("plain", None).await;

    let tls = format!("tls = {{ sni = \"svc.test\", ca_file = \"{}\" }}", ca.ca_file().display());
    // (upstream, server, protocol, TLS, what arrives: version and ALPN; None: refused)
    let cases: [Case; 7] = [
        ("tls_auto", &both, "auto", true, Some((Version::HTTP_2, Some("h2")))),
        ("tls_auto_h1_only", &h1_only, "auto", true, Some((Version::HTTP_11, Some("http/1.1")))),
        ("tls_h2", &both, "h2", true, Some((Version::HTTP_2, Some("h2")))),
        ("tls_http1", &both, "http1", true, Some((Version::HTTP_11, Some("http/1.1")))),
        ("tls_h2_h1_only", &h1_only, "h2", true, None),
        ("h2c", &plain, "h2", false, Some((Version::HTTP_2, None))),
        ("plain_http1", &plain, "http1", false, Some((Version::HTTP_11, None))),
    ];
    let mut config =
        format!("[defaults]\nupstream = \"legacy\"\n\n[upstreams.legacy]\nendpoints = [\"{}\"]\n\n", legacy.addr);
    for (name, server, protocol, with_tls, _) in &cases {
        let tls = if *with_tls { tls.as_str() } else { "" };
        config +=
            &format!("[upstreams.{name}]\nendpoints = [\"{}\"]\nprotocol = \"{protocol}\"\n{tls}\n\n", server.addr);
        config += &format!(
            "[[routes]]\nname = \"p-{name}\"\nmatch = {{ path = \"/p/{name}/**\" }}\nto = \"{name}\"\nstage = \"extracted\"\n\n\
             [[routes]]\nname = \"s-{name}\"\nmatch = {{ path = \"/s/{name}/{{id}}\" }}\nto = \"{name}\"\nstage = \"shadow\"\n[routes.shadow]\nsample = 1.0\n\n"
        );
    }
    let gw = Gateway::start(&config);

    for (name, server, protocol, _, expected) in &cases {
        // the primary path: two requests (the second may reuse the pooled connection)
        for i in 0..2 {
            let (status, v) = gw.get(&format!("/p/{name}/{i}"), &[]).await;
            match expected {
                Some((version, _)) => {
                    assert_eq!((status, v["upstream"].as_str()), (200, Some(server.name)), "{name}: {v}\n{}", gw.log());
                    assert_eq!(v["version"], format!("{version:?}"), "{name} ({protocol})");
                }
                None => assert_eq!(status, 502, "{name} ({protocol}) must not fall back to HTTP/1.1: {v}"),
            }
        }
        // mirrors: the client gets legacy's answer, the mirror goes as the primary path would
        for i in 0..2 {
            let (status, v) = gw.get(&format!("/s/{name}/{i}"), &[]).await;
            assert_eq!((status, v["upstream"].as_str()), (200, Some("legacy")), "{name}: {v}\n{}", gw.log());
        }
        let route = format!("s-{name}");
        let v = gw.wait_shadow_outcomes(&route, 2).await;
        let outcome = (shadow_count(&v, &route, "/compared"), shadow_count(&v, &route, "/errors/shadow"));
        let want = if expected.is_some() { (2, 0) } else { (0, 2) };
        assert_eq!(outcome, want, "{route} ({protocol}): {v:#}");

        let seen: Vec<_> = [format!("/p/{name}/"), format!("/s/{name}/")].iter().flat_map(|p| server.seen(p)).collect();
        match expected {
            Some((version, alpn)) => {
                assert_eq!(seen.len(), 4, "{name}: {seen:?}");
                for s in &seen {
                    assert_eq!((s.version, s.alpn.as_deref()), (*version, *alpn), "{name} ({protocol}): {s:?}");
                }
            }
            None => assert!(seen.is_empty(), "{name}: {seen:?}"),
        }
    }
}
