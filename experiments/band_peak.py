"""The worst negative adaptation per comparison run: the largest per-task mean Γ in one evaluation folder.

Usage (repository root): python experiments/band_peak.py COMPARE_DIR [--folder eval-band] [--reference ARM]

For every COMPARE_DIR/ARM/seed-N/FOLDER/tasks.csv (written by `safemaml compare`), takes the largest
`mean_gamma` over the tasks: how much the inner step hurts on the task where it hurts most. Prints it per
arm and seed, and each arm minus the reference arm (`maml` by default) paired over the seeds, with a 95%
t-interval and a Wilcoxon p (`safemaml.runs.compare`). V̂ and the fraction of tasks with mean Γ > 0 count tasks;
this measures the size of the worst one. It is not one of the comparison's endpoints fixed in advance:
docs/results.md reports it as a look taken after the comparison ran.
"""

import sys

from safemaml.measure.analysis_cli import band_peak_main

if __name__ == "__main__":
    sys.exit(band_peak_main())
