//! [`Denial`]: why a request is refused, shared by the credential checks of `auth` and
//! `auth::jwt` (its own module so that `jwt` need not import its parent).

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// 401: no credential, or a bad one. `reason` is the metric label (`missing`, `invalid`,
    /// `expired`, `unknown_key`, ...), `message` what the client is told; `token` when the
    /// credential judged was a bearer token.
    Unauthorized { reason: &'static str, message: &'static str, token: bool },
    /// 403: a known caller this route does not allow.
    Forbidden { reason: &'static str, message: &'static str },
}

impl Denial {
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::Unauthorized { reason, .. } | Denial::Forbidden { reason, .. } => reason,
        }
    }
}
