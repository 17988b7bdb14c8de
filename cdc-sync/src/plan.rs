//! What each direction of a pipeline does, derived once from a validated `sync.toml`: the
//! database it reads and the one it writes, its slot and publication, the replication origin it
//! stamps on what it writes, the origins it skips, and its checkpoint key. Every name that
//! derives from the pipeline name (`<name>_rev`, `cdc_sync_<name>`, ...) is formatted here.

use crate::config::{SkipOrigins, SyncConfig};
use crate::mapping::Way;

/// One direction of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectionPlan {
    /// `forward` or `reverse`: the status label and log field.
    pub label: &'static str,
    /// Which way mappings are compiled.
    pub way: Way,
    /// Checkpoint key in the written side's `cdc_sync` tables (`<name>` / `<name>_rev`).
    pub pipeline: String,
    /// Connection string of the database read (the slot and publication live there).
    pub from_conn: String,
    /// Where `from_conn` came from (`source.url`, `$ENV`), for messages.
    pub from_label: String,
    /// Connection string of the database written.
    pub to_conn: String,
    /// Where `to_conn` came from, for messages.
    pub to_label: String,
    /// The logical replication slot read.
    pub slot: String,
    /// The publication streamed.
    pub publication: String,
    /// The replication origin this direction's applier is named after (`cdc_sync_<name>` /
    /// `cdc_sync_<name>_rev`).
    pub origin: String,
    /// Whether the applier sets [`origin`](Self::origin) on its sessions: always in reverse,
    /// forward only when the pipeline also runs in reverse (only then is there an echo to skip).
    pub stamps_origin: bool,
    /// Origin-tagged transactions this direction's stream skips (loop prevention).
    pub skip_origins: SkipOrigins,
    /// The opposite direction's origin: its transactions in this stream are echoes of what this
    /// direction's written side committed (followed by conflict detection).
    pub echo_origin: String,
    /// Row changes per apply flush.
    pub batch_rows: usize,
    /// Warn when the slot retains more WAL than this (MiB).
    pub retained_wal_warn_mb: u64,
}

impl DirectionPlan {
    /// The origin to set on the written side's sessions, if any.
    pub fn applied_origin(&self) -> Option<&str> {
        self.stamps_origin.then_some(self.origin.as_str())
    }
}

/// Both directions of a pipeline. The reverse plan always exists (so `drop` can clean up after
/// a configuration that no longer has reverse tables); it runs only when
/// [`bidirectional`](Self::bidirectional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Source → target.
    pub forward: DirectionPlan,
    /// Target → source.
    pub reverse: DirectionPlan,
    /// Does any table flow target → source?
    pub bidirectional: bool,
}

impl Plan {
    /// Derive both directions from a validated configuration.
    pub fn new(cfg: &SyncConfig) -> Plan {
        let r = &cfg.replication;
        let bidirectional = cfg.has_reverse();
        let forward_origin = format!("cdc_sync_{}", cfg.name);
        let reverse_origin = format!("cdc_sync_{}_rev", cfg.name);
        let forward = DirectionPlan {
            label: "forward",
            way: Way::Forward,
            pipeline: cfg.name.clone(),
            from_conn: cfg.source.conn.clone(),
            from_label: format!("source ({})", cfg.source.origin),
            to_conn: cfg.target.conn.clone(),
            to_label: format!("target ({})", cfg.target.origin),
            slot: r.slot.clone(),
            publication: r.publication.clone(),
            origin: forward_origin.clone(),
            stamps_origin: bidirectional,
            // its own echoes: what this pipeline's reverse applier wrote into the source
            skip_origins: SkipOrigins::new(std::iter::once(reverse_origin.clone()).chain(r.skip_origins.clone())),
            echo_origin: reverse_origin.clone(),
            batch_rows: r.batch_rows,
            retained_wal_warn_mb: r.retained_wal_warn_mb,
        };
        let reverse = DirectionPlan {
            label: "reverse",
            way: Way::Reverse,
            pipeline: format!("{}_rev", cfg.name),
            from_conn: cfg.target.conn.clone(),
            from_label: forward.to_label.clone(),
            to_conn: cfg.source.conn.clone(),
            to_label: forward.from_label.clone(),
            slot: r.reverse_slot.clone(),
            publication: r.reverse_publication.clone(),
            origin: reverse_origin,
            stamps_origin: true,
            skip_origins: SkipOrigins::new(
                std::iter::once(forward_origin.clone()).chain(r.reverse_skip_origins.clone()),
            ),
            echo_origin: forward_origin,
            batch_rows: r.batch_rows,
            retained_wal_warn_mb: r.retained_wal_warn_mb,
        };
        Plan { forward, reverse, bidirectional }
    }

