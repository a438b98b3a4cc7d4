#!/usr/bin/env bash
# Sets up .venv (see scripts/setup.sh) and runs the test suite. Extra arguments go to pytest,
# e.g. scripts/test.sh -m slow, scripts/test.sh tests/experts/networks -x.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
VENV=${EXPERTSEG_VENV:-$ROOT/.venv}
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
