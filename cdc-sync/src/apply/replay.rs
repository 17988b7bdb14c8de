//! Changes replayed onto rows that may already be newer than them.
//!
//! A table whose initial copy was resumed after a crash holds, in the ranges copied after the
//! resume, rows as of a later snapshot than the table's stream floor (see `source::chunks`).
//! The stream re-applies the changes between the two snapshots to those rows. Inserts, full-row
//! updates and deletes are idempotent by key; an update that changes the key is not: the new
//! key may already be there (copied at the later snapshot) while the old key is still there
//! (its range copied at the first). Inside such a window a key change is therefore applied as
//! what it means for the final state: delete the old key, then write the new row by its new key.

use std::sync::Arc;

use crate::mapping::Op;
use crate::model::Cell;

/// `op` as it must be applied onto possibly newer rows (`key_len` = key columns, which come
/// first among the row's cells). Every op but a key-changing update is returned unchanged.
pub fn onto_newer_rows(op: Op, key_len: usize) -> Vec<Op> {
    let Op::Update { table, match_key, row, lsn, ts } = op else { return vec![op] };
    let new_key: Option<Vec<Arc<str>>> =
        row[..key_len].iter().map(|c| if let Cell::Text(t) = c { Some(Arc::clone(t)) } else { None }).collect();
    match new_key {
        Some(new_key) if new_key != match_key => {
            let delete = Op::Delete { table, key: match_key, lsn, ts };
            let write = if row.iter().all(|c| *c != Cell::Unchanged) {
                Op::Upsert { table, row, lsn, ts }
            } else {
                // unchanged TOAST columns: only the row already at the new key can supply them
                Op::Update { table, match_key: new_key, row, lsn, ts }
            };
            vec![delete, write]
        }
        _ => vec![Op::Update { table, match_key, row, lsn, ts }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Lsn;

    fn t(s: &str) -> Cell {
        Cell::Text(Arc::from(s))
    }

    #[test]
    fn a_key_change_becomes_delete_then_write_by_the_new_key() {
        let ts = chrono::Utc::now();
        let k = |s: &str| vec![Arc::<str>::from(s)];
        let full = Op::Update { table: 0, match_key: k("7"), row: vec![t("9"), t("a")], lsn: Lsn(1), ts };
        let out = onto_newer_rows(full, 1);
        assert!(
            matches!(&out[..], [Op::Delete { key, .. }, Op::Upsert { row, .. }] if *key == k("7") && row[0] == t("9"))
        );
        let toast = Op::Update { table: 0, match_key: k("7"), row: vec![t("9"), Cell::Unchanged], lsn: Lsn(1), ts };
        let out = onto_newer_rows(toast, 1);
        assert!(matches!(&out[..], [Op::Delete { .. }, Op::Update { match_key, .. }] if *match_key == k("9")));
        // same key: unchanged
        let same = Op::Update { table: 0, match_key: k("9"), row: vec![t("9"), Cell::Unchanged], lsn: Lsn(1), ts };
        assert!(matches!(&onto_newer_rows(same, 1)[..], [Op::Update { .. }]));
        let del = Op::Delete { table: 0, key: k("1"), lsn: Lsn(1), ts };
        assert!(matches!(&onto_newer_rows(del, 1)[..], [Op::Delete { .. }]));
    }
}
