#!/usr/bin/env bash
# R2.3 of docs/results.md (issue 29.3): continue the round-1 fine-tunes of maml, cvar and lagrangian from 20 to
# 120 iterations (copies, resumed), then evaluate each at 120 on p(T), the band and a fresh task set.
# Rerun after any stop: every step skips what is done (resume continues, evaluate reuses finished rounds).
set -euo pipefail
SRC=experiments/results/comparison-halfcheetah-vel/compare
OUT=experiments/results/longer-halfcheetah-vel
EVAL=(--trajectories 20 --repeats 60 --seed 0)
for seed in 0 1 2 3 4 5; do
  for arm in maml cvar lagrangian; do
    run=$OUT/$arm/seed-$seed
    if [ ! -d "$run" ]; then  # the copy: config, metrics, last.pt, checkpoints (not the evaluations)
      mkdir -p "$run" && cp -r "$SRC/$arm/seed-$seed"/{config.toml,metrics.csv,last.pt,checkpoints} "$run"/
    fi
    safemaml train --resume "$run" --iterations 120
    safemaml evaluate "$run" "${EVAL[@]}" --task-seed 0 --out "$run/eval"
    safemaml evaluate "$run" "${EVAL[@]}" --grid 0.3:1.1:0.1 --out "$run/eval-band"
    safemaml evaluate "$run" "${EVAL[@]}" --sample 40 --task-seed 1 --out "$run/eval-fresh"
  done
done
