//! Each direction's watch on the side it reads, once a second: the WAL position (lag), the WAL
//! its slot retains, the slot's `wal_status` and `safe_wal_size` (how close the server is to
//! invalidating it), and the recent apply rate. Split out of the runner, which spawns it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use crate::connect::connect;
use crate::model::Lsn;
use crate::plan::DirectionPlan;
use crate::source;
use crate::status::{Metrics, SlotWalStatus};

/// How close a slot is to being invalidated by the server, from `wal_status` and `safe_wal_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SlotDanger {
    /// Fine, or `max_slot_wal_keep_size` is unlimited.
    None,
    /// More than 80 % of `max_slot_wal_keep_size` retained.
    Near,
    /// Past `max_slot_wal_keep_size`: lost at the next checkpoint unless it catches up.
    Unreserved,
    /// Invalidated.
    Lost,
}

/// The danger a slot is in (pure; logged by the monitor when it grows).
pub fn slot_danger(status: SlotWalStatus, retained_bytes: i64, safe_wal_bytes: Option<i64>) -> SlotDanger {
    match status {
        SlotWalStatus::Lost => SlotDanger::Lost,
        SlotWalStatus::Unreserved => SlotDanger::Unreserved,
        _ => match safe_wal_bytes {
            // retained / (retained + still safe) is the used share of max_slot_wal_keep_size
            Some(safe)
                if retained_bytes > 0 && retained_bytes as f64 >= 0.8 * (retained_bytes + safe.max(0)) as f64 =>
            {
                SlotDanger::Near
            }
            _ => SlotDanger::None,
        },
    }
}

/// Polls the read side once a second: its WAL position (lag), the WAL the slot retains (with a
/// warning over the threshold), the slot's `wal_status` and `safe_wal_size` (a warning past 80 %
/// of `max_slot_wal_keep_size`, an error past it and when the slot is invalidated), and the
/// recent apply rate.
pub async fn monitor(plan: DirectionPlan, metrics: Arc<Metrics>) {
    let (conn, slot, warn_mb) = (plan.from_conn, plan.slot, plan.retained_wal_warn_mb);
    let mut client: Option<Client> = None;
    let mut last_rows = metrics.rows_applied.load(Relaxed);
    let mut last_t = std::time::Instant::now();
    let mut warned = false;
    let mut last_danger = SlotDanger::None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rows = metrics.rows_applied.load(Relaxed);
        let dt = last_t.elapsed().as_secs_f64();
        metrics.rows_per_s_milli.store(((rows - last_rows) as f64 / dt * 1000.0) as u64, Relaxed);
        (last_rows, last_t) = (rows, std::time::Instant::now());
        if client.is_none() {
            client = connect(&conn).await.ok();
        }
        let Some(c) = &client else { continue };
        match c.query_one("SELECT pg_current_wal_lsn()::text", &[]).await {
            Ok(r) => {
                if let Some(l) = Lsn::parse(&r.get::<_, String>(0)) {
                    metrics.source_lsn.store(l.0, Relaxed);
                }
            }
            Err(_) => {
                client = None;
                continue;
            }
        }
        match source::slot_info(c, &slot).await {
            Ok(Some(s)) => {
                let status = SlotWalStatus::parse(s.wal_status.as_deref());
                metrics.note_slot(status, s.retained_bytes, s.safe_wal_bytes);
                let over = s.retained_bytes as u64 > warn_mb * 1024 * 1024;
                if over && !warned {
                    tracing::warn!(slot = %slot, retained_mb = s.retained_bytes / 1024 / 1024, threshold_mb = warn_mb,
                        "slot retains a lot of WAL; if cdc-sync is retired, run `cdc-sync drop` to release it");
                }
                warned = over;
                let danger = slot_danger(status, s.retained_bytes, s.safe_wal_bytes);
                if danger > last_danger {
                    let (retained_mb, safe_mb) = (s.retained_bytes >> 20, s.safe_wal_bytes.map(|b| b >> 20));
                    match danger {
                        SlotDanger::Lost => {
                            tracing::error!(slot = %slot, "the server invalidated the slot (wal_status = lost): it retained more than max_slot_wal_keep_size; the changes it held are gone")
                        }
                        SlotDanger::Unreserved => {
                            tracing::error!(slot = %slot, retained_mb, "slot is past max_slot_wal_keep_size (wal_status = unreserved): the next checkpoint invalidates it unless it catches up")
                        }
                        SlotDanger::Near => {
                            tracing::warn!(slot = %slot, retained_mb, safe_mb, "slot has used over 80% of max_slot_wal_keep_size; if it keeps falling behind the server will invalidate it")
                        }
                        SlotDanger::None => {}
                    }
                }
                last_danger = danger;
            }
            Ok(None) => metrics.note_slot(SlotWalStatus::Unknown, 0, None),
            Err(_) => client = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_danger_grows_with_the_share_of_max_slot_wal_keep_size_used() {
        let mb = 1 << 20;
        // unlimited max_slot_wal_keep_size: no danger whatever is retained
        assert_eq!(slot_danger(SlotWalStatus::Extended, 5000 * mb, None), SlotDanger::None);
        assert_eq!(slot_danger(SlotWalStatus::Reserved, 70 * mb, Some(30 * mb)), SlotDanger::None);
        assert_eq!(slot_danger(SlotWalStatus::Reserved, 80 * mb, Some(20 * mb)), SlotDanger::Near);
        assert_eq!(slot_danger(SlotWalStatus::Extended, 95 * mb, Some(0)), SlotDanger::Near);
        assert_eq!(slot_danger(SlotWalStatus::Unreserved, 120 * mb, Some(-20 * mb)), SlotDanger::Unreserved);
        assert_eq!(slot_danger(SlotWalStatus::Lost, 0, None), SlotDanger::Lost);
        assert!(SlotDanger::Near < SlotDanger::Unreserved && SlotDanger::Unreserved < SlotDanger::Lost);
    }
}
