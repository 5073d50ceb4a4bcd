#!/usr/bin/env bash
# End-to-end check of the container deployment: builds the image, starts the
# three-node compose cluster, waits until every node is healthy, checks the
# cluster status (3 voters, quorum) through node 1's published port, publishes
# and consumes one message through node 2, adds a fourth node and removes it
# again, then tears everything down (volumes included). Prints timings.
#
# usage: deploy/smoke.sh [--no-build] [--binary PATH]
#   --no-build     use the existing image (HERMOD_IMAGE, default hermod:local)
#   --binary PATH  build the image around this hermod binary (or env HERMOD_BINARY)
# env: KEEP=1 leaves the cluster running; WAIT_SECONDS bounds each wait (default 180).
# Runs as compose project "hermod-smoke", so it needs the ports 7400-7431 free.
set -euo pipefail

export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-hermod-smoke}"
DIR="$(cd "$(dirname "$0")" && pwd)"
source "$DIR/lib.sh"
export HERMOD_IMAGE="${HERMOD_IMAGE:-hermod:local}"
WAIT_SECONDS="${WAIT_SECONDS:-180}"

build=1
build_args=()
while (($#)); do
    case "$1" in
        --no-build) build=0; shift ;;
        --binary) build_args+=(--binary "${2:?--binary needs a path}"); shift 2 ;;
        *) echo "smoke: unknown argument $1" >&2; exit 2 ;;
    esac
done

command -v python3 >/dev/null || { echo "smoke: python3 is needed to read JSON" >&2; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
step() { echo "smoke: $*"; }

timings=()
if ((build)); then
    t=$(now)
    "$DIR/build-image.sh" --tag "$HERMOD_IMAGE" ${build_args[@]+"${build_args[@]}"}
    timings+=("image build: $(since "$t") s")
fi

cleanup() {
    if [ "${KEEP:-0}" = 1 ]; then
        step "KEEP=1: leaving project $COMPOSE_PROJECT running"
        return
    fi
    compose --profile extra down --volumes --timeout 20 >/dev/null 2>&1 || true
}
trap cleanup EXIT
# Leftovers of an earlier run would hold the ports and old data.
compose --profile extra down --volumes --timeout 20 >/dev/null 2>&1 || true

# The hermod CLI, from the host through the published ports.
hermod_host() { docker run --rm --network host "$HERMOD_IMAGE" "$@"; }
# The hermod CLI inside a node's container (its own node by default).
hermod_in() { local service="$1"; shift; compose exec -T "$service" hermod "$@"; }

# check_status JSON WANT: quorum, WANT voters, every one up, one leader.
check_status() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
status, want = json.loads(sys.argv[1]), int(sys.argv[2])
nodes = status["nodes"]
roles = sorted(n["role"] for n in nodes)
ok = (status["quorum"] and len(nodes) == want and all(n["up"] for n in nodes)
      and roles.count("leader") == 1 and roles.count("follower") == want - 1)
print(f"{len(nodes)} nodes, quorum {status['quorum']}, roles {roles}")
sys.exit(0 if ok else 1)
EOF
}

# wait_nodes WANT: polls node 1's status until check_status passes.
wait_nodes() {
    local status=""
    for ((i = 0; i < WAIT_SECONDS; i++)); do
        status="$(hermod_host cluster status --server http://127.0.0.1:7400 --json 2>/dev/null || true)"
        if [ -n "$status" ] && check_status "$status" "$1" >/dev/null; then
            check_status "$status" "$1"
            return 0
        fi
        sleep 1
    done
    echo "smoke: node 1 does not show $1 healthy nodes: ${status:-no answer}" >&2
    return 1
}

step "starting three nodes (project $COMPOSE_PROJECT, image $HERMOD_IMAGE)"
t=$(now)
compose up -d
wait_healthy "$WAIT_SECONDS" hermod1 hermod2 hermod3 || { echo "smoke: the nodes did not become healthy" >&2; exit 1; }
timings+=("compose up to 3 healthy nodes: $(since "$t") s")

step "cluster status through 127.0.0.1:7400"
wait_nodes 3
hermod_host cluster status --server http://127.0.0.1:7400
for port in 7401 7411 7421; do
    python3 - "$port" <<'EOF'
import json, sys, urllib.request
port = sys.argv[1]
ready = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5))
# connected_nodes counts the nodes this one hears from: a follower hears the leader only.
assert ready["ready"] and ready["role"] in ("leader", "follower"), ready
print(f"smoke: 127.0.0.1:{port}/health/ready: node {ready['node']} {ready['role']}, "
      f"hears {ready['connected_nodes']} nodes")
EOF
done

step "publish and consume one message through node 2"
t=$(now)
payload="hello through node 2 at $(date +%s)"
hermod_in hermod2 subscription create smoke 'smoke.>' --start earliest --json
hermod_in hermod2 pub smoke.check "$payload" --delivery exactly-once --json
received="$(hermod_in hermod2 sub 'smoke.>' --subscription smoke --count 1 --timeout 30s --json)"
echo "$received"
python3 -c 'import json, sys; m = json.loads(sys.argv[1]); assert m["payload"] == sys.argv[2], m' \
    "$received" "$payload"
timings+=("publish + consume through node 2: $(since "$t") s")

step "adding a fourth node"
t=$(now)
"$DIR/extra-node.sh" add "$WAIT_SECONDS" >/dev/null
wait_nodes 4
timings+=("node 4 up to 4 healthy nodes: $(since "$t") s")

step "removing the fourth node"
t=$(now)
"$DIR/extra-node.sh" remove
wait_nodes 3
timings+=("node 4 leave + removal: $(since "$t") s")

trap - EXIT
if [ "${KEEP:-0}" != 1 ]; then
    step "tearing down"
    t=$(now)
    compose --profile extra down --volumes --timeout 20
    timings+=("compose down -v: $(since "$t") s")
fi

step "passed"
printf '  %s\n' "${timings[@]}"
