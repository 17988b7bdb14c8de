//! The Data sync view's source: cdc-sync status endpoints named on the command line
//! (`--sync-status [NAME=]URL`, repeatable), polled every [`POLL`] on the admin runtime. The
//! dashboard shows the last answer of each, and how long ago it came when the endpoint stops
//! answering. Nothing here touches the proxy.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use super::sampler::now_ms;

/// How often each status endpoint is asked.
pub const POLL: Duration = Duration::from_secs(2);
/// How long one answer may take.
const TIMEOUT: Duration = Duration::from_millis(1500);

/// A cdc-sync status endpoint (`GET` answers cdc-sync's `/status` JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSource {
    /// What the dashboard calls it (the URL's host:port when not named).
    pub name: String,
    pub url: String,
}

impl SyncSource {
    /// Parses `NAME=URL` or `URL` (`http://` only: status ports are plain HTTP on a private
    /// network, like the admin port).
    pub fn parse(s: &str) -> Result<SyncSource, String> {
        let (name, url) = match s.split_once('=') {
            Some((n, u)) if !n.contains('/') && !n.contains(':') => (Some(n.trim()), u.trim()),
            _ => (None, s.trim()),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: expected an http:// URL, e.g. http://127.0.0.1:9902/status"))?;
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let name = match name {
            Some("") => return Err(format!("{s:?}: empty name before '='")),
            Some(n) => n.to_string(),
            None => authority.to_string(),
        };
        Ok(SyncSource { name, url: url.to_string() })
    }
}

#[derive(Debug, Clone, Default)]
struct Latest {
    /// When the last poll finished (Unix ms; 0 = never).
    polled_ms: u64,
    /// The last good answer and when it came.
    status: Option<(u64, Value)>,
    /// Why the last poll failed.
    error: Option<String>,
}

/// Polls the sources and keeps the latest answer of each.
#[derive(Debug)]
pub struct SyncPoller {
    sources: Vec<SyncSource>,
    latest: Mutex<Vec<Latest>>,
}

impl SyncPoller {
    pub fn new(sources: Vec<SyncSource>) -> Self {
        let latest = Mutex::new(vec![Latest::default(); sources.len()]);
        Self { sources, latest }
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Asks every source once, concurrently.
    pub async fn poll(&self, client: &reqwest::Client) {
        let answers = futures::future::join_all(self.sources.iter().map(|s| fetch(client, &s.url))).await;
        let now = now_ms();
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        for (l, answer) in latest.iter_mut().zip(answers) {
            l.polled_ms = now;
            match answer {
                Ok(v) => {
                    l.status = Some((now, v));
                    l.error = None;
                }
                Err(e) => l.error = Some(e),
            }
        }
    }

    /// The Data sync view: each source with its last answer (cdc-sync's `/status` as it is).
    pub fn to_json(&self) -> Value {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let sources: Vec<Value> = self
            .sources
            .iter()
            .zip(latest.iter())
            .map(|(s, l)| {
                json!({
                    "name": s.name,
                    "url": s.url,
                    "polled_ms": (l.polled_ms > 0).then_some(l.polled_ms),
                    "reachable": l.polled_ms > 0 && l.error.is_none(),
                    "error": l.error,
                    "status_ms": l.status.as_ref().map(|(t, _)| *t),
                    "status": l.status.as_ref().map(|(_, v)| v.clone()),
                })
            })
            .collect();
        json!({"poll_ms": POLL.as_millis() as u64, "sources": sources})
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let resp = client.get(url).timeout(TIMEOUT).send().await.map_err(|e| describe(&e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let v: Value = resp.json().await.map_err(|e| format!("not cdc-sync status JSON: {e}"))?;
    if !v.get("pipelines").is_some_and(Value::is_object) {
        return Err("not cdc-sync status JSON: no \"pipelines\" object".into());
    }
    Ok(v)
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {TIMEOUT:?}")
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_and_bare_sources() {
        assert_eq!(
            SyncSource::parse("catalog=http://127.0.0.1:9902/status").unwrap(),
            SyncSource { name: "catalog".into(), url: "http://127.0.0.1:9902/status".into() }
        );
        assert_eq!(SyncSource::parse("http://10.0.0.1:9902/status").unwrap().name, "10.0.0.1:9902");
        // an '=' in the query string is not a name
        assert_eq!(SyncSource::parse("http://h:1/status?a=b").unwrap().name, "h:1");
        assert!(SyncSource::parse("https://h/status").is_err());
        assert!(SyncSource::parse("=http://h/status").is_err());
        assert!(SyncSource::parse("x=http:///status").is_err());
    }

    #[tokio::test]
    async fn polls_keep_the_last_good_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/status",
            axum::routing::get(|| async { axum::Json(json!({"pipelines": {"forward": {"state": "streaming"}}})) }),
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let poller = SyncPoller::new(vec![
            SyncSource::parse(&format!("up=http://{addr}/status")).unwrap(),
            SyncSource::parse(&format!("http://{addr}/nope")).unwrap(),
        ]);
        // no pooled connection: the second poll must see the server gone
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        poller.poll(&client).await;
        let v = poller.to_json();
        assert_eq!(v["sources"][0]["reachable"], true);
        assert_eq!(v["sources"][0]["status"]["pipelines"]["forward"]["state"], "streaming");
        assert_eq!(v["sources"][1]["reachable"], false);
        assert_eq!(v["sources"][1]["error"], "HTTP 404 Not Found");
        server.abort();
        let _ = server.await;
        poller.poll(&client).await;
        let v = poller.to_json();
        assert_eq!(v["sources"][0]["reachable"], false);
        assert_eq!(v["sources"][0]["status"]["pipelines"]["forward"]["state"], "streaming", "the last answer stays");
    }
}
