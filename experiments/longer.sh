#!/usr/bin/env bash
# R2.3 of docs/results.md (issue 29.3): continue the round-1 fine-tunes of maml, cvar and lagrangian from 20 to
# 120 iterations (copies, resumed), then evaluate each at 120 on p(T), the band and a fresh task set.
# Rerun after any stop: every step skips what is done (resume continues; evaluate --reuse keeps a finished
# evaluation of the same checkpoint, and an interrupted one continues from its finished rounds).
# LANES (default 2, one per core with OMP_NUM_THREADS=1) runs that many seeds side by side: lane k takes the
# seeds s with s % LANES == k. Each run is the same whichever lane runs it (its randomness is its own).
# Stop it with `kill -TERM PID` (this script's PID; PID_FILE, if set, names a file holding it, removed at exit).
set -euo pipefail
source "$(dirname "$0")/lanes.sh"
SRC=${SRC:-experiments/results/comparison-halfcheetah-vel/compare}
OUT=${OUT:-experiments/results/longer-halfcheetah-vel}
# Round 1's request, β and δ included (compare/comparison-request.json): V̂ of every arm at β = δ = 0.1. Until
# 2026-12-07 the β and δ were missing, so cvar's and the lagrangian's evaluations used their objectives' own β;
# longer_tests.py scores V̂ at 0.1 from the per-task wins either way (β enters no simulation); a rerun of this
# script re-evaluates those runs at 0.1.
EVAL=(--trajectories 20 --repeats 60 --seed 0 --beta 0.1 --delta 0.1)
LANES=${LANES:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
one() {  # ARM SEED
  local run=$OUT/$1/seed-$2
  if [ ! -f "$run/last.pt" ]; then  # the copy (config, metrics, last.pt, checkpoints), put in place whole
    rm -rf "$run.copy" && mkdir -p "$run.copy"
    cp -r "$SRC/$1/seed-$2"/{config.toml,metrics.csv,last.pt,checkpoints} "$run.copy"/
    rm -rf "$run" && mv "$run.copy" "$run"
  fi
  run safemaml train --resume "$run" --iterations 120
  run safemaml evaluate "$run" --reuse "${EVAL[@]}" --task-seed 0 --out "$run/eval"
  run safemaml evaluate "$run" --reuse "${EVAL[@]}" --grid 0.3:1.1:0.1 --out "$run/eval-band"
  run safemaml evaluate "$run" --reuse "${EVAL[@]}" --sample 40 --task-seed 1 --out "$run/eval-fresh"
}
lane() {  # K
  for seed in 0 1 2 3 4 5; do
    [ $((seed % LANES)) -eq "$1" ] || continue
    for arm in maml cvar lagrangian; do one "$arm" "$seed"; done
  done
}
if [ -n "${PID_FILE:-}" ]; then trap 'rm -f "$PID_FILE"' EXIT; fi
trap stop_lanes TERM INT
for ((k = 0; k < LANES; k++)); do start_lane lane "$k"; done
wait_lanes
