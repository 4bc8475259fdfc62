"""Protocol R2.3's analysis (docs/results.md), fixed before its runs: cvar and lagrangian against maml over
training seeds 0-5 at iteration 120; primary V̂ on p(T) (paired t-test, Holm over the two objectives), the
secondaries, the decision rule, and cvar's constraint and the lagrangian's multiplier over iterations 21-120.

Usage (repository root): python experiments/longer_tests.py [experiments/results/longer-halfcheetah-vel]
"""

import sys

from safemaml.measure.analysis_cli import longer_tests_main

if __name__ == "__main__":
    sys.exit(longer_tests_main())
