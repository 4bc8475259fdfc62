"""Protocol R2.2 (docs/results.md): where each MAML base's negative adaptation sits (v_Γ, the grid velocity of
the largest mean Γ) against where its initial, pre-update policy is best (v_pre), over the training range [0, 2),
and the pre-registered test across bases: all |v_Γ − v_pre| <= 0.2, with its null probability.

Usage (repository root): python experiments/band_location.py experiments/runs/halfcheetah-vel-maml-500/eval-grid \
    experiments/runs/halfcheetah-vel-maml-500-seed1/eval-grid experiments/runs/halfcheetah-vel-maml-500-seed2/eval-grid
"""

import sys

from safemaml.measure.analysis_cli import band_location_main

if __name__ == "__main__":
    sys.exit(band_location_main())
