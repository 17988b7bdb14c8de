#!/usr/bin/env bash
# cdc-sync vs PostgreSQL native logical replication (not a test).
#
# Builds cdc-sync and the bench driver (cdc-sync/examples/cdc_bench.rs) in release mode, then runs
# it: three ephemeral PG15 clusters (source, cdc-sync target, native-subscription target; initdb
# and postgres run as the `postgres` user via runuser when root, see tests/support/src/pg.rs),
# a pgbench-like mixed workload (updates on accounts/tellers/branches, inserts and deletes on
# history), and three measurements:
#   - throughput: drain a fixed backlog (BACKLOG_ROWS row changes written while cdc-sync is stopped
#     and the subscription disabled), one consumer at a time, until a marker row is visible;
#   - lag: both running under a steady RATE rows/s; tick rows carry clock_timestamp() at the source,
#     each target is polled every 5 ms, lag = target clock at first visibility - source time;
#   - snapshot: cdc-sync's initial snapshot (spawn -> ready; SNAPSHOT_WORKERS parallel key-range
#     COPY workers) vs pg_dump --data-only | psql;
#   - verify: `cdc-sync verify` of every table after the lag phase (rows compared per second).
# Every phase is bounded in time. Prints a table; the last line is machine-readable:
#   RESULT cdc_vs_native_rows_per_s=... cdc_p99_lag_ms=... native_p99_lag_ms=... snapshot_vs_pgdump=...
#          cdc_vs_native_p99_lag=... snapshot_rows=... snapshot_workers=... verify_rows=... verify_rows_per_s=...
#          snapshot_cpu_s=... pgdump_cpu_s=... (CPU seconds of every process during each initial copy)
#
# Usage: tests/perf/cdc-bench.sh
# Env:   ACCOUNTS (seed rows, default 2000000), SNAPSHOT_WORKERS (default 4), BACKLOG_ROWS (default 500000), RATE (rows/s,
#        default 5000), LAG_SECONDS (default 20), BRANCHES (default 10; tellers = 10 per branch;
#        pgbench's hot rows, raise to e.g. 100000 to spread updates), CDC_SYNC_BIN
#        PARTS (default all; `snapshot` runs only the two initial copies, pg_dump|psql then cdc-sync,
#        and a verify, and prints their wall time, load average and CPU seconds per cluster and
#        client; its RESULT line has the snapshot fields only)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
cargo build --release -q -p cdc-sync --bin cdc-sync --example cdc_bench
export CDC_SYNC_BIN=${CDC_SYNC_BIN:-$ROOT/target/release/cdc-sync}
exec timeout 1800 "$ROOT/target/release/examples/cdc_bench"
