//! `strangler-gateway shadow report`: fetches the report from a running gateway's admin API.

use serde_json::Value;

use crate::admin_client::{call, encode_segment};

/// GET `/admin/shadow` (or `/admin/shadow/{route}`) from `admin` with the bearer `token`.
pub fn fetch(admin: &str, token: Option<&str>, route: Option<&str>) -> anyhow::Result<Value> {
    let path = match route {
        Some(r) => format!("/admin/shadow/{}", encode_segment(r)),
        None => "/admin/shadow".to_string(),
    };
    call(reqwest::Method::GET, admin, &path, token)
}
