# Lanes for the round-2 drivers (sourced by round2.sh and longer.sh): functions run side by side in background
# subshells, each of which passes SIGTERM on to the command it is running and then stops, so that one TERM to
# the driver stops every run, whichever command a lane is at or between (safemaml keeps each run's last
# finished iteration and each evaluation's finished rounds).
LANE_PIDS=()
run() {  # COMMAND...: in the background and waited for, so that the lane's TERM trap runs at once
  "$@" & LANE_CHILD=$!
  wait "$LANE_CHILD"
}
start_lane() {  # FUNCTION ARGS...
  (
    LANE_CHILD=
    trap 'if [ -n "$LANE_CHILD" ]; then kill -TERM "$LANE_CHILD" 2>/dev/null; fi; wait; exit 143' TERM INT
    "$@"
  ) &
  LANE_PIDS+=($!)
}
stop_lanes() {
  kill -TERM "${LANE_PIDS[@]}" 2>/dev/null || true
  wait; exit 143
}
wait_lanes() {  # after every lane has finished: the status of the last that failed (0 if none)
  local status=0 pid
  for pid in "${LANE_PIDS[@]}"; do wait "$pid" || status=$?; done
  LANE_PIDS=()
  return "$status"
}
