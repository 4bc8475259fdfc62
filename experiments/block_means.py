"""Print a run's learning progress as a Markdown table: the mean of each metrics.csv column over blocks of
meta-iterations, the numbers docs/learning.md quotes.

Iterations are counted from 1 as the training log prints them (metrics.csv's `iteration` column counts from 0).
A block past the run's last iteration is an error, not an empty row.

Usage: python experiments/block_means.py RUN [--blocks 1-5 96-100 496-500] [--timings]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

COLUMNS = {  # metrics.csv column -> table header, in table order
    "pre_return": "pre-update return",
    "post_return": "post-update return",
    "mean_gamma": "mean Γ",
    "frac_negative": "tasks with Γ > 0",
    "violation_rate": "V̂",
    "action_std": "action std",
}
TIMINGS = {"time_sampling": "s sampling", "time_optimize": "s meta-step"}  # wall time: includes any pause


def parse_block(text: str) -> tuple[int, int]:
    """'96-100' -> (96, 100), both inclusive and counted from 1."""
    try:
        first, last = (int(part) for part in text.split("-"))
    except ValueError:
        raise SystemExit(f"error: block {text!r} is not FIRST-LAST, e.g. 96-100") from None
    if not 1 <= first <= last:
        raise SystemExit(f"error: block {text!r} needs 1 <= FIRST <= LAST")
    return first, last


def block_means(rows: list[dict[str, str]], first: int, last: int, columns: dict[str, str]) -> dict[str, float]:
    """Mean of each of `columns` (those the run has) over iterations first..last (counted from 1)."""
    block = [row for row in rows if first <= int(row["iteration"]) + 1 <= last]
    if len(block) != last - first + 1:
        raise SystemExit(f"error: the run has {len(rows)} iterations; block {first}-{last} is not complete")
    return {column: statistics.fmean(float(row[column]) for row in block)
            for column in columns if column in block[0]}


def table(rows: list[dict[str, str]], blocks: list[tuple[int, int]], timings: bool = False) -> str:
    """The Markdown table, one row per block, columns in COLUMNS (and TIMINGS) order, those the run has."""
    headers = COLUMNS | (TIMINGS if timings else {})
    means = [block_means(rows, first, last, headers) for first, last in blocks]
    columns = list(means[0])
    lines = ["| iterations | " + " | ".join(headers[c] for c in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    for (first, last), row in zip(blocks, means):
        cells = [f"{row[c]:.2f}" if c in ("frac_negative", "violation_rate", "action_std") else f"{row[c]:.1f}"
                 for c in columns]
        lines.append(f"| {first}–{last} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder (holds metrics.csv)")
    parser.add_argument("--blocks", nargs="+", default=["1-5"], help="FIRST-LAST, counted from 1")
    parser.add_argument("--timings", action="store_true", help="add the mean seconds of sampling and meta-step "
                        "(wall time: a run paused or sharing the machine inflates them)")
    args = parser.parse_args(argv)
    path = args.run / "metrics.csv"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    print(table(rows, [parse_block(b) for b in args.blocks], args.timings))


if __name__ == "__main__":
    sys.exit(main())
