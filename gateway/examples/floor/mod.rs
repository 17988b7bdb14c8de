//! What the two benchmark floors (minimal_proxy, core_proxy) share: arguments, and the Pingora
//! server and listener with the gateway's own settings (one thread, no work stealing, pooled
//! upstreams, the client connection's L4 buffers).

/// `LISTEN UPSTREAM` from the command line, or exit 2 with a usage line naming `example`.
pub fn args(example: &str) -> (String, String) {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: {example} LISTEN UPSTREAM   (e.g. 127.0.0.1:8000 127.0.0.1:9000)");
        std::process::exit(2);
    };
    (listen, upstream)
}

/// A bootstrapped server configured as strangler-gateway configures its own.
pub fn server() -> pingora::server::Server {
    let conf = pingora::server::configuration::ServerConf {
        threads: 1,
        work_stealing: false,
        upstream_keepalive_pool_size: 512,
        // exit promptly on SIGTERM (Pingora's default grace period is 5 minutes)
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..Default::default()
    };
    let mut server = pingora::server::Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server
}

/// The listener at `listen`, with the gateway's plain-HTTP client buffers
/// (`strangler_gateway::edge::plain_listener`), or with an L4 read buffer of
/// `$FLOOR_L4_READ_BUFFER` bytes when that is set (65536: Pingora's default).
pub fn listener(listen: &str) -> pingora::listeners::ListenerConfig {
    let gateway = strangler_gateway::edge::plain_listener(listen);
    let Ok(read) = std::env::var("FLOOR_L4_READ_BUFFER") else { return gateway };
    let Ok(read) = read.parse::<usize>() else {
        eprintln!("FLOOR_L4_READ_BUFFER={read}: not a number of bytes");
        std::process::exit(2);
    };
    pingora::listeners::ListenerConfig::tcp(listen)
        .l4_buffer(pingora::listeners::L4BufferSettings::default().read(read))
}
