//! `strangler-gateway check`: exit codes and error format.

use std::process::Command;

fn check(src: &str) -> (i32, String, String) {
    check_with(src, &[])
}

fn check_with(src: &str, flags: &[&str]) -> (i32, String, String) {
    check_env(src, flags, &[("STRANGLER_SHADOW_SECRET", "cli-test-secret-0123456789")])
}

fn check_env(src: &str, flags: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, src).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strangler-gateway"))
        .arg("check")
        .args(flags)
        .arg(&path)
        .env_remove("STRANGLER_SHADOW_SECRET")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_the_table_for_the_repo_plan() {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../routes.toml")).unwrap();
    let (code, out, err) = check(&src);
    assert_eq!(code, 0, "{err}");
    for want in ["products", "/api/products/**", "categories", "/api/inventory/{sku}", "orders", "default -> legacy"] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
}

#[test]
fn check_names_an_unset_dry_run_secret_and_no_resolve_does_not_read_it() {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../routes.toml")).unwrap();
    let (code, _, err) = check_env(&src, &[], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("error: cannot read the dry-run secret: environment variable STRANGLER_SHADOW_SECRET is unset"),
        "{err}"
    );
    let (code, _, err) = check_env(&src, &["--no-resolve"], &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn check_lists_every_error_with_place_and_exits_2() {
    let src = r#"[defaults]
upstream = "legacy"
[upstreams.legacy]
endpoints = ["127.0.0.1:8081"]

[[routes]]
name = "a"
match = { path = "/a", methds = ["GET"] }
to = "catalog"
stage = "canary"
weight = 101
timeout = "5x"

[[routes]]
name = "a"
match = { path = "/b" }
stage = "legacy"
"#;
    let (code, _, err) = check(src);
    assert_eq!(code, 2, "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(lines.len(), 5, "{err}");
    assert!(lines[0].ends_with("routes.toml:8:24: error: unknown field `methds`, expected one of `path`, `methods`, `headers`, `host` (hint: remove the key or fix its spelling)"), "{err}");
    assert!(
        lines[1].contains(
            ":9:6: error: unknown upstream \"catalog\" (hint: declare [upstreams.catalog] or use one of: legacy)"
        ),
        "{err}"
    );
    assert!(lines[2].contains(":11:10: error: weight 101 is outside 0–100"), "{err}");
    assert!(lines[3].contains(":12:11: error: bad duration \"5x\""), "{err}");
    assert!(lines[4].contains(":15:8: error: duplicate route name \"a\""), "{err}");
}

#[test]
fn check_resolves_host_names_and_rejects_unknown_ones_with_a_place() {
    let ok = "[defaults]\nupstream = \"legacy\"\n[upstreams.legacy]\nendpoints = [\"localhost:8081\"]\n";
    let (code, out, err) = check(ok);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("localhost:8081=127.0.0.1:8081"), "{out}");
    let bad = "[defaults]\nupstream = \"legacy\"\n[upstreams.legacy]\nendpoints = [\"no-such-host.invalid:8081\"]\n";
    let (code, _, err) = check(bad);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("routes.toml:4:14: error: endpoint \"no-such-host.invalid:8081\" does not resolve"), "{err}");
}

#[test]
fn check_no_resolve_validates_a_file_for_another_network_but_still_rejects_mistakes() {
    // names that only resolve inside a cluster: an error by default, accepted with --no-resolve
    let k8s = "[defaults]\nupstream = \"legacy\"\n[upstreams.legacy]\nendpoints = [\"no-such-host.invalid:8081\"]\n";
    let (code, _, err) = check(k8s);
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = check_with(k8s, &["--no-resolve"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no-such-host.invalid:8081=0.0.0.0:8081"), "{out}");
    assert!(out.contains("host names not resolved (--no-resolve)"), "{out}");
    // everything else is still checked
    let broken =
        format!("{k8s}[[routes]]\nname = \"r\"\nmatch = {{ path = \"/a\" }}\nto = \"nope\"\nstage = \"extracted\"\n");
    let (code, _, err) = check_with(&broken, &["--no-resolve"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("routes.toml:8:6: error:") && err.contains("nope"), "{err}");
}