    /// The directions that run: forward, then reverse when bidirectional.
    pub fn running(&self) -> impl Iterator<Item = &DirectionPlan> {
        std::iter::once(&self.forward).chain(self.bidirectional.then_some(&self.reverse))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_with_env;

    const GOOD: &str = "name = 'catalog'\n[source]\nurl = 'host=a'\n[target]\nurl = 'host=b'\n\
                        [[table]]\nsource = 'products'\ntarget = 'items'\nkey = ['id']\ndirection = 'both'\n\
                        [table.columns]\nid = 'id'\n";

    #[test]
    fn names_derive_from_the_pipeline_name() {
        let p = Plan::new(&parse_with_env("sync.toml", GOOD, &|_| None).unwrap());
        assert!(p.bidirectional);
        let (f, r) = (&p.forward, &p.reverse);
        assert_eq!((f.pipeline.as_str(), r.pipeline.as_str()), ("catalog", "catalog_rev"));
        assert_eq!((f.slot.as_str(), r.slot.as_str()), ("cdc_sync_catalog", "cdc_sync_catalog_rev"));
        assert_eq!((f.publication.as_str(), r.publication.as_str()), ("cdc_sync_catalog", "cdc_sync_catalog_rev"));
        assert_eq!((f.applied_origin(), r.applied_origin()), (Some("cdc_sync_catalog"), Some("cdc_sync_catalog_rev")));
        assert_eq!((f.from_conn.as_str(), r.from_conn.as_str()), ("host=a", "host=b"));
        assert_eq!(p.running().map(|d| d.label).collect::<Vec<_>>(), ["forward", "reverse"]);
        let fwd_only = Plan::new(&parse_with_env("s", &GOOD.replace("direction = 'both'\n", ""), &|_| None).unwrap());
        assert_eq!(fwd_only.forward.applied_origin(), None);
        assert_eq!(fwd_only.running().count(), 1);
    }

    #[test]
    fn each_direction_skips_its_own_echoes_and_the_listed_origins() {
        let p = Plan::new(&parse_with_env("sync.toml", GOOD, &|_| None).unwrap());
        assert_eq!(p.forward.skip_origins.to_vec(), vec!["cdc_sync_catalog_rev".to_string()]);
        assert_eq!(p.reverse.skip_origins.to_vec(), vec!["cdc_sync_catalog".to_string()]);
        assert!(!p.forward.skip_origins.skips("cdc_sync_orders_rev"));
        let with = GOOD.replace(
            "[[table]]",
            "[replication]\nskip_origins = [\"cdc_sync_orders_rev\"]\nreverse_skip_origins = [\"*\"]\n[[table]]",
        );
        let p = Plan::new(&parse_with_env("sync.toml", &with, &|_| None).unwrap());
        let f = &p.forward.skip_origins;
        assert!(f.skips("cdc_sync_orders_rev") && f.skips("cdc_sync_catalog_rev"));
        assert!(!f.skips("pg_16384"));
        assert!(p.reverse.skip_origins.skips("anything"));
    }
}
