//! Where a route sends its traffic ([`Stage`]) and which side answered a request ([`Side`]):
//! the two words every other module speaks (config, routing, proxy, metrics, shadow).

/// Where a route sends its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Legacy answers everything.
    Legacy,
    /// Legacy answers; the request is mirrored to the extracted upstream (see `crate::shadow`).
    Shadow,
    /// A weighted split between legacy and extracted.
    Canary,
    /// The extracted upstream answers everything.
    Extracted,
}

impl Stage {
    /// The stage as written in routes.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Legacy => "legacy",
            Stage::Shadow => "shadow",
            Stage::Canary => "canary",
            Stage::Extracted => "extracted",
        }
    }

    /// Parses a stage as written in routes.toml.
    pub fn parse(s: &str) -> Option<Stage> {
        match s {
            "legacy" => Some(Stage::Legacy),
            "shadow" => Some(Stage::Shadow),
            "canary" => Some(Stage::Canary),
            "extracted" => Some(Stage::Extracted),
            _ => None,
        }
    }
}

/// Which side answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Legacy,
    Extracted,
}

impl Side {
    /// Label used in metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Legacy => "legacy",
            Side::Extracted => "extracted",
        }
    }
}
