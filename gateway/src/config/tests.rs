use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::*;

const GOOD: &str = r#"
[gateway]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9901"

[defaults]
upstream = "legacy"

[upstreams.legacy]
endpoints = ["127.0.0.1:8081"]

[upstreams.catalog]
endpoints = ["127.0.0.1:8091", "127.0.0.1:8093"]
balance = "least_conn"
connect_timeout = "250ms"

[[routes]]
name = "products"
match = { path = "/api/products/**" }
to = "catalog"
stage = "canary"
weight = 10
sticky = "header:x-user"
fallback = "legacy"
timeout = "2s"

[[routes]]
name = "order"
match = { path = "/api/orders/{id}", methods = ["GET"] }
stage = "legacy"
"#;

#[test]
fn good_config_compiles() {
    let t = load_str("routes.toml", GOOD, None).unwrap();
    assert_eq!(t.routes.len(), 2);
    assert_eq!(t.routes[0].canary.weight_bp, 1000);
    assert_eq!(t.routes[0].timeout, Duration::from_secs(2));
    assert_eq!(t.upstreams[t.routes[0].to.unwrap()].endpoints.len(), 2);
}

fn errors(src: &str) -> Vec<String> {
    load_str("r.toml", src, None).unwrap_err().issues.iter().map(|i| i.to_string()).collect()
}

#[test]
fn unknown_keys_are_all_reported_with_positions() {
    let src = GOOD.replace("weight = 10", "weigth = 10").replace("timeout = \"2s\"", "timout = \"2s\"");
    let e = errors(&src);
    // the misspelt weight also leaves the canary without one
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].contains("needs a weight"), "{e:?}");
    assert!(e[1].starts_with("r.toml:22:1: error: unknown field `weigth`"), "{e:?}");
    assert!(e[2].contains("unknown field `timout`"), "{e:?}");
    assert!(e[1].contains("hint:"));
}

#[test]
fn semantic_errors_are_all_collected() {
    let src = GOOD
        .replace("to = \"catalog\"", "to = \"catalogue\"")
        .replace("weight = 10", "weight = 140")
        .replace("timeout = \"2s\"", "timeout = \"5x\"")
        .replace("name = \"order\"", "name = \"products\"");
    let e = errors(&src);
    assert_eq!(e.len(), 5, "{e:#?}");
    assert!(
        e[0].starts_with("r.toml:20:6: error: unknown upstream \"catalogue\"") && e[0].contains("catalog, legacy"),
        "{e:?}"
    );
    assert!(e[1].starts_with("r.toml:22:10: error: weight 140 is outside 0–100"), "{e:?}");
    assert!(e[2].contains("fallback needs an extracted upstream"), "{e:?}");
    assert!(e[3].starts_with("r.toml:25:11: error: bad duration \"5x\""), "{e:?}");
    assert!(
        e[4].contains("duplicate route name \"products\"") && e[4].contains("first defined at r.toml:18:8"),
        "{e:?}"
    );
}

#[test]
fn ambiguous_overlap_is_rejected() {
    let src = format!(
        "{GOOD}\n[[routes]]\nname = \"order2\"\nmatch = {{ path = \"/api/orders/{{id}}\" }}\nstage = \"legacy\"\n"
    );
    let e = errors(&src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("overlaps route \"order\""), "{e:?}");
    // different methods do not overlap
    let ok = src.replace(
        "match = { path = \"/api/orders/{id}\" }",
        "match = { path = \"/api/orders/{id}\", methods = [\"DELETE\"] }",
    );
    load_str("r.toml", &ok, None).unwrap();
    // parameter names do not matter: same pattern, disjoint methods is fine
    let ok = src.replace(
        "match = { path = \"/api/orders/{id}\" }",
        "match = { path = \"/api/orders/{oid}\", methods = [\"PUT\"] }",
    );
    load_str("r.toml", &ok, None).unwrap();
}

