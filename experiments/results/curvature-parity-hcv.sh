#!/bin/bash
# HalfCheetahVel learning parity of the analytic curvature (the default) against the exact one
# (docs/performance.md): 2 seeds x 40 meta-iterations each, the paper's config. The exact curvature's
# seed 0 is the first 40 iterations of experiments/runs/halfcheetah-vel-maml-500 (same config and seed),
# copied into exact-1.0/seed0/metrics.csv. Resumable. Usage (repository root):
#   bash experiments/results/curvature-parity-hcv.sh && python experiments/results/curvature-parity/plot.py \
#       experiments/results/curvature-parity-hcv
set -e
out=experiments/results/curvature-parity-hcv
run() {  # curvature seed
  local dir=$out/$1-1.0/seed$2
  if [ -f $dir/last.pt ]; then safemaml train --resume $dir --quiet
  else safemaml train --config experiments/halfcheetah-vel.toml --iterations 40 --seed $2 \
         --set meta.curvature=$1 --out $dir --quiet; fi
}
mkdir -p $out/exact-1.0/seed0
head -n 41 experiments/runs/halfcheetah-vel-maml-500/metrics.csv > $out/exact-1.0/seed0/metrics.csv
run analytic 0
run exact 1
run analytic 1
