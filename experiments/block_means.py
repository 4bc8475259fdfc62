"""Print a run's learning progress as a Markdown table: the mean of each metrics.csv column over blocks of
meta-iterations, the numbers docs/learning.md quotes.

Iterations are counted from 1 as the training log prints them (metrics.csv's `iteration` column counts from 0).
A block past the run's last iteration is an error, not an empty row.

Usage: python experiments/block_means.py RUN [--blocks 1-5 96-100 496-500] [--timings]
"""

import sys

from safemaml.measure.analysis_cli import block_means_main

if __name__ == "__main__":
    sys.exit(block_means_main())
