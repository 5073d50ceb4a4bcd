#!/usr/bin/env bash
# Restarts the compose cluster one node at a time, recreating each container
# from the current image (an upgrade after deploy/build-image.sh), and waits
# until the restarted node is healthy again — back in a quorum — before the
# next. The leader goes last, so the cluster changes leader once at most.
#
# usage: deploy/rolling-restart.sh [WAIT_SECONDS]   (default 180 per node)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
WAIT_SECONDS="${1:-180}"

running=()
for service in hermod1 hermod2 hermod3 hermod4; do
    [ "$(health "$service")" = missing ] || running+=("$service")
done
((${#running[@]})) || { echo "rolling-restart: no node is running" >&2; exit 1; }
# Restarting a node while another is unhealthy could cost the quorum.
for service in "${running[@]}"; do
    status="$(health "$service")"
    if [ "$status" != healthy ]; then
        echo "rolling-restart: $service is $status; make every node healthy (or remove it) first" >&2
        exit 1
    fi
done

# The leader's id, then each service's own id, from /health/ready.
ready() { compose exec -T "$1" hermod-probe /health/ready 2>/dev/null || true; }
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1] or "{}").get(sys.argv[2]) or "")' "$1" "$2"; }
leader=""
order=()
for service in "${running[@]}"; do
    answer="$(ready "$service")"
    if [ "$(field "$answer" role)" = leader ]; then leader="$service"; else order+=("$service"); fi
done
[ -n "$leader" ] && order+=("$leader")

for service in "${order[@]}"; do
    echo "rolling-restart: $service"
    profile=()
    [ "$service" = hermod4 ] && profile=(--profile extra)
    compose ${profile[@]+"${profile[@]}"} up -d --no-deps --force-recreate "$service"
    if ! wait_healthy "$WAIT_SECONDS" "$service"; then
        echo "rolling-restart: $service is not healthy after ${WAIT_SECONDS}s; stopping here" >&2
        exit 1
    fi
done
echo "rolling-restart: ${order[*]} restarted"
