"""How much more one task gains from the inner step than another, from one evaluation's rounds.

Usage (repository root): python experiments/task_gap.py RUN/eval A B

Reads EVAL/returns.csv.gz (or an older returns.csv; written by `safemaml evaluate`) and prints, for tasks A and B (task_index values),
the mean Γ of each and the mean of the per-round difference Γ_B − Γ_A with its 95% t-interval over the
rounds. Rounds are independent draws (fresh trajectories and a fresh adaptation each), so the interval is
about this checkpoint's sampling noise only, not about training seeds. docs/results.md uses it for the
HalfCheetahDir evaluation (the favoured direction's smaller gain).
"""

import sys

from safemaml.measure.analysis_cli import task_gap_main

if __name__ == "__main__":
    sys.exit(task_gap_main())
