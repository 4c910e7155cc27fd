#!/usr/bin/env bash
# `rlvr eval` on every checkpoint of a run (results in RUN/eval/step_N/), then `rlvr analyze RUN`, whose
# table and eval.png then include the benchmark accuracy of each checkpoint.
#   DRY_RUN=1 scripts/eval_checkpoints.sh runs/arith_grpo_baseline_s0
#   BENCHMARKS="[aime24,aime25,amc23]" N=32 EXTRA="eval.temperature=0.6" scripts/eval_checkpoints.sh runs/<run>
set -euo pipefail
cd "$(dirname "$0")/.."
RLVR=${RLVR:-.venv/bin/rlvr}
RUN=${1:?usage: scripts/eval_checkpoints.sh RUN_DIR}
BENCHMARKS=${BENCHMARKS:-[arith]}
N=${N:-4}
EXTRA=${EXTRA:-}

run() { echo "+ $*"; [ "${DRY_RUN:-0}" = 1 ] || "$@"; }

shopt -s nullglob
ckpts=("$RUN"/checkpoints/step_*/hf)
[ ${#ckpts[@]} -gt 0 ] || { echo "no checkpoints under $RUN/checkpoints (step_*/hf)" >&2; exit 2; }
for ckpt in "${ckpts[@]}"; do
  step=$(basename "$(dirname "$ckpt")")
  # shellcheck disable=SC2086
  run "$RLVR" eval "model.path=$ckpt" "model.name=$step" "benchmarks=$BENCHMARKS" "eval.n=$N" $EXTRA "out_dir=$RUN/eval/$step"
done
run "$RLVR" analyze "$RUN"
