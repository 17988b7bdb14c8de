//! strangler-wire: the contracts between processes, written once.
//!
//! The gateway and the extracted services (through `strangler-kit`) both depend on this crate,
//! so a header name, a header syntax or an error body shape cannot drift apart between them:
//!
//! - [`headers`]: the `x-strangler-*` namespace the gateway owns, and the shadow dry-run header
//!   with the shared secret that makes it trustworthy ([`SharedSecret`], [`DryRun`]).
//! - [`traceparent`]: W3C Trace Context `traceparent` parsing and formatting.
//! - [`error_body`]: the JSON error shape `{"error": {"code", "message"}}` every side answers with.
//!
//! No I/O besides [`SharedSecret::load`], no async, no HTTP types: both sides convert at their
//! edge.

#![forbid(unsafe_code)]

pub mod error_body;
pub mod headers;
pub mod traceparent;

pub use error_body::ErrorBody;
pub use headers::{
    DryRun, SecretError, SharedSecret, AUTH_METHOD_HEADER, CLAIM_HEADER_PREFIX, CONSUMER_HEADER, INTERNAL_PREFIX,
    SHADOW_HEADER,
};
pub use traceparent::TraceParent;
