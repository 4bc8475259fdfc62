#!/bin/bash
# Learning parity of TRPO's cheaper direction (issue 28.1, docs/performance.md "Learning parity of the direction"):
# VARIANT "candidate": meta.cg_precondition = adapted-fisher, meta.cg_iters = 5, meta.cg_step_length = residual;
# VARIANT "default": today's defaults (plain CG 10, analytic curvature), the reference, rerun with today's code
# (the committed exact-curvature runs predate the float64 baseline solver of 2026-11-26).
#   nav2d: the preset, seeds 0-4, 15 meta-iterations -> experiments/results/direction-parity/nav2d/VARIANT/seedS
#   halfcheetah-vel: the paper's config, seeds 0-1, 40 meta-iterations -> .../halfcheetah-vel/VARIANT/seedS
# Resumable: rerunning continues every run from its last.pt. Usage (repository root):
#   bash experiments/results/direction-parity/run.sh nav2d|halfcheetah-vel default|candidate [SEEDS...]
#   python experiments/results/curvature-parity/plot.py experiments/results/direction-parity/FAMILY
set -e
family=${1:?nav2d or halfcheetah-vel}; variant=${2:?default or candidate}; shift 2
case $variant in
  default) SETTINGS=(--set meta.cg_precondition=none --set meta.cg_iters=10 --set meta.cg_step_length=product) ;;
  candidate) SETTINGS=(--set meta.cg_precondition=adapted-fisher --set meta.cg_iters=5 --set meta.cg_step_length=residual) ;;
  *) echo "unknown variant $variant" >&2; exit 2 ;;
esac
case $family in
  nav2d) cfg=experiments/nav2d.toml; seeds="0 1 2 3 4"; its=15 ;;
  halfcheetah-vel) cfg=experiments/halfcheetah-vel.toml; seeds="0 1"; its=40 ;;
  *) echo "unknown family $family" >&2; exit 2 ;;
esac
out=experiments/results/direction-parity/$family/$variant
for seed in ${@:-$seeds}; do
  run=$out/seed$seed
  if [ -f $run/last.pt ]; then safemaml train --resume $run --quiet
  else safemaml train --config $cfg --iterations $its --seed $seed "${SETTINGS[@]}" --out $run --quiet; fi
done
