# Shared helpers of the deploy/ scripts, sourced by them: run Compose (the
# `docker compose` plugin or the standalone `docker-compose` v1, whichever is
# installed) on deploy/docker-compose.yml, and wait for a service's health.
# Sourced after `set -euo pipefail`.

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
COMPOSE_FILE="$DEPLOY_DIR/docker-compose.yml"
# The project name (also in deploy/.env) fixes container and volume names.
COMPOSE_PROJECT="${COMPOSE_PROJECT_NAME:-hermod}"

if docker compose version >/dev/null 2>&1; then
    COMPOSE_CMD=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE_CMD=(docker-compose)
else
    echo "neither 'docker compose' nor 'docker-compose' is installed" >&2
    exit 1
fi

compose() {
    "${COMPOSE_CMD[@]}" --project-name "$COMPOSE_PROJECT" --file "$COMPOSE_FILE" "$@"
}

# health SERVICE: the container's health status, or "missing".
health() {
    local id
    id="$(compose --profile extra ps -q "$1" 2>/dev/null || true)"
    [ -n "$id" ] || { echo missing; return; }
    docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id" 2>/dev/null \
        || echo missing
}

# wait_healthy SECONDS SERVICE...: polls once a second until every service is
# healthy; fails after SECONDS with each one's status and its last log lines.
wait_healthy() {
    local limit="$1" service all
    shift
    for ((i = 0; i < limit; i++)); do
        all=1
        for service in "$@"; do
            [ "$(health "$service")" = healthy ] || all=0
        done
        ((all)) && return 0
        sleep 1
    done
    for service in "$@"; do
        echo "$service: $(health "$service")" >&2
        compose --profile extra logs --tail 20 "$service" >&2 || true
    done
    return 1
}
