#!/usr/bin/env bash
# The chaos suite: a containerised Hermod cluster of its own (containers and
# networks named hermod-chaos-RUN-*, apart from any compose project) under a
# seeded nemesis — SIGKILL of the leader or any node, pause, partitions
# (isolate, split, bridge), restart of every node, rolling restart — while
# publishers and consumers run; then a checker proves that nothing
# acknowledged was lost or duplicated, nothing confirmed was redelivered,
# nothing expired was delivered, and no term had two leaders. See docs/chaos.md.
#
# usage: tests/chaos.sh [--minutes N] [--nodes 3|5] [--seed S] [--dir DIR] [--image TAG] [--build-image]
#   --minutes N    minutes of faults (env HERMOD_CHAOS_MINUTES; default 2)
#   --nodes 3|5    cluster size (default 3)
#   --seed S       seed of every random choice (default: from the clock; printed)
#   --dir DIR      where report.json, summary.txt and the node logs go
#                  (env HERMOD_CHAOS_DIR; default $CARGO_TARGET_DIR/chaos/RUN)
#   --image TAG    the node image (env HERMOD_IMAGE; default hermod:local), built
#                  with deploy/build-image.sh from the debug binary (or env
#                  HERMOD_BINARY) when missing
#   --build-image  build the image even if it exists
# Exits 0 only when no violation was found (1: violations, 2: the run failed);
# the last line printed is the one-line summary.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

MINUTES="${HERMOD_CHAOS_MINUTES:-2}"
NODES=3
SEED=""
DIR="${HERMOD_CHAOS_DIR:-}"
IMAGE="${HERMOD_IMAGE:-hermod:local}"
BUILD_IMAGE=0
while (($#)); do
    case "$1" in
        --minutes) MINUTES="${2:?--minutes needs a number}"; shift 2 ;;
        --nodes) NODES="${2:?--nodes needs 3 or 5}"; shift 2 ;;
        --seed) SEED="${2:?--seed needs a number}"; shift 2 ;;
        --dir) DIR="${2:?--dir needs a path}"; shift 2 ;;
        --image) IMAGE="${2:?--image needs a tag}"; shift 2 ;;
        --build-image) BUILD_IMAGE=1; shift ;;
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "chaos: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

# shellcheck source=../scripts/bootstrap.sh
source scripts/bootstrap.sh
command -v docker >/dev/null || { echo "chaos: ERROR docker is missing"; exit 2; }
# The timeline chart draws its text with a TrueType font.
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    apt_install chaos fonts-dejavu-core
fi

# The runner and the debug hermod binary (a no-op when the tests were built).
RUNNER="$CARGO_TARGET_DIR/debug/hermod-chaos"
if ! cargo build --workspace --all-targets --profile test --quiet; then
    # A target the suite does not use may fail to build; the runner may not.
    [ -x "$RUNNER" ] || { echo "chaos: ERROR the build failed and there is no runner at $RUNNER"; exit 2; }
    echo "chaos: WARNING the workspace build failed; running the last built $RUNNER" >&2
fi

if ((BUILD_IMAGE)) || ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    deploy/build-image.sh --tag "$IMAGE" --binary "${HERMOD_BINARY:-$CARGO_TARGET_DIR/debug/hermod}" >&2
fi

RUN_ID="$(date +%s)$$"
DIR="${DIR:-$CARGO_TARGET_DIR/chaos/$RUN_ID}"
mkdir -p "$DIR"

# Removes this run's containers (with their data volumes) and networks,
# whatever the runner left behind; it touches nothing else.
cleanup() {
    local ids
    ids="$(docker ps -aq --filter "label=hermod-chaos.run=$RUN_ID" 2>/dev/null || true)"
    [ -n "$ids" ] && docker rm --force --volumes $ids >/dev/null 2>&1 || true
    ids="$(docker network ls -q --filter "label=hermod-chaos.run=$RUN_ID" 2>/dev/null || true)"
    [ -n "$ids" ] && docker network rm $ids >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

args=(--minutes "$MINUTES" --nodes "$NODES" --image "$IMAGE" --run-id "$RUN_ID" --dir "$DIR")
[ -n "$SEED" ] && args+=(--seed "$SEED")
status=0
"$RUNNER" "${args[@]}" >"$DIR/verdict.txt" || status=$?
cleanup
if [ -s "$DIR/verdict.txt" ]; then
    cat "$DIR/verdict.txt"
else
    echo "chaos: ERROR the runner exited with status $status without a verdict (seed ${SEED:-unknown}; see $DIR)"
    ((status)) || status=2
fi
exit "$status"
