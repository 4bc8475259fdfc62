"""Launcher of safemaml.studies.pick: write a comparison's arms file from its tuning studies, by the rule
fixed in docs/results.md before they ran (the rule and its usage: safemaml/studies/pick.py)."""

import sys

from safemaml.studies.pick import main

if __name__ == "__main__":
    sys.exit(main())
