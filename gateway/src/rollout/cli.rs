//! `strangler-gateway rollout`, `history` and `diff`: the operator's commands, talking to a running
//! gateway's admin API.

use std::fmt::Write;

use anyhow::Context;
use serde_json::Value;

use super::plan::Placement;
use super::state::Overlay;
use crate::admin_client::{call, encode_segment};
use crate::config::load_offline_with_overlay;
use crate::stage::Stage;

/// `rollout status [--route R]`.
pub fn status(admin: &str, token: Option<&str>, route: Option<&str>) -> anyhow::Result<Value> {
    let path = match route {
        Some(r) => format!("/admin/rollouts/{}", encode_segment(r)),
        None => "/admin/rollouts".into(),
    };
    call(reqwest::Method::GET, admin, &path, token)
}

/// `rollout pause|resume|promote|abort --route R`.
pub fn act(admin: &str, token: Option<&str>, route: &str, action: &str) -> anyhow::Result<Value> {
    let path = format!("/admin/rollouts/{}/{}", encode_segment(route), encode_segment(action));
    call(reqwest::Method::POST, admin, &path, token)
}

/// `history [--route R] [--limit N]`.
pub fn history(admin: &str, token: Option<&str>, route: Option<&str>, limit: usize) -> anyhow::Result<Value> {
    let mut path = format!("/admin/history?limit={limit}");
    if let Some(r) = route {
        path.push_str(&format!("&route={}", encode_segment(r)));
    }
    call(reqwest::Method::GET, admin, &path, token)
}

/// One line per rollout.
pub fn render_status(v: &Value) -> String {
    let list: Vec<&Value> = match v.get("rollouts").and_then(Value::as_array) {
        Some(a) => a.iter().collect(),
        None => vec![v],
    };
    let mut out = String::new();
    for r in list {
        let remaining = r["step_remaining_ms"].as_u64().map(|ms| format!(", {}s left", ms / 1000)).unwrap_or_default();
        let paused = if r["paused"] == true {
            format!(" PAUSED ({})", r["paused_reason"].as_str().unwrap_or("-"))
        } else {
            String::new()
        };
        let check = &r["last_check"];
        let verdict = check["verdict"].as_str().unwrap_or("not analysed yet");
        let _ = writeln!(
            out,
            "{}: step {}/{} {} (serving {}, cap {}){remaining}, next {}; last analysis {verdict}, {}/{} failed{paused}",
            r["route"].as_str().unwrap_or("?"),
            r["position"],
            r["steps"],
            r["step"].as_str().unwrap_or("?"),
            r["serving"].as_str().unwrap_or("?"),
            r["plan"].as_str().unwrap_or("?"),
            r["next"].as_str().unwrap_or("-"),
            r["failures"],
            r["failure_limit"],
        );
        for g in check["gates"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "    {:<11} {:<12} {}",
                g["gate"].as_str().unwrap_or("?"),
                g["verdict"].as_str().unwrap_or("?"),
                g["detail"].as_str().unwrap_or("")
            );
        }
    }
    if out.is_empty() {
        out.push_str("no rollouts\n");
    }
    out
}

/// One line per event.
pub fn render_history(v: &Value) -> String {
    let mut out = String::new();
    for e in v["events"].as_array().into_iter().flatten() {
        let at = e["at_unix_ms"].as_u64().map(|ms| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
        });
        let _ = writeln!(
            out,
            "{} {:<12} {:<8} {} -> {}  by {}: {}",
            at.unwrap_or_default(),
            e["route"].as_str().unwrap_or("?"),
            e["kind"].as_str().unwrap_or("?"),
            e["from"].as_str().unwrap_or("?"),
            e["to"].as_str().unwrap_or("?"),
            e["who"].as_str().unwrap_or("?"),
            e["why"].as_str().unwrap_or(""),
        );
    }
    if out.is_empty() {
        out.push_str("no events\n");
    }
    out
}

/// `diff routes.toml`: what reloading `file` would change in the running gateway, route by route
/// (stage and weight as they would be served, with the running rollouts' positions applied).
/// Returns the lines, empty when nothing would change; errors when the file does not compile.
pub fn diff(admin: &str, token: Option<&str>, file: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let src = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let running = call(reqwest::Method::GET, admin, "/admin/routes", token)?;
    let rollouts = call(reqwest::Method::GET, admin, "/admin/rollouts", token).unwrap_or(Value::Null);
    let mut overlay = Overlay::new();
    for r in rollouts["rollouts"].as_array().into_iter().flatten() {
        let (Some(name), Some(stage)) = (r["route"].as_str(), r["step_stage"].as_str().and_then(Stage::parse)) else {
            continue;
        };
        let weight_bp = (r["step_weight"].as_f64().unwrap_or(0.0) * 100.0).round() as u32;
        overlay.insert(name.to_string(), Placement { stage, weight_bp });
    }
    let table =
        load_offline_with_overlay(&file.display().to_string(), &src, &overlay).map_err(|e| anyhow::anyhow!("{e}"))?;
    let label = |stage: &str, weight: f64| {
        Stage::parse(stage)
            .map_or(stage.to_string(), |s| Placement { stage: s, weight_bp: (weight * 100.0) as u32 }.label())
    };
    let before: Vec<(String, String)> = running["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("").to_string(),
                label(r["stage"].as_str().unwrap_or(""), r["weight"].as_f64().unwrap_or(0.0)),
            )
        })
        .collect();
    let mut out = Vec::new();
    for r in &table.routes {
        let after = Placement { stage: r.stage, weight_bp: r.canary.weight_bp }.label();
        match before.iter().find(|(n, _)| n == &r.name) {
            Some((_, b)) if *b == after => {}
            Some((_, b)) => out.push(format!("route {}: {b} -> {after}", r.name)),
            None => out.push(format!("route {}: (new) -> {after}", r.name)),
        }
    }
    for (name, b) in &before {
        if !table.routes.iter().any(|r| &r.name == name) {
            out.push(format!("route {name}: {b} -> (removed)"));
        }
    }
    Ok(out)
}
