#!/usr/bin/env bash
# Every method x seeds on one setting (Hydra multirun), then `rlvr analyze` on the sweep.
# Edit the variables or set them on the command line:
#   DRY_RUN=1 scripts/sweep_methods.sh                      # print what would run
#   SEEDS=0,1,2 EXTRA="trainer.max_steps=100" scripts/sweep_methods.sh
#   EXTRA="+recipes=clip_cov/qwen2.5-7b_dapo17k trainer.gpus=8" METHODS=baseline,clip_cov,kl_cov scripts/sweep_methods.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RLVR=${RLVR:-.venv/bin/rlvr}
METHODS=${METHODS:-baseline,entropy_bonus,clip_cov,kl_cov,siren,rsi_s,dlogp,high_entropy}
SEEDS=${SEEDS:-0}
EXTRA=${EXTRA:-}
SWEEP=${SWEEP:-runs/sweeps/methods_$(date +%Y-%m-%d_%H-%M-%S)}

run() { echo "+ $*"; [ "${DRY_RUN:-0}" = 1 ] || "$@"; }

# shellcheck disable=SC2086  # EXTRA is a list of overrides
run "$RLVR" train -m "+method=$METHODS" "seed=$SEEDS" $EXTRA "hydra.sweep.dir=$SWEEP"
run "$RLVR" analyze "$SWEEP"
