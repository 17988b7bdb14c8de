//! What the kit's modules share: the application state every route sees ([`KitState`]) and the
//! per-request id ([`RequestId`]). It sits below `service`, `db`, `api` and `health`, which all
//! import it, so none of them has to import another.

use std::sync::Arc;

use deadpool_postgres::Pool;
use strangler_wire::SharedSecret;

use crate::metrics::Metrics;

/// What handlers and the kit's own routes share.
#[derive(Clone)]
pub struct KitState {
    /// The service's name (in logs, metrics and health bodies).
    pub name: &'static str,
    /// The service's own database. Not for handlers: they get their connection from the
    /// request's unit of work (`Db`), which a dry run rolls back; a connection taken from the
    /// pool directly would commit a dry run's writes.
    pub(crate) pool: Pool,
    /// The service's metrics registry.
    pub metrics: Arc<Metrics>,
    /// The secret a dry-run header must carry to be honoured (`None`: no dry runs at all).
    pub(crate) shadow_secret: Option<Arc<SharedSecret>>,
}

impl KitState {
    /// True when this service honours authorised dry-run requests.
    pub fn dry_runs_enabled(&self) -> bool {
        self.shadow_secret.is_some()
    }
}

/// The request id of the current request (`x-request-id`, kept if the client or gateway sent
/// one, generated otherwise). Handlers may extract it with `Extension<RequestId>`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);
