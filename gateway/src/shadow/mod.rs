//! Shadow traffic: mirror a request to the extracted service, compare the two answers, report.
//!
//! [`compare`] is the pure comparison engine (also used by the contract tests).

pub mod compare;
