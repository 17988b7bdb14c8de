//! The effective route table as people and tools read it: JSON (admin API, `check --json`) and
//! aligned text (`check`).

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use crate::router::HostMatch;
use crate::stage::Stage;
use crate::table::{Balance, RouteTable, StickyKey};

impl RouteTable {
    /// The effective configuration as JSON (admin API, `check`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let up_name = |i: usize| self.upstreams[i].name.clone();
        json!({
            "version": self.version,
            "loaded_at_unix": self.loaded_at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "listen": self.settings.listen.to_string(),
            "admin_listen": self.settings.admin_listen.to_string(),
            "defaults": { "upstream": up_name(self.legacy), "request_timeout_ms": self.settings.request_timeout.as_millis() as u64 },
            "upstreams": self.upstreams.iter().map(|u| json!({
                "name": u.name,
                "balance": match u.balance { Balance::RoundRobin => "round_robin", Balance::LeastConn => "least_conn" },
                "connect_timeout_ms": u.connect_timeout.as_millis() as u64,
                "read_timeout_ms": u.read_timeout.as_millis() as u64,
                "health_check": u.health.as_ref().map(|h| json!({"path": h.path, "interval_ms": h.interval.as_millis() as u64})),
                "endpoints": u.endpoints.iter().map(|e| json!({
                    "addr": e.addr.to_string(),
                    "host": e.host,
                    "healthy": e.healthy.load(Ordering::Relaxed),
                    "ejected": e.ejected(),
                    "inflight": e.inflight.load(Ordering::Relaxed),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "routes": self.routes.iter().map(|r| json!({
                "name": r.name,
                "path": r.pattern.source,
                "methods": r.methods.as_ref().map(|m| m.iter().map(|m| m.as_str().to_string()).collect::<Vec<_>>()),
                "headers": r.headers.iter().map(|h| (h.name.as_str().to_string(), h.value.to_str().unwrap_or("").to_string())).collect::<std::collections::BTreeMap<_, _>>(),
                "stage": r.stage.as_str(),
                "to": r.to.map(up_name),
                "weight": r.canary.weight_bp / 100,
                "sticky": r.canary.sticky.as_ref().map(|s| match s { StickyKey::Header(h) => format!("header:{h}"), StickyKey::Cookie(c) => format!("cookie:{c}") }),
                "fallback": r.fallback_legacy.then_some("legacy"),
                "timeout_ms": r.timeout.as_millis() as u64,
                "retry": { "attempts": r.retry.attempts, "on_5xx": r.retry.on_5xx, "budget": r.retry.budget_ratio },
                "host": r.host.as_ref().map(HostMatch::source),
                "owner": r.owner,
                "description": r.description,
                "labels": r.labels,
                "auth": r.auth.as_ref().map(|a| json!({
                    "methods": a.methods.names(),
                    "consumers": a.consumers.as_ref().map(|c| c.iter().filter_map(|i| self.auth.consumers.get(*i).map(|c| c.name.clone())).collect::<Vec<_>>()),
                    "claims": a.claims.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<std::collections::BTreeMap<_, _>>(),
                    "forward_credentials": a.forward_credentials,
                })),
                "rate_limits": r.limits.iter().flat_map(|l| l.iter()).map(|l| json!({
                    "by": l.name, "rate": l.rate, "window_s": l.window.as_secs(), "burst": l.burst, "shared": l.shared,
                })).collect::<Vec<_>>(),
                "cors": r.cors.is_some(),
                "rewrite": r.rewrite.is_some(),
            })).collect::<Vec<_>>(),
            "consumers": self.auth.consumers.iter().map(|c| json!({"name": c.name, "description": c.description})).collect::<Vec<_>>(),
        })
    }

    /// The effective route table as aligned text (`check`).
    pub fn to_text(&self) -> String {
        let mut rows = vec![[
            "ROUTE".to_string(),
            "METHODS".into(),
            "PATH".into(),
            "STAGE".into(),
            "TO".into(),
            "WEIGHT".into(),
            "STICKY".into(),
            "FALLBACK".into(),
            "TIMEOUT".into(),
            "RETRY".into(),
            "AUTH".into(),
            "OWNER".into(),
        ]];
        for r in &self.routes {
            let mut path = match &r.host {
                Some(h) => format!("{}{}", h.source(), r.pattern.source),
                None => r.pattern.source.clone(),
            };
            for h in &r.headers {
                path.push_str(&format!(" [{}={}]", h.name, h.value.to_str().unwrap_or("?")));
            }
            rows.push([
                r.name.clone(),
                r.methods
                    .as_ref()
                    .map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","))
                    .unwrap_or_else(|| "*".into()),
                path,
                r.stage.as_str().into(),
                r.to.map(|i| self.upstreams[i].name.clone()).unwrap_or_else(|| "-".into()),
                if r.stage == Stage::Canary { format!("{}%", r.canary.weight_bp / 100) } else { "-".into() },
                match &r.canary.sticky {
                    Some(StickyKey::Header(h)) => format!("header:{h}"),
                    Some(StickyKey::Cookie(c)) => format!("cookie:{c}"),
                    None => "-".into(),
                },
                if r.fallback_legacy { "legacy".into() } else { "-".into() },
                humantime::format_duration(r.timeout).to_string(),
                if r.retry.attempts > 0 {
                    format!("{}{}", r.retry.attempts, if r.retry.on_5xx { "+5xx" } else { "" })
                } else {
                    "-".into()
                },
                match &r.auth {
                    Some(a) => a.methods.names().join("|"),
                    None => "-".into(),
                },
                r.owner.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        let mut out = crate::columns::render(&rows);
        for r in self.routes.iter().filter(|r| r.description.is_some() || !r.labels.is_empty()) {
            let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let desc = r.description.as_deref().unwrap_or("");
            out.push_str(&format!(
                "route {}: {desc}{}{}\n",
                r.name,
                if labels.is_empty() { "" } else { " " },
                labels.join(" ")
            ));
        }
        out.push_str(&format!("default -> {}  (version {})\n", self.upstreams[self.legacy].name, self.version));
        for u in &self.upstreams {
            let eps: Vec<String> = u
                .endpoints
                .iter()
                .map(|e| match &e.host {
                    Some(h) => format!("{h}={}", e.addr),
                    None => e.addr.to_string(),
                })
                .collect();
            out.push_str(&format!("upstream {} = [{}]\n", u.name, eps.join(", ")));
        }
        out
    }
}
