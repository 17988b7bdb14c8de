//! What the end-to-end tests share: moving a route through its stages in the stack's live
//! routes.toml, and the gateway's admin API to see the reload go through.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::Value;

/// Sets a route's stage (and canary weight) in the live routes.toml, keeping everything else.
pub fn set_stage(routes: &Path, route: &str, stage: &str, weight: Option<u8>) {
    let text = std::fs::read_to_string(routes).unwrap();
    let start =
        text.find(&format!("name = \"{route}\"\n")).unwrap_or_else(|| panic!("route {route} not in routes.toml"));
    let end = text[start..].find("[[routes]]").map(|i| start + i).unwrap_or(text.len());
    let block: Vec<String> = text[start..end]
        .lines()
        .filter(|l| !l.starts_with("weight ="))
        .flat_map(|l| {
            if l.starts_with("stage =") {
                let mut v = vec![format!("stage = \"{stage}\"")];
                if let Some(w) = weight {
                    v.push(format!("weight = {w}"));
                }
                v
            } else {
                vec![l.to_string()]
            }
        })
        .collect();
    let sep = if end < text.len() { "\n\n" } else { "\n" };
    let new = format!("{}{}{sep}{}", &text[..start], block.join("\n").trim_end(), &text[end..]);
    // Write-and-rename, as editors and ConfigMap updates do.
    let tmp = routes.with_extension("toml.tmp");
    std::fs::write(&tmp, new).unwrap();
    std::fs::rename(&tmp, routes).unwrap();
}

/// The gateway's admin API.
pub struct Admin {
    pub http: Client,
    pub url: String,
    pub token: String,
}

impl Admin {
    pub async fn get(&self, path: &str) -> Value {
        let r = self.http.get(format!("{}{path}", self.url)).bearer_auth(&self.token).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Waits until the gateway serves `route` at `stage` (the reload went through).
    pub async fn wait_stage(&self, route: &str, stage: &str, weight: Option<u8>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.get("/admin/routes").await;
            let r = v["routes"].as_array().unwrap().iter().find(|r| r["name"] == route).cloned().unwrap_or_default();
            let weight_ok = weight.is_none_or(|w| r["weight"].as_u64() == Some(u64::from(w)));
            if r["stage"] == stage && weight_ok {
                return;
            }
            let errors = self.get("/admin/config-errors").await;
            assert!(
                Instant::now() < deadline,
                "route {route} never reached stage {stage}: {r}; config errors: {errors}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The shadow report of `route`.
    pub async fn shadow(&self, route: &str) -> Value {
        self.get(&format!("/admin/shadow/{route}")).await
    }
}

/// The value of one series (its exact text, e.g. `x_total{a="b"}`) in a Prometheus text page.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
