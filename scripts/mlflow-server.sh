#!/usr/bin/env bash
# The team's MLflow tracking server: PostgreSQL backend, artifacts proxied to a folder (or an
# object store URI), reachable by the lab's machines.
#
#   BACKEND_URI   postgresql://user@db-host:5432/mlflow   (required)
#   ARTIFACTS     artifact destination (default ./mlflow-artifacts; s3://... works too)
#   HOST PORT     where to listen (default 0.0.0.0 5000)
#   ALLOWED_HOSTS host names clients use, e.g. "mlflow.lab.local,10.0.0.5" (MLflow's DNS-rebinding guard)
#
# Clients then: export MLFLOW_TRACKING_URI=http://<server>:5000
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${EXPERTSEG_VENV:-$ROOT/.venv}
: "${BACKEND_URI:?set BACKEND_URI=postgresql://user@db-host:5432/mlflow}"
uri=$BACKEND_URI
case "$uri" in postgresql://*) uri="postgresql+psycopg://${uri#postgresql://}" ;; esac
args=(server --backend-store-uri "$uri" --artifacts-destination "${ARTIFACTS:-$PWD/mlflow-artifacts}"
      --host "${HOST:-0.0.0.0}" --port "${PORT:-5000}")
[ -n "${ALLOWED_HOSTS:-}" ] && args+=(--allowed-hosts "$ALLOWED_HOSTS")
exec "$VENV/bin/mlflow" "${args[@]}"
