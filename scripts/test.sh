#!/usr/bin/env bash
# Runs every test: lint gate (rustc warnings and clippy are errors), then the whole workspace's unit
# and end-to-end tests against real ephemeral PostgreSQL clusters and real processes.
# Usage: make test   (extra arguments go to the test binaries, e.g. scripts/test.sh canary)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh

# A fresh build plus the test clusters need a few GiB; say so up front instead of failing later
# with "No space left on device" from initdb or the linker.
for dir in . "${TMPDIR:-/tmp}"; do
    free_kib=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
    if [ "${free_kib:-0}" -lt $((6 * 1024 * 1024)) ]; then
        echo "warning: only $((free_kib / 1024)) MiB free under $dir; a fresh build and the test" \
            "clusters need about 6 GiB (df -h $dir)" >&2
    fi
done

echo "==> module imports run one way (no module imports one that imports it back)"
scripts/module-cycles.py gateway/src cdc-sync/src extracted/kit/src
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked -- "$@"
echo "==> deployment artefacts (Kubernetes schemas, OTel, Grafana, systemd)"
bin_dir="${CARGO_TARGET_DIR:-$PWD/target}/debug"
CDC_SYNC_BIN="$bin_dir/cdc-sync" STRANGLER_GATEWAY_BIN="$bin_dir/strangler-gateway" \
    scripts/validate-manifests.sh
