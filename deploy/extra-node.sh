#!/usr/bin/env bash
# Adds the fourth node of deploy/docker-compose.yml (profile "extra",
# 127.0.0.1:7430 gRPC / 7431 admin) to the running cluster, or makes it leave.
#
# usage: deploy/extra-node.sh add [WAIT_SECONDS]   start hermod4; wait until it is healthy
#        deploy/extra-node.sh remove               hermod4 leaves the voters (hermod cluster
#                                                  leave), then its container and volume go
# A node that has left cannot rejoin with its old data directory, so removing
# also deletes the volume: the next `add` starts it fresh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

case "${1:-}" in
    add)
        compose --profile extra up -d hermod4
        if ! wait_healthy "${2:-120}" hermod4; then
            echo "hermod4 did not become healthy" >&2
            exit 1
        fi
        compose exec -T hermod4 hermod cluster status
        ;;
    remove)
        if [ "$(health hermod4)" != missing ]; then
            id="$(compose exec -T hermod4 hermod cluster status --json \
                | python3 -c 'import json, sys; print(json.load(sys.stdin)["node_id"])')"
            # A member does the removal: it knows the leader even when hermod4
            # has left already (a removed node campaigns alone and knows none).
            left=0
            for member in hermod1 hermod2 hermod3; do
                if compose exec -T "$member" hermod cluster leave --node-id "$id"; then
                    left=1
                    break
                fi
            done
            ((left)) || { echo "extra-node: no member could remove node $id" >&2; exit 1; }
            compose --profile extra stop hermod4
            compose --profile extra rm -f hermod4
        fi
        docker volume rm "${COMPOSE_PROJECT}_hermod4-data" >/dev/null 2>&1 || true
        echo "hermod4 removed"
        ;;
    *)
        sed -n '5,7p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
