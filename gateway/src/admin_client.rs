//! The CLI's side of the admin API: one blocking call to a running gateway's admin port, with the
//! bearer token, turning the answers an operator can act on (unreachable, 401, an error body)
//! into clear errors.

use anyhow::{bail, Context};
use serde_json::Value;

/// `method` `admin` + `path` with the bearer `token`; the JSON answer.
pub fn call(method: reqwest::Method, admin: &str, path: &str, token: Option<&str>) -> anyhow::Result<Value> {
    let url = format!("{}{path}", admin.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder().no_proxy().timeout(std::time::Duration::from_secs(10)).build()?;
        let mut req = client.request(method, &url).header("x-operator", operator());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            bail!("{url}: 401 unauthorized (pass --token or set STRANGLER_ADMIN_TOKEN)");
        }
        if !status.is_success() {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let msg = v["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| text.trim().to_string());
            bail!("{url}: {status}: {msg}");
        }
        serde_json::from_str(&text).with_context(|| format!("{url}: not JSON"))
    })
}

/// Who runs the CLI, for the audit trail (`$USER`, else "cli").
fn operator() -> String {
    std::env::var("USER").ok().filter(|u| !u.is_empty() && u.len() <= 64).unwrap_or_else(|| "cli".into())
}

/// Percent-encodes one path segment.
pub fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
