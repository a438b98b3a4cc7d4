#!/usr/bin/env bash
# The main job on the embedded defaults: demo data -> multi-expert pretraining -> adaptation to
# the new doctor -> comparison report. Runs in a local SQLite MLflow store (./mlruns), no server.
#
#   DEMO_OUT   where everything goes (default ./demo_out)
#   DEMO_SEED  data and training seed (default 0)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
VENV=${EXPERTSEG_VENV:-$ROOT/.venv}
ES="$VENV/bin/expertseg"
OUT=${DEMO_OUT:-demo_out}
SEED=${DEMO_SEED:-0}
CONFIG="$ROOT/configs/demo.yaml"

stage() { printf '\n=== %s ===\n' "$*"; }
# this machine's fp32 matmul peak, so that the stage times below compare with BENCHMARKS.md's
PEAK=$("$VENV/bin/python" -c "from pipelines.bench.speed import matmul_peak_gflops; print(f'{matmul_peak_gflops():.0f}')")
echo "machine: fp32 matmul peak ${PEAK} GFLOP/s on $("$VENV/bin/python" -c "import torch; print(torch.get_num_threads())") threads"
t0=$(date +%s)
lap() { local now; now=$(date +%s); echo "[$1 took $((now - t))s]"; t=$now; }
t=$t0

stage "1/4 demo data"
"$ES" data demo --out "$OUT/data" --seed "$SEED" --overwrite
"$ES" data check "$OUT/data" | tail -n 25
lap "data"

stage "2/4 pretraining on every expert except the new doctor"
"$ES" pretrain --data "$OUT/data" --out "$OUT/pretrain" --config "$CONFIG" --set seed="$SEED" --overwrite
lap "pretraining"

stage "3/4 adapting to the new doctor from 3 of their cases"
NEW=$("$VENV/bin/python" -c "import json,sys; s=json.load(open(sys.argv[1])); print(next(e for e,v in s['experts'].items() if (v or {}).get('role')=='new'))" "$OUT/data/dataset.json")
"$ES" adapt --model "$OUT/pretrain" --data "$OUT/data" --expert "$NEW" --shots 3 --out "$OUT/adapt-$NEW" --config "$CONFIG" --set seed="$SEED" --overwrite
lap "adaptation"

stage "4/4 comparing experts and models"
"$ES" compare --model "$OUT/adapt-$NEW" --data "$OUT/data" --out "$OUT/compare" --config "$CONFIG" --overwrite
lap "comparison"

echo
echo "demo finished in $(( $(date +%s) - t0 ))s (fp32 matmul peak ${PEAK} GFLOP/s; BENCHMARKS.md, 'Demo wall time', lists a reference machine's stages)"
echo "report:    $OUT/compare/report.html"
echo "MLflow UI: $VENV/bin/mlflow ui --backend-store-uri sqlite:///$PWD/mlruns/mlflow.db"