#[test]
fn unknown_keys_in_inline_tables_do_not_hide_other_errors() {
    let src = GOOD
        .replace(
            "match = { path = \"/api/products/**\" }",
            "match = { path = \"/api/products/**\", method = [\"GET\"] }",
        )
        .replace("methods = [\"GET\"] }", "methods = [\"GET\"], hedaers = 1 }")
        .replace("stage = \"legacy\"", "stage = \"legacyy\"");
    let e = errors(&src);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].contains("unknown field `method`"), "{e:?}");
    assert!(e[1].contains("unknown field `hedaers`"), "{e:?}");
    assert!(e[2].contains("unknown stage \"legacyy\""), "{e:?}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
    assert!(parse_duration("5x").is_err());
    assert!(parse_duration("5").is_err());
    assert!(parse_duration("").is_err());
}

#[test]
fn a_duration_beyond_a_year_is_an_error_with_a_place() {
    // `started + timeout` would overflow an Instant and panic on every request of the route
    let e = errors(&GOOD.replace("timeout = \"2s\"", "timeout = \"300000000000y\""));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("r.toml:25:11: error: duration \"300000000000y\" is longer than 365 days"), "{e:?}");
    assert!(e[0].contains("hint:"), "{e:?}");
    load_str("r.toml", &GOOD.replace("timeout = \"2s\"", "timeout = \"365days\""), None).unwrap();
}

#[test]
fn line_col_counts_chars() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("é\nx", 3), (2, 1));
}

const SHADOW: &str = r#"
[defaults]
upstream = "legacy"

[upstreams.legacy]
endpoints = ["127.0.0.1:8081"]

[upstreams.catalog]
endpoints = ["127.0.0.1:8091"]

[[routes]]
name = "products"
match = { path = "/api/products/**" }
to = "catalog"
stage = "shadow"

[routes.shadow]
sample = 0.5
compare = { status = true, headers = ["content-type"], body = true }
ignore = ["/generated_at", "/items/*/updated_at"]
numeric_tolerance = 0.01
array_order = "multiset"
max_body = 65536
writes = "dry-run"
learn_noise = true
redact_headers = ["authorization", "x-api-key"]

[[routes]]
name = "orders"
match = { path = "/api/orders/**" }
to = "catalog"
stage = "shadow"
"#;

/// SHADOW with a dry-run secret configured (a `[gateway]` table at the end, so the line
/// numbers of SHADOW stay).
fn shadow_src() -> String {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let file = FILE.get_or_init(|| {
        let f = std::env::temp_dir().join(format!("strangler-config-test-{}.secret", std::process::id()));
        std::fs::write(&f, "config-test-secret-0123456789").unwrap();
        f
    });
    format!("{SHADOW}\n[gateway]\nshadow_secret_file = \"{}\"\n", file.display())
}

#[test]
fn shadow_tables_compile() {
    use crate::shadow::compare::ArrayOrder;
    use crate::shadow::policy::Writes;
    let t = load_str_offline("r.toml", &shadow_src()).unwrap();
    let p = t.routes[0].shadow.as_ref().unwrap();
    assert_eq!(p.sample, 0.5);
    assert_eq!(p.rules.headers, ["content-type"]);
    assert_eq!(p.rules.ignore.len(), 2);
    assert_eq!(p.rules.array_order, ArrayOrder::Multiset);
    assert_eq!((p.max_body, p.writes, p.learn_noise), (65536, Writes::DryRun, true));
    assert_eq!(p.redact_headers, ["authorization", "x-api-key"]);
    // stage shadow without a table mirrors with the defaults
    let d = t.routes[1].shadow.as_ref().unwrap();
    assert_eq!((d.sample, d.writes), (1.0, Writes::Skip));
    assert_eq!(d.redact_headers, ["authorization", "cookie", "set-cookie"]);
}

