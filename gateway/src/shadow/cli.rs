//! `strangler-gateway shadow report`: fetches the report from a running gateway's admin API.

use anyhow::{bail, Context};
use serde_json::Value;

/// GET `/admin/shadow` (or `/admin/shadow/{route}`) from `admin` with the bearer `token`.
pub fn fetch(admin: &str, token: Option<&str>, route: Option<&str>) -> anyhow::Result<Value> {
    let base = admin.trim_end_matches('/');
    let url = match route {
        Some(r) => format!("{base}/admin/shadow/{}", encode_segment(r)),
        None => format!("{base}/admin/shadow"),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder().no_proxy().timeout(std::time::Duration::from_secs(10)).build()?;
        let mut req = client.get(&url);
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
            bail!("{url}: {status}: {}", text.trim());
        }
        serde_json::from_str(&text).with_context(|| format!("{url}: not JSON"))
    })
}

fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
