"""Protocol R2.3's training over meta-iterations (docs/results.md): post-update return per arm, cvar's
constraint C (met below 0) and the lagrangian's multiplier λ, a thin line per training seed and a thick one
for each arm's mean; a dashed line where the continuation from the 20-iteration fine-tunes began. A picture
of what longer_tests.py reports in numbers, not a test.

Usage (repository root): python experiments/longer_figure.py [ROOT] [--out PNG] [--overwrite]
"""

import sys

from safemaml.measure.analysis_cli import longer_figure_main

if __name__ == "__main__":
    sys.exit(longer_figure_main())