#[test]
fn shadow_errors_have_places_and_hints() {
    let src = shadow_src()
        .replace("sample = 0.5", "sample = 1.5")
        .replace("\"/generated_at\"", "\"generated_at\"")
        .replace("\"multiset\"", "\"bag\"")
        .replace("\"dry-run\"", "\"yes\"")
        .replace("learn_noise = true", "learn_noise = true\nlearn_nosie = true");
    let e = errors(&src);
    assert_eq!(e.len(), 5, "{e:#?}");
    assert!(e[0].starts_with("r.toml:18:10: error: sample 1.5 is outside 0.0–1.0") && e[0].contains("hint:"), "{e:?}");
    assert!(e[1].contains("must start with '/'"), "{e:?}");
    assert!(e[2].contains("unknown array_order \"bag\"") && e[2].contains("multiset"), "{e:?}");
    assert!(e[3].contains("unknown writes mode \"yes\"") && e[3].contains("dry-run"), "{e:?}");
    assert!(e[4].contains("unknown field `learn_nosie`"), "{e:?}");
    // a table on a legacy route, on_canary on a shadow route, a canary table without on_canary
    // a table on a legacy route is accepted and kept for contract checks, but mirrors nothing
    let src = shadow_src().replace("stage = \"shadow\"\n\n[routes.shadow]", "stage = \"legacy\"\n\n[routes.shadow]");
    let t = load_str("r.toml", &src, None).unwrap();
    assert!(t.routes[0].shadow.is_none(), "inactive at stage legacy");
    let rules = compare_rules("r.toml", &src).unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules.values().next().unwrap().ignore.iter().any(|p| p.as_str() == "/generated_at"));
    let src = shadow_src().replace("sample = 0.5", "sample = 0.5\non_canary = true");
    assert!(errors(&src)[0].contains("on_canary only applies"));
    let src = shadow_src()
        .replace("stage = \"shadow\"\n\n[routes.shadow]", "stage = \"canary\"\nweight = 5\n\n[routes.shadow]");
    assert!(load_str("r.toml", &src, None).unwrap().routes[0].shadow.is_none(), "canary without on_canary: inactive");
    let ok = src.replace("sample = 0.5", "sample = 0.5\non_canary = true");
    let t = load_str("r.toml", &ok, None).unwrap();
    assert!(t.routes[0].shadow.as_ref().unwrap().on_canary);
}

#[test]
fn dry_run_writes_need_the_shared_secret() {
    // SHADOW mirrors writes as dry runs: without a secret the services would commit them
    let e = errors(SHADOW);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("r.toml:24:10: error: writes = \"dry-run\" needs the dry-run secret"), "{e:?}");
    assert!(e[0].contains("shadow_secret_env"), "{e:?}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "a-shared-secret-0123456789\n").unwrap();
    let with_file = format!("[gateway]\nshadow_secret_file = \"{}\"\n{SHADOW}", file.display());
    let t = load_str("r.toml", &with_file, None).unwrap();
    let v = t.settings.dry_run_header.as_ref().unwrap();
    assert_eq!(v.to_str().unwrap(), "1; secret=a-shared-secret-0123456789");
    assert!(v.is_sensitive() && !format!("{:?}", t.settings).contains("a-shared-secret"));

    // unreadable or unset: an error at the key, and `check --no-resolve` does not read it
    let unset = format!("[gateway]\nshadow_secret_env = \"STRANGLER_CONFIG_TEST_UNSET\"\n{SHADOW}");
    let e = errors(&unset);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("r.toml:2:21: error: cannot read the dry-run secret: environment variable"), "{e:?}");
    assert!(load_str_offline("r.toml", &unset).unwrap().settings.dry_run_header.is_none());
    std::fs::write(&file, "short").unwrap();
    assert!(errors(&with_file)[0].contains("16–512 characters"));
    let both = format!("[gateway]\nshadow_secret_env = \"X\"\nshadow_secret_file = \"/x\"\n{SHADOW}");
    assert!(errors(&both)[0].contains("only one of"));
}

#[test]
fn stage_needs_to_and_canary_needs_weight() {
    let src = GOOD.replace("to = \"catalog\"\n", "").replace("weight = 10\n", "");
    let e = errors(&src);
    assert!(e.iter().any(|m| m.contains("needs `to`")), "{e:?}");
    assert!(e.iter().any(|m| m.contains("needs a weight")), "{e:?}");
}

