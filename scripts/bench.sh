#!/usr/bin/env bash
# Runs the load generator: installs nats-server and a font for the charts
# when missing, builds the release `hermod` and `hermod-bench`, then runs
# `hermod-bench "$@"` from the caller's directory (so a relative --out lands
# there), e.g.
#   scripts/bench.sh --suite quick --compare nats --out /tmp/bench-out
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/bootstrap.sh"

# The peer (Debian's nats-server, started by the harness itself on loopback)
# and the font the charts' text is drawn with.
need_apt=()
command -v nats-server >/dev/null 2>&1 || need_apt+=(nats-server)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
if ((${#need_apt[@]})); then
    apt_install bench "${need_apt[@]}"
fi

# One release build of the whole workspace: a subset resolves the shared
# dependencies' features differently and would rebuild RocksDB.
cargo build --release --manifest-path "$root/Cargo.toml" --workspace

# The report names the commit of this checkout.
export HERMOD_BENCH_SOURCE="$root"
exec "$CARGO_TARGET_DIR/release/hermod-bench" "$@"
