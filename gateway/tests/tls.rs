//! TLS termination and HTTP/2 against the real binary, with curl as the client: certificates
//! chosen by SNI, TLS 1.2/1.3 only, ALPN h2, h2c with prior knowledge, a plain-HTTP redirect,
//! certificate rotation without a restart, and a bad certificate that is rejected while the last
//! good one keeps serving.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::certs::Ca;
use common::{upstreams, Gateway, Upstream};
use strangler_support::free_port;

struct Curl {
    status: String,
    http_version: String,
    stderr: String,
    ok: bool,
}

/// `curl` against `name:port` resolved to 127.0.0.1, trusting the test CA.
fn curl(ca: &Path, name: &str, port: u16, path: &str, extra: &[&str]) -> Curl {
    let out = Command::new("curl")
        .args(["-sS", "-v", "-o", "/dev/null", "--max-time", "10", "-w", "%{http_code} %{http_version}"])
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("https://{name}:{port}{path}"))
        .output()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = stdout.split_whitespace();
    Curl {
        status: parts.next().unwrap_or("").to_string(),
        http_version: parts.next().unwrap_or("").to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        ok: out.status.success(),
    }
}

fn tls_config(port: u16, certs: &[(PathBuf, PathBuf)], extra: &str) -> String {
    let list: Vec<String> =
        certs.iter().map(|(c, k)| format!("{{ cert = \"{}\", key = \"{}\" }}", c.display(), k.display())).collect();
    format!(
        "h2c = true\n\n[gateway.tls]\nlisten = \"127.0.0.1:{port}\"\ncertificates = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// Polls until `cond` holds for what curl sees.
fn wait_curl(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_by_sni_http2_rotation_and_bad_certificates() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let certs_dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs_dir.path());
    let a = ca.leaf("a", &["a.test", "*.a.test"], "a-original");
    let b = ca.leaf("b", &["b.test"], "b-original");
    let https = free_port();
    let body = format!(
        "{}{}",
        tls_config(https, &[a.clone(), b.clone()], "redirect_http = false"),
        upstreams(legacy.addr, svc.addr)
    );
    let gw = Gateway::start(&body);
    let caf = ca.ca_file();

    // SNI picks the certificate: curl verifies the name, so each succeeds only with its own
    for (name, cn) in [("a.test", "a-original"), ("www.a.test", "a-original"), ("b.test", "b-original")] {
        let r = tokio::task::block_in_place(|| curl(&caf, name, https, "/echo", &[]));
        assert!(r.ok && r.status == "200", "{name}: {}", r.stderr);
        assert!(r.stderr.contains(&format!("CN={cn}")), "{name} got another certificate: {}", r.stderr);
        // ALPN h2 by default
        assert_eq!(r.http_version, "2", "{name}: {}", r.stderr);
    }
    // an unknown name gets the first certificate (and curl rejects the name)
    let r = tokio::task::block_in_place(|| curl(&caf, "other.test", https, "/echo", &[]));
    assert!(!r.ok && r.stderr.contains("CN=a-original"), "{}", r.stderr);
    // HTTP/1.1 over TLS still works, and TLS below 1.2 is refused
    let r = tokio::task::block_in_place(|| curl(&caf, "a.test", https, "/echo", &["--http1.1"]));
    assert_eq!((r.status.as_str(), r.http_version.as_str()), ("200", "1.1"), "{}", r.stderr);
    let r = tokio::task::block_in_place(|| curl(&caf, "a.test", https, "/echo", &["--tlsv1.2", "--tls-max", "1.2"]));
    assert!(r.ok && r.status == "200", "TLS 1.2: {}", r.stderr);
    let r = tokio::task::block_in_place(|| curl(&caf, "a.test", https, "/echo", &["--tlsv1", "--tls-max", "1.1"]));
    assert!(!r.ok, "TLS 1.1 must be refused: {}", r.stderr);
    // the upstream learns the request came over TLS
    let r = gw_get_json(&caf, https).await;
    assert_eq!(r["headers"]["x-forwarded-proto"], "https", "{r}");

    // h2c with prior knowledge on the plain listener
    let out = tokio::task::block_in_place(|| {
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", "--http2-prior-knowledge"])
            .arg(gw.url("/echo"))
            .output()
            .unwrap()
    });
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 2");

    // rotation: new files for a.test are served without a restart
    let a2 = ca.leaf("a", &["a.test", "*.a.test"], "a-rotated");
    assert_eq!(a2, a);
    tokio::task::block_in_place(|| {
        wait_curl("the rotated certificate", || {
            curl(&caf, "a.test", https, "/echo", &[]).stderr.contains("CN=a-rotated")
        })
    });

    // a bad certificate is rejected: the last good one keeps serving, the error is visible
    std::fs::write(&a.0, "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let errs = gw.admin_get("/admin/config-errors").await;
        if errs["last_error"].is_object() {
            let text = errs.to_string();
            assert!(text.contains("a.crt"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "the bad certificate was not reported: {errs}\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = tokio::task::block_in_place(|| curl(&caf, "a.test", https, "/echo", &[]));
    assert!(r.ok && r.stderr.contains("CN=a-rotated"), "the last good certificate serves: {}", r.stderr);
    let m = gw.metrics().await;
    assert!(m.contains("strangler_gateway_config_reloads_total{result=\"error\",trigger=\"tls\"}"), "{m}");
    assert!(m.contains("strangler_gateway_config_last_reload_failed 1"), "{m}");
}

async fn gw_get_json(ca: &Path, port: u16) -> serde_json::Value {
    let ca = ca.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .arg("--resolve")
            .arg(format!("a.test:{port}:127.0.0.1"))
            .arg(format!("https://a.test:{port}/echo"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_redirects_to_https_when_asked() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let certs_dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs_dir.path());
    let a = ca.leaf("a", &["a.test"], "a");
    let https = free_port();
    let gw = Gateway::start(&format!(
        "{}{}",
        tls_config(https, &[a], "redirect_http = true"),
        upstreams(legacy.addr, svc.addr)
    ));
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = client.post(gw.url("/api/orders?x=1")).header("host", "shop.test:8080").send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], format!("https://shop.test:{https}/api/orders?x=1").as_str());
    assert_eq!(legacy.hits(), 0, "a redirected request reaches no upstream");
}

/// TLS to an upstream: a second gateway (with the HTTPS listener) is the upstream of the first.
/// With the right CA and name the request passes (also over h2 by ALPN); with another CA or a
/// wrong name the certificate is refused and the client gets 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_upstreams_is_verified_against_the_given_ca() {
    let (legacy, svc) = (Upstream::start("legacy").await, Upstream::start("svc").await);
    let certs_dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs_dir.path());
    let leaf = ca.leaf("inner", &["inner.test"], "inner");
    let inner_https = free_port();
    let _inner =
        Gateway::start(&format!("{}{}", tls_config(inner_https, &[leaf], ""), upstreams(legacy.addr, svc.addr)));
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = Ca::new(other_dir.path());

    let outer = |tls: &str, protocol: &str| {
        format!(
            "[defaults]\nupstream = \"inner\"\n\n[upstreams.inner]\nendpoints = [\"127.0.0.1:{inner_https}\"]\nprotocol = \"{protocol}\"\ntls = {{ {tls} }}\n\n[upstreams.unused]\nendpoints = [\"127.0.0.1:1\"]\n"
        )
    };
    let good = format!("sni = \"inner.test\", ca_file = \"{}\"", ca.ca_file().display());
    for protocol in ["http1", "h2", "auto"] {
        let gw = Gateway::start(&outer(&good, protocol));
        let (status, v) = gw.get("/through", &[]).await;
        assert_eq!(status, 200, "{protocol}: {v}\n{}", gw.log());
        assert_eq!(v["upstream"], "legacy", "{protocol}");
    }
    for (what, tls) in [
        ("another CA", format!("sni = \"inner.test\", ca_file = \"{}\"", other_ca.ca_file().display())),
        ("a wrong name", format!("sni = \"wrong.test\", ca_file = \"{}\"", ca.ca_file().display())),
        ("the system roots", "sni = \"inner.test\"".to_string()),
    ] {
        let gw = Gateway::start(&outer(&tls, "http1"));
        let (status, _) = gw.get("/through", &[]).await;
        assert_eq!(status, 502, "{what} must not be trusted");
    }
    assert_eq!(legacy.hits(), 3, "only the verified connections reached the inner gateway's upstream");
}