const NAMED: &str = r#"
[defaults]
upstream = "legacy"

[upstreams.legacy]
endpoints = ["legacy-monolith:8081", "10.0.0.9:8081"]

[upstreams.svc]
endpoints = ["nowhere.invalid:8091"]
"#;

fn fake_dns(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    match host {
        "legacy-monolith" => Ok(vec![SocketAddr::from(([10, 0, 0, 2], port)), SocketAddr::from(([10, 0, 0, 1], port))]),
        _ => Err(std::io::Error::other("no such host")),
    }
}

#[test]
fn endpoint_syntax_table() {
    use EndpointSpec::*;
    let cases: &[(&str, Option<EndpointSpec>)] = &[
        ("127.0.0.1:8081", Some(Addr("127.0.0.1:8081".parse().unwrap()))),
        ("[::1]:8081", Some(Addr("[::1]:8081".parse().unwrap()))),
        ("legacy-monolith:8081", Some(Host("legacy-monolith".into(), 8081))),
        ("orders.shop.svc.cluster.local:80", Some(Host("orders.shop.svc.cluster.local".into(), 80))),
        ("localhost:1", Some(Host("localhost".into(), 1))),
        ("legacy-monolith", None),
        ("legacy-monolith:0", None),
        ("legacy-monolith:http", None),
        ("legacy monolith:80", None),
        ("-bad:80", None),
        ("a..b:80", None),
        ("300.1.1.1:80", None),
        (":80", None),
        ("http://x:80", None),
    ];
    for (s, want) in cases {
        assert_eq!(parse_endpoint(s).ok(), *want, "{s}");
    }
}

#[test]
fn host_names_resolve_at_load_and_unresolvable_ones_are_errors_with_a_place() {
    let err = load_str_with("r.toml", NAMED, None, &fake_dns).unwrap_err();
    assert_eq!(err.issues.len(), 1, "{err}");
    let i = &err.issues[0];
    assert_eq!((i.line, i.column), (9, 14), "{err}");
    assert!(i.message.contains("\"nowhere.invalid:8091\" does not resolve"), "{err}");

    let ok = NAMED.replace("nowhere.invalid:8091", "legacy-monolith:8091");
    let t = load_str_with("r.toml", &ok, None, &fake_dns).unwrap();
    let addrs: Vec<String> = t.upstreams[0].endpoints.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(addrs, ["10.0.0.1:8081", "10.0.0.2:8081", "10.0.0.9:8081"]);
    assert_eq!(t.upstreams[0].endpoints[0].host.as_deref(), Some("legacy-monolith:8081"));
    assert_eq!(t.upstreams[0].endpoints[2].host, None);

    // a reload while DNS fails keeps the addresses the serving table has for that name
    let down = |_: &str, _: u16| -> std::io::Result<Vec<SocketAddr>> { Err(std::io::Error::other("timeout")) };
    let t2 = load_str_with("r.toml", &ok, Some(&t), &down).unwrap();
    assert_eq!(t2.upstreams[0].endpoints.len(), 3);
    assert!(Arc::ptr_eq(&t2.upstreams[0].endpoints[0], &t.upstreams[0].endpoints[0]), "endpoint state carried over");
}

#[test]
fn localhost_resolves_with_the_system_resolver() {
    let src = NAMED.replace("nowhere.invalid:8091", "localhost:8091").replace("legacy-monolith:8081", "localhost:8081");
    let t = load_str("r.toml", &src, None).unwrap();
    assert!(t.upstreams[1].endpoints.iter().all(|e| e.addr.ip().is_loopback() && e.addr.port() == 8091));
}

