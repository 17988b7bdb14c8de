//! The JSON error body every side answers with: `{"error": {"code": "...", "message": "..."}}`,
//! plus `request_id` when the gateway answers itself. It is the legacy monolith's shape, so a
//! client (and a shadow comparison) sees the same shape whoever answered.

use serde::{Deserialize, Serialize};

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable (`not_found`, `bad_request`, `upstream_timeout`, ...).
    pub code: String,
    /// For people; never internal detail.
    pub message: String,
    /// The gateway's request id, when the gateway answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { error: ErrorDetail { code: code.into(), message: message.into(), request_id: None } }
    }

    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.error.request_id = Some(id.into());
        self
    }

    /// The body as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("strings always serialize")
    }

    /// The body as a JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("strings always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        assert_eq!(
            ErrorBody::new("not_found", "order 7 not found").to_json(),
            r#"{"error":{"code":"not_found","message":"order 7 not found"}}"#
        );
        let v = ErrorBody::new("bad_request", "no").with_request_id("abc").to_value();
        assert_eq!(v["error"]["request_id"], "abc");
        let back: ErrorBody = serde_json::from_value(v).unwrap();
        assert_eq!(back.error.code, "bad_request");
    }
}
