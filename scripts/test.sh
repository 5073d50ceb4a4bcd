#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration (real gRPC, real
# RocksDB, real processes) and documentation examples.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
# The process tests start the real `hermod` binary.
cargo build -p hermod-broker --bin hermod
cargo test --workspace "$@"
