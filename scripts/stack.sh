#!/usr/bin/env bash
# Builds the release binaries and runs the whole local stack in the foreground.
# Usage: make up   (extra flags go to strangler-stack; see target/release/strangler-stack --help)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
echo "==> building (release)"
cargo build --release --workspace --bins
exec target/release/strangler-stack --bin-dir target/release --run-dir .stack "$@"
