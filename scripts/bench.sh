#!/usr/bin/env bash
# Runs the load generator: installs nats-server when missing, builds the
# release `hermod` and `hermod-bench`, then runs `hermod-bench "$@"` from the
# caller's directory (so a relative --out lands there), e.g.
#   scripts/bench.sh --suite quick --compare nats --out /tmp/bench-out
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/bootstrap.sh"

# The peer: Debian's nats-server, started by the harness itself on loopback.
if ! command -v nats-server >/dev/null 2>&1; then
    echo "bench: installing nats-server with apt-get" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nats-server >/dev/null
fi

# Release builds with -p are fine (a debug build of a subset would rebuild RocksDB).
cargo build --release --manifest-path "$root/Cargo.toml" -p hermod-broker --bin hermod
cargo build --release --manifest-path "$root/Cargo.toml" -p hermod-bench --bin hermod-bench

# The report names the commit of this checkout.
export HERMOD_BENCH_SOURCE="$root"
exec "$CARGO_TARGET_DIR/release/hermod-bench" "$@"
