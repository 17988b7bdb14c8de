//! Background work beside the proxy, on its own thread and single-threaded runtime, started
//! from `main`: reload on SIGHUP, active health checks of upstream endpoints, periodic
//! re-resolution of endpoint host names, and the rollout controller. None of it runs on the proxy's threads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::system_resolve;
use crate::reload::ConfigStore;
use crate::rollout::controller::Controller;

/// Starts the background thread; returns once its signal handler is installed (so a SIGHUP
/// right after startup is not lost).
pub fn spawn(store: Arc<ConfigStore>, rollouts: Option<Arc<Controller>>) -> anyhow::Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    std::thread::Builder::new().name("background".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e.into()));
                return;
            }
        };
        rt.block_on(async move {
            let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            tokio::spawn(health_checks(store.clone()));
            if let Some(c) = rollouts {
                tokio::spawn(c.run());
            }
            tokio::spawn(resolve_names(store.clone()));
            let _ = ready_tx.send(Ok(()));
            while hup.recv().await.is_some() {
                let s = store.clone();
                let _ = tokio::task::spawn_blocking(move || s.reload("sighup")).await;
            }
        });
    })?;
    ready_rx.recv().unwrap_or_else(|_| Err(anyhow::anyhow!("background thread died")))
}

/// Resolves endpoint host names again every `[gateway] resolve_interval`.
async fn resolve_names(store: Arc<ConfigStore>) {
    loop {
        let every = store.current().settings.resolve_interval;
        tokio::time::sleep(every).await;
        let s = store.clone();
        let _ = tokio::task::spawn_blocking(move || s.refresh_names(&system_resolve)).await;
    }
}

/// Probes every endpoint of upstreams with a `health_check`, each at its interval.
async fn health_checks(store: Arc<ConfigStore>) {
    let mut last: std::collections::HashMap<(String, SocketAddr), Instant> = Default::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let table = store.current();
        for u in &table.upstreams {
            let Some(hc) = &u.health else { continue };
            for ep in &u.endpoints {
                let key = (u.name.clone(), ep.addr);
                if last.get(&key).is_some_and(|t| t.elapsed() < hc.interval) {
                    continue;
                }
                last.insert(key, Instant::now());
                let (ep, hc, name) = (ep.clone(), hc.clone(), u.name.clone());
                tokio::spawn(async move {
                    let ok = probe(ep.addr, &hc.path, hc.timeout).await;
                    if let Some(now) = ep.record_probe(ok, &hc) {
                        tracing::warn!(upstream = %name, endpoint = %ep.addr, healthy = now, "health check state changed");
                    }
                });
            }
        }
    }
}

async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: strangler-gateway-health\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = [0u8; 32];
        let n = s.read(&mut buf).await?;
        let head = std::str::from_utf8(&buf[..n]).unwrap_or("");
        let code: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok::<bool, std::io::Error>((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Ok(true)))
}
