#!/bin/bash
# nav2d learning parity of TRPO curvatures (docs/performance.md): the nav2d preset, seeds 0-4, the same
# seeds for both curvatures, grown in rounds of 5 meta-iterations over all seeds (so that all seeds always
# have the same length) up to MAX. Resumable: rerunning it continues every run from its last.pt.
# Usage (repository root): bash experiments/results/curvature-parity/run.sh CURVATURE SUBSAMPLE [MAX]
set -e
curv=$1; sub=$2; max=${3:-30}
out=experiments/results/curvature-parity/$curv-$sub
for target in $(seq 5 5 $max); do
  for seed in 0 1 2 3 4; do
    run=$out/seed$seed
    done_its=$(( $( [ -f $run/metrics.csv ] && wc -l < $run/metrics.csv || echo 1 ) - 1 ))
    if [ $done_its -ge $target ]; then
      continue
    elif [ -f $run/last.pt ]; then
      safemaml train --resume $run --iterations $target --quiet
    else
      safemaml train --config experiments/nav2d.toml --iterations $target --seed $seed \
        --set meta.curvature=$curv --set meta.fvp_subsample=$sub --out $run --quiet
    fi
  done
done
