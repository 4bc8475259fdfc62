"""Protocol R2.1's grid endpoint (docs/results.md): each task's mean Γ with its 95% t-interval over the
evaluation's rounds, the tasks whose interval lies above 0, and how many of them fall inside the paper's band.

Usage (repository root): python experiments/gamma_intervals.py experiments/runs/ant-vel-maml-500/eval-grid --band 0.6 1.6
"""

import sys

from safemaml.measure.analysis_cli import gamma_intervals_main

if __name__ == "__main__":
    sys.exit(gamma_intervals_main())