#[test]
fn upstream_tls_and_protocol_are_checked() {
    let base = "[defaults]\nupstream = \"legacy\"\n\n[upstreams.legacy]\nendpoints = [\"127.0.0.1:8081\"]\n";
    let e = errors(&format!("{base}tls = {{}}\nprotocol = \"h3\"\n"));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("r.toml:6:7: error: TLS to an IP address needs `sni`"), "{e:?}");
    assert!(e[1].contains("unknown protocol \"h3\""), "{e:?}");
    let e = errors(&format!("{base}protocol = \"auto\"\n"));
    assert!(e[0].contains("protocol \"auto\" needs TLS"), "{e:?}");
    let e = errors(&format!("{base}tls = {{ sni = \"legacy.internal\", ca_file = \"/nonexistent/ca.pem\" }}\n"));
    assert!(e[0].contains("cannot read certificates from /nonexistent/ca.pem"), "{e:?}");
    // offline checks read no files
    load_str_offline("r.toml", &format!("{base}tls = {{ sni = \"l\", ca_file = \"/nonexistent/ca.pem\" }}\n")).unwrap();
    let t = load_str("r.toml", &format!("{base}tls = {{ verify = false }}\nprotocol = \"auto\"\n"), None).unwrap();
    assert_eq!(t.upstreams[0].protocol, crate::table::UpstreamProtocol::Auto);
    assert!(!t.upstreams[0].tls.as_ref().unwrap().verify);
}

#[test]
fn edge_keys_have_defaults_and_their_errors_have_places() {
    let t = load_str("r.toml", GOOD, None).unwrap();
    assert_eq!(t.settings.client_header_timeout, Duration::from_secs(60), "nginx's client_header_timeout");
    assert_eq!(t.settings.client_keepalive_timeout, Duration::from_secs(75), "nginx's keepalive_timeout");
    assert_eq!(t.settings.max_connections_per_client, 512);
    let admin = "admin_listen = \"127.0.0.1:9901\"";
    let off = GOOD.replace(
        admin,
        &format!(
            "{admin}\nclient_header_timeout = \"0s\"\nmax_connections_per_client = 0\nclient_keepalive_timeout = \"0s\""
        ),
    );
    let t = load_str("r.toml", &off, None).unwrap();
    let s = &t.settings;
    assert_eq!(
        (s.client_header_timeout, s.max_connections_per_client, s.client_keepalive_timeout),
        (Duration::ZERO, 0, Duration::ZERO)
    );
    let set = GOOD.replace(admin, &format!("{admin}\nclient_keepalive_timeout = \"1500ms\""));
    let t = load_str("r.toml", &set, None).unwrap();
    assert_eq!(t.settings.client_keepalive_timeout, Duration::from_millis(1500));
    let bad = GOOD.replace(
        admin,
        &format!(
            "{admin}\nclient_header_timeout = \"soon\"\nmax_connections_per_client = -1\nclient_keepalive_timeout = \"75\""
        ),
    );
    let e = errors(&bad);
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].starts_with("r.toml:5:25: error:") && e[0].contains("hint:"), "{e:?}");
    assert!(e[1].starts_with("r.toml:6:30: error: max_connections_per_client -1 is outside 0–1000000"), "{e:?}");
    assert!(e[2].starts_with("r.toml:7:28: error:") && e[2].contains("hint:"), "{e:?}");
}

#[test]
fn request_buffering_is_on_by_default_routes_inherit_or_override_and_bad_values_have_places() {
    let t = load_str("r.toml", GOOD, None).unwrap();
    assert!(t.settings.request_buffering && t.routes.iter().all(|r| r.request_buffering));
    let admin = "admin_listen = \"127.0.0.1:9901\"";
    let src = GOOD
        .replace(admin, &format!("{admin}\nrequest_buffering = \"off\""))
        .replace("timeout = \"2s\"\n", "timeout = \"2s\"\nrequest_buffering = \"on\"\n");
    let t = load_str("r.toml", &src, None).unwrap();
    assert!(!t.settings.request_buffering);
    let by_name = |n: &str| t.routes.iter().find(|r| r.name == n).unwrap().request_buffering;
    assert!(by_name("products"), "the route's own value");
    assert!(!by_name("order"), "[gateway]'s value");
    let bad = GOOD
        .replace(admin, &format!("{admin}\nrequest_buffering = \"yes\""))
        .replace("timeout = \"2s\"\n", "timeout = \"2s\"\nrequest_buffering = \"always\"\n");
    let e = errors(&bad);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("r.toml:5:21: error: unknown request_buffering \"yes\""), "{e:?}");
    assert!(e[0].contains("hint:"), "{e:?}");
    assert!(e[1].starts_with("r.toml:27:21: error: unknown request_buffering \"always\""), "{e:?}");
}

