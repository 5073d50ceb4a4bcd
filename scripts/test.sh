#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration (real gRPC, real
# RocksDB, real processes) and documentation examples.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
# Always the whole workspace: building a subset resolves features differently
# and rebuilds RocksDB. The process tests use the `hermod` binary that this
# builds for broker/tests.
cargo test --workspace "$@"
