#!/usr/bin/env bash
# Runs every test: lint gate (rustc warnings and clippy are errors), then the whole workspace's unit
# and end-to-end tests against real ephemeral PostgreSQL clusters and real processes.
# Usage: make test   (extra arguments go to the test binaries, e.g. scripts/test.sh canary)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked -- "$@"
echo "==> deployment artefacts (Kubernetes schemas, OTel, Grafana, systemd)"
CDC_SYNC_BIN="$PWD/target/debug/cdc-sync" scripts/validate-manifests.sh
