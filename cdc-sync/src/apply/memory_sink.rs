//! The in-memory sink for unit tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::apply::sink::{CommitInfo, Sink, SinkError, WriteStats};
use crate::mapping::{Mapping, Op};
use crate::model::Cell;

/// In-memory [`Sink`] for unit tests: tables keyed by key text, rows as input-column text.
/// Uncommitted writes live in `working` and become `committed` on commit.
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    mapping: Arc<Mapping>,
    /// Per mapping index: key → row cells (by input column).
    pub committed: Vec<BTreeMap<Vec<String>, Vec<Option<String>>>>,
    working: Vec<BTreeMap<Vec<String>, Vec<Option<String>>>>,
    /// Last committed checkpoint.
    pub checkpoint: Option<CommitInfo>,
    /// Number of commits.
    pub commits: usize,
}

impl MemorySink {
    /// An empty sink for `mapping`.
    pub fn new(mapping: Arc<Mapping>) -> Self {
        let n = mapping.tables.len();
        MemorySink {
            mapping,
            committed: vec![BTreeMap::new(); n],
            working: vec![BTreeMap::new(); n],
            checkpoint: None,
            commits: 0,
        }
    }
}

impl Sink for MemorySink {
    async fn write(&mut self, ops: Vec<Op>) -> Result<WriteStats, SinkError> {
        let mut stats = WriteStats::default();
        for op in &ops {
            match op {
                Op::Upsert { table, row, .. } => {
                    let k = self.mapping.tables[*table].key_len;
                    let key: Vec<String> = row[..k].iter().map(|c| c.as_text().unwrap_or("").to_string()).collect();
                    self.working[*table].insert(key, row.iter().map(|c| c.as_text().map(str::to_string)).collect());
                    stats.rows += 1;
                }
                Op::Update { table, match_key, row, .. } => {
                    let k = self.mapping.tables[*table].key_len;
                    let old: Vec<String> = match_key.iter().map(|s| s.to_string()).collect();
                    if let Some(mut cur) = self.working[*table].remove(&old) {
                        for (i, c) in row.iter().enumerate() {
                            if *c != Cell::Unchanged {
                                cur[i] = c.as_text().map(str::to_string);
                            }
                        }
                        let key: Vec<String> = cur[..k].iter().map(|c| c.clone().unwrap_or_default()).collect();
                        self.working[*table].insert(key, cur);
                        stats.rows += 1;
                    }
                }
                Op::Delete { table, key, .. } => {
                    let key: Vec<String> = key.iter().map(|s| s.to_string()).collect();
                    stats.rows += self.working[*table].remove(&key).is_some() as u64;
                }
                Op::Truncate { tables, .. } => {
                    for t in tables {
                        self.working[*t].clear();
                    }
                }
            }
        }
        Ok(stats)
    }

    async fn commit(&mut self, info: &CommitInfo) -> Result<WriteStats, SinkError> {
        self.committed = self.working.clone();
        self.checkpoint = Some(*info);
        self.commits += 1;
        Ok(WriteStats::default())
    }
}
