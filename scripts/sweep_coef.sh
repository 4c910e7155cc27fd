#!/usr/bin/env bash
# One method, one coefficient over a list of values x seeds (Hydra multirun), then `rlvr analyze`.
#   DRY_RUN=1 scripts/sweep_coef.sh                                   # entropy_bonus coef 1e-4,1e-3,1e-2
#   METHOD=kl_cov PARAM=method.beta VALUES=0.1,1,10 EXTRA="algo.mini_batch_size=64" scripts/sweep_coef.sh
#   METHOD=clip_cov PARAM=method.ratio VALUES=2e-4,2e-3,2e-2 SEEDS=0,1,2 scripts/sweep_coef.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RLVR=${RLVR:-.venv/bin/rlvr}
METHOD=${METHOD:-entropy_bonus}
PARAM=${PARAM:-method.coef}
VALUES=${VALUES:-1e-4,1e-3,1e-2}
SEEDS=${SEEDS:-0}
EXTRA=${EXTRA:-}
SWEEP=${SWEEP:-runs/sweeps/${METHOD}_${PARAM##*.}_$(date +%Y-%m-%d_%H-%M-%S)}

run() { echo "+ $*"; [ "${DRY_RUN:-0}" = 1 ] || "$@"; }

# exp_name gets the value so each run has its own folder
# shellcheck disable=SC2086
run "$RLVR" train -m "+method=$METHOD" "$PARAM=$VALUES" "seed=$SEEDS" $EXTRA \
  "exp_name=\${data.name}_\${method.name}_${PARAM##*.}\${$PARAM}_s\${seed}" "hydra.sweep.dir=$SWEEP"
run "$RLVR" analyze "$SWEEP"
