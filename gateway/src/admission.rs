//! Admission: what a route asks of a request before it may go upstream — its credentials
//! (`auth`). Routes that ask nothing cost one `Option` check each. A refusal is a [`Reply`] the
//! proxy writes without contacting an upstream.

use http::header;
use pingora::http::RequestHeader;

use crate::auth::{self, Denial};
use crate::metrics::metrics;
use crate::respond::Reply;
use crate::table::{Route, RouteTable};

/// What admission learnt about a request it let in.
#[derive(Debug, Clone, Copy, Default)]
pub struct Admitted {
    /// The consumer it authenticated as (index into the table's consumers).
    pub consumer: Option<usize>,
}

/// Runs the route's checks on `req`; on success the request carries the caller's identity
/// (gateway-owned headers, the credential removed unless forwarded).
pub fn admit(table: &RouteTable, route: &Route, req: &mut RequestHeader) -> Result<Admitted, Reply> {
    let mut admitted = Admitted::default();
    if let Some(rule) = &route.auth {
        match auth::authenticate(&table.auth, rule, &req.headers) {
            Ok(id) => {
                auth::apply(&table.auth, rule, &id, req);
                admitted.consumer = id.consumer;
            }
            Err(denial) => {
                metrics().auth_denied.with_label_values(&[route.name.as_str(), denial.reason()]).inc();
                return Err(refusal(table, rule.methods, &denial));
            }
        }
    }
    Ok(admitted)
}

/// 401 with the challenges of the route's methods, or 403.
fn refusal(table: &RouteTable, methods: auth::Methods, denial: &Denial) -> Reply {
    match denial {
        Denial::Unauthorized { message, .. } => {
            let mut r = Reply::new(401, "unauthorized", message);
            for c in auth::challenges(&table.auth, methods, denial) {
                r = r.header(header::WWW_AUTHENTICATE, c);
            }
            r
        }
        Denial::Forbidden { message, .. } => Reply::new(403, "forbidden", message),
    }
}
