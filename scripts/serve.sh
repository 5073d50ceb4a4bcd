#!/usr/bin/env bash
# Quick start: builds Hermod and runs one node with its data in ./data.
# Extra arguments go to `hermod serve` (e.g. --listen 0.0.0.0:7400).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
cargo build --release -p hermod-broker --bin hermod
exec "$CARGO_TARGET_DIR/release/hermod" serve --data-dir ./data "$@"