#[test]
fn a_reload_that_keeps_every_match_shares_the_router_and_one_that_changes_a_match_rebuilds_it() {
    let h = http::HeaderMap::new();
    let find =
        |t: &RouteTable, path: &str| t.find(None, path, &http::Method::GET, &h).map(|i| t.routes[i].name.clone());
    let first = load_str("t.toml", GOOD, None).unwrap();
    // a stage, a timeout and a comment change: same hosts, patterns, methods and headers
    let staged = GOOD
        .replace("timeout = \"2s\"", "timeout = \"3s\"")
        .replace("stage = \"legacy\"", "stage = \"legacy\"\n# moved");
    let second = load_str("t.toml", &staged, Some(&first)).unwrap();
    assert!(Arc::ptr_eq(&first.router, &second.router), "unchanged matches: the router is shared");
    assert_eq!(second.routes[0].timeout, Duration::from_secs(3));
    assert_eq!(find(&second, "/api/orders/7").as_deref(), Some("order"));
    // a changed pattern, a changed method list, a reordered file: each rebuilds the router
    let moved = GOOD.replace("/api/orders/{id}", "/api/v2/orders/{id}");
    let third = load_str("t.toml", &moved, Some(&second)).unwrap();
    assert!(!Arc::ptr_eq(&second.router, &third.router));
    assert_eq!(find(&third, "/api/orders/7"), None);
    assert_eq!(find(&third, "/api/v2/orders/7").as_deref(), Some("order"));
    let methods = GOOD.replace("methods = [\"GET\"]", "methods = [\"POST\"]");
    let fourth = load_str("t.toml", &methods, Some(&first)).unwrap();
    assert!(!Arc::ptr_eq(&first.router, &fourth.router));
    assert_eq!(find(&fourth, "/api/orders/7"), None, "GET no longer matches the POST-only route");
    let (head, orders) = GOOD.split_at(GOOD.find("[[routes]]\nname = \"order\"").unwrap());
    let products = &head[head.find("[[routes]]").unwrap()..];
    let reordered = format!("{}{orders}\n{products}", &head[..head.find("[[routes]]").unwrap()]);
    let fifth = load_str("t.toml", &reordered, Some(&first)).unwrap();
    assert_eq!(fifth.routes[0].name, "order");
    assert!(!Arc::ptr_eq(&first.router, &fifth.router), "route indices moved: rebuilt");
    assert_eq!(find(&fifth, "/api/orders/7").as_deref(), Some("order"));
    assert_eq!(find(&fifth, "/api/products/1").as_deref(), Some("products"));
}

/// The admin API open to the network is an error where the token is read (run and reload); on
/// loopback it is a local setup (a warning at start), and an offline `check` reads no secret.
#[test]
fn an_admin_api_open_to_the_network_is_an_error() {
    let open = GOOD.replace("admin_listen = \"127.0.0.1:9901\"", "admin_listen = \"0.0.0.0:9901\"");
    let e = errors(&open);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("r.toml:4:16: error: the admin API would be open on 0.0.0.0:9901"), "{e:?}");
    let unset = open.replace("[gateway]\n", "[gateway]\nadmin_token_env = \"STRANGLER_TEST_UNSET_TOKEN_VAR\"\n");
    let e = errors(&unset);
    assert!(e[0].contains("names $STRANGLER_TEST_UNSET_TOKEN_VAR, which is unset or empty"), "{e:?}");
    let with_token = open.replace("[gateway]\n", "[gateway]\nadmin_token = \"t\"\n");
    assert!(load_str("r.toml", &with_token, None).is_ok());
    assert!(load_str_offline("r.toml", &open).is_ok(), "check without secrets");
    assert!(load_str("r.toml", GOOD, None).is_ok(), "loopback without a token");
}
