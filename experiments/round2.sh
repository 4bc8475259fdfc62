#!/usr/bin/env bash
# Round 2's long runs (issue 29; the protocols R2.1-R2.3 of docs/results.md), in order and resumable: rerun
# after any stop and every step continues or skips what is done (train --resume continues from last.pt or says
# the run is complete; evaluate --reuse keeps a finished evaluation of the same checkpoint, and an interrupted
# one continues from its finished rounds).
#   1. R2.1 and R2.2: AntVel and the HalfCheetahVel bases of seeds 1 and 2 to 500 iterations, side by side,
#      then each evaluated on p(T) (40 tasks, task seed 0) and on the grid 0:3:0.1 (RUN/eval-grid);
#   2. R2.3: experiments/longer.sh.
# Usage (repository root), in the background at the lowest priority:
#   OMP_NUM_THREADS=1 nohup nice -n 19 bash experiments/round2.sh > round2.log 2>&1 &
# Stop it with `kill -TERM $(cat round2.pid)`: the script writes its own PID there (`$!` after `nohup ... &`
# can name a wrapper shell instead, whose death passes nothing on). It passes the signal to the runs, and every
# run keeps its last finished iteration.
set -euo pipefail
source "$(dirname "$0")/lanes.sh"
echo $$ > round2.pid
trap 'rm -f round2.pid' EXIT
base() {  # RUN
  run safemaml train --resume "$1" --quiet
  run safemaml evaluate "$1" --reuse --sample 40 --task-seed 0
  run safemaml evaluate "$1" --reuse --grid 0:3:0.1 --out "$1/eval-grid"
}
trap stop_lanes TERM INT
for base_run in experiments/runs/ant-vel-maml-500 experiments/runs/halfcheetah-vel-maml-500-seed1 \
                experiments/runs/halfcheetah-vel-maml-500-seed2; do
  start_lane base "$base_run"
done
wait_lanes
trap - TERM INT EXIT
PID_FILE=round2.pid exec bash experiments/longer.sh  # the same PID: a TERM to it reaches longer.sh's runs
