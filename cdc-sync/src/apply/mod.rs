//! Apply: map source changes and write them into the target in source commit order.
//!
//! A change flows through these files in this order: [`pipeline`] (the engine: reads the source's
//! `ChangeStream`, maps, hands batches to a sink, commits with the
//! checkpoint), [`sink`] (the [`Sink`] contract every writer keeps), [`batch`] (regrouping one
//! flush into few statements), [`conflict`] (bidirectional tables: conflicts, decided and
//! recorded before a flush is written), [`replay`] (changes re-applied onto a resumed copy's
//! newer rows), then a sink: [`pg_sink`] ([`PgSink`], PostgreSQL) or [`memory_sink`]
//! ([`MemorySink`], unit tests). Beside that path, [`ddl`] adds and back-fills the columns
//! `add_columns = "propagate"` carries.

pub mod batch;
pub mod conflict;
pub mod ddl;
pub mod memory_sink;
pub mod pg_sink;
pub mod pipeline;
pub mod replay;
pub mod sink;
#[cfg(test)]
mod testing;

pub use memory_sink::MemorySink;
pub use pg_sink::{setup_origin, PgSink};
pub use pipeline::{Pipeline, PipelineError, PipelineOptions};
pub use sink::{CommitInfo, Sink, SinkError, WriteStats};
