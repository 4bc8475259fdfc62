"""The command lines of the experiment analyses (experiments/band_peak.py, block_means.py, task_gap.py are
their launchers): argument parsing and printing around safemaml.measure.analysis."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from safemaml.errors import SafeMamlError
from safemaml.files import returns_file
from safemaml.measure.analysis import block_table, parse_block, peaks, per_round_gamma
from safemaml.measure.paired import paired_t_interval, paired_wilcoxon

BAND_PEAK = "The worst negative adaptation per comparison run: the largest per-task mean Γ in one evaluation folder."
BLOCK_MEANS = "Print a run's learning progress as a Markdown table: the mean of each metrics.csv column over blocks."
TASK_GAP = "How much more one task gains from the inner step than another, from one evaluation's rounds."


def band_peak_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=BAND_PEAK)
    parser.add_argument("compare_dir", type=Path, help="a `safemaml compare` output folder")
    parser.add_argument("--folder", default="eval-band", help="evaluation folder in each run (default eval-band)")
    parser.add_argument("--reference", default="maml", help="the arm every other is paired against (default maml)")
    args = parser.parse_args(argv)
    table = peaks(args.compare_dir, args.folder)
    if not table:
        sys.exit(f"no */seed-*/{args.folder}/tasks.csv under {args.compare_dir}: run `safemaml compare` first")
    reference = args.reference
    if reference not in table:
        sys.exit(f"no arm {reference} under {args.compare_dir} (arms: {', '.join(table)})")
    seeds = sorted(table[reference])
    for arm, by_seed in table.items():
        if sorted(by_seed) != seeds:
            sys.exit(f"{arm} has seeds {sorted(by_seed)}, {reference} has {seeds}: pair them first")
    ref = np.array([table[reference][s] for s in seeds])
    print(f"largest mean Γ over the tasks of {args.folder}, seeds {' '.join(map(str, seeds))}")
    for arm, by_seed in table.items():
        x = np.array([by_seed[s] for s in seeds])
        line = f"{arm:14s} " + " ".join(f"{v:+6.1f}" for v in x) + f"  mean {x.mean():+.1f}"
        if arm != reference:
            mean, lo, hi = paired_t_interval(x, ref)
            line += (f"  − {reference} {mean:+.1f} [{lo:+.1f}, {hi:+.1f}] (Wilcoxon p {paired_wilcoxon(x, ref):.2g};"
                     f" lower on {int((x < ref).sum())} of {len(seeds)})")
        print(line)


def block_means_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=BLOCK_MEANS)
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
    try:
        print(block_table(rows, [parse_block(b) for b in args.blocks], args.timings))
    except SafeMamlError as exc:
        raise SystemExit(f"error: {exc}") from None


def task_gap_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=TASK_GAP)
    parser.add_argument("eval_dir", type=Path, help="an evaluation folder holding returns.csv.gz (or returns.csv)")
    parser.add_argument("a", type=int, help="task_index of the first task")
    parser.add_argument("b", type=int, help="task_index of the second task")
    args = parser.parse_args(argv)
    path = returns_file(args.eval_dir)
    if path is None:
        sys.exit(f"no returns.csv.gz in {args.eval_dir}: run `safemaml evaluate` first (it writes it)")
    import pandas as pd

    gamma = per_round_gamma(pd.read_csv(path))
    for task in (args.a, args.b):
        if task not in gamma.columns:
            sys.exit(f"task {task} is not in {path} (tasks: {', '.join(map(str, gamma.columns))})")
    mean, lo, hi = paired_t_interval(gamma[args.b].to_numpy(), gamma[args.a].to_numpy())
    print(f"mean Γ: task {args.a} {gamma[args.a].mean():.1f}, task {args.b} {gamma[args.b].mean():.1f}")
    print(f"Γ_{args.b} − Γ_{args.a}: {mean:+.1f}, 95% t-interval over {len(gamma)} rounds "
          f"[{lo:+.1f}, {hi:+.1f}]")
