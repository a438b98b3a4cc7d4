#!/usr/bin/env bash
# Creates .venv and installs expertseg into it. Quick when nothing changed (a stamp records what
# was installed). torch is installed first, from TORCH_SPEC, so that no other package pulls in a
# several-GB CUDA build by accident; GPU users set e.g. TORCH_SPEC="torch==2.13.0" with their
# index: PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cu128.
#
#   TORCH_SPEC        torch requirement (default torch==2.13.0)
#   EXPERTSEG_VENV    where the environment lives (default <repo>/.venv)
#   EXPERTSEG_EXTRAS  extras to install (default "test"; e.g. "test,postgres")
#   PYTHON            interpreter that creates the venv (default python3)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${EXPERTSEG_VENV:-$ROOT/.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXPERTSEG_EXTRAS:-test}
PY=${PYTHON:-python3}

want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16) $TORCH_SPEC [$EXTRAS]"
stamp="$VENV/.expertseg-installed"
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setting up $VENV ($TORCH_SPEC, extras: $EXTRAS)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[$EXTRAS]"
echo "$want" > "$stamp"
echo "environment ready: $VENV" >&2
