#!/usr/bin/env bash
# Validates the deployment files without a cluster: every manifest under
# deploy/k8s against the Kubernetes API schema (the PyPI package
# kubernetes-validate, strict: unknown fields fail), docker-compose.yml with
# Compose itself when it is installed, and deploy/check_config.py: the
# HERMOD_* variables, ports and probe paths of the Dockerfile, compose file
# and manifests against the broker's own configuration and admin routes.
#
# The Python tools live in $HOME/.cache/hermod/deploy-venv, made on first use
# (python3 -m venv, or pip --target where the venv module is missing).
# env: K8S_VERSION (default 1.30.0), the Kubernetes version to validate against.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${HERMOD_DEPLOY_TOOLS:-$HOME/.cache/hermod/deploy-venv}"
K8S_VERSION="${K8S_VERSION:-1.30.0}"
PACKAGE="kubernetes-validate==1.37.0"

# Runs Python with the tools importable.
tool_python() {
    if [ -x "$TOOLS/bin/python" ]; then
        "$TOOLS/bin/python" "$@"
    else
        PYTHONPATH="$TOOLS/lib" python3 "$@"
    fi
}

have_tools() {
    tool_python -c 'import kubernetes_validate, yaml' >/dev/null 2>&1
}

if ! have_tools; then
    echo "validate: installing $PACKAGE into $TOOLS" >&2
    rm -rf "$TOOLS"
    if python3 -m venv "$TOOLS" >/dev/null 2>&1 && [ -x "$TOOLS/bin/pip" ]; then
        "$TOOLS/bin/pip" install --quiet --disable-pip-version-check "$PACKAGE"
    else
        # Debian without python3-venv: a plain directory on PYTHONPATH.
        rm -rf "$TOOLS"
        python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS/lib" "$PACKAGE"
    fi
    have_tools || { echo "validate: $PACKAGE did not install" >&2; exit 1; }
fi

echo "validate: Kubernetes $K8S_VERSION schemas (strict)"
tool_python -m kubernetes_validate --strict --quiet --kubernetes-version "$K8S_VERSION" "$ROOT"/deploy/k8s/*.yaml

if docker compose version >/dev/null 2>&1; then
    docker compose --file "$ROOT/deploy/docker-compose.yml" --profile extra config --quiet
    echo "validate: docker compose accepts docker-compose.yml"
elif command -v docker-compose >/dev/null 2>&1; then
    docker-compose --file "$ROOT/deploy/docker-compose.yml" --profile extra config --quiet
    echo "validate: docker-compose accepts docker-compose.yml"
fi

tool_python "$ROOT/deploy/check_config.py" "$ROOT"
