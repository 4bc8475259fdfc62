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
from safemaml.measure.analysis import (
    TASK_COLUMNS,
    band_location,
    band_test,
    block_table,
    gamma_intervals,
    parse_block,
    peaks,
    per_round_gamma,
)
from safemaml.measure.paired import paired_t_interval, paired_wilcoxon

BAND_PEAK = "The worst negative adaptation per comparison run: the largest per-task mean Γ in one evaluation folder."
BLOCK_MEANS = "Print a run's learning progress as a Markdown table: the mean of each metrics.csv column over blocks."
BAND_LOCATION = ("Where negative adaptation sits against where the initial policy is best, per base, and protocol "
                 "R2.2's test across bases (docs/results.md).")
GAMMA_INTERVALS = ("Each task's mean Γ with its 95% t-interval over an evaluation's rounds, the tasks whose interval "
                   "lies above 0 (negative adaptation there), and their overlap with a stated band (R2.1).")
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


def band_location_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=BAND_LOCATION)
    parser.add_argument("grids", type=Path, nargs="+", help="grid evaluation folders (RUN/eval-grid), one per base")
    parser.add_argument("--low", type=float, default=0.0, help="the training range's start (default 0)")
    parser.add_argument("--high", type=float, default=2.0, help="its end, excluded (default 2)")
    parser.add_argument("--width", type=float, default=0.2, help="|v_Γ − v_pre| that counts as the same place")
    args = parser.parse_args(argv)
    try:
        found = [band_location(g / "tasks.csv", args.low, args.high) for g in args.grids]
    except (OSError, SafeMamlError) as exc:
        sys.exit(f"error: {exc}")
    points = sum(1 for _ in _grid_points(args.grids[0] / "tasks.csv", args.low, args.high))
    print("| base | v_pre (best pre-update return) | v_Γ (largest mean Γ) | abs(v_Γ − v_pre) |")
    print("| --- | ---: | ---: | ---: |")
    for grid, (pre, gamma) in zip(args.grids, found):
        print(f"| {grid} | {pre:.1f} | {gamma:.1f} | {abs(gamma - pre):.1f} |")
    within, p = band_test(found, args.width, points)
    print(f"all within ±{args.width}: {'yes' if within else 'no'}; null probability of that "
          f"(v_Γ uniform over the {points} points of [{args.low:g}, {args.high:g})): {p:.4g}")


def _grid_points(tasks_csv: Path, low: float, high: float) -> list[float]:
    with tasks_csv.open() as f:
        rows = list(csv.DictReader(f))
    name = next(k for k in rows[0] if k != "task_index")
    return [float(r[name]) for r in rows if low <= float(r[name]) < high]


def gamma_intervals_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=GAMMA_INTERVALS)
    parser.add_argument("eval_dir", type=Path, help="an evaluation folder holding tasks.csv and returns.csv.gz")
    parser.add_argument("--band", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="a band to compare with, both ends included (e.g. the paper's 0.6 1.6 for AntVel)")
    args = parser.parse_args(argv)
    path = returns_file(args.eval_dir)
    if path is None or not (args.eval_dir / "tasks.csv").is_file():
        sys.exit(f"error: {args.eval_dir} has no tasks.csv and returns.csv.gz: run `safemaml evaluate` first")
    import pandas as pd

    try:
        table = gamma_intervals(pd.read_csv(path))
    except SafeMamlError as exc:
        sys.exit(f"error: {exc}")
    tasks = pd.read_csv(args.eval_dir / "tasks.csv")
    names = [c for c in tasks.columns if c not in TASK_COLUMNS]
    table = tasks[["task_index", *names]].merge(table, on="task_index")
    param = " ".join(names)
    print(f"| {param} | rounds | mean Γ | 95% t-interval | above 0 |")
    print("| ---: | ---: | ---: | --- | --- |")
    for r in table.itertuples(index=False):
        where = " ".join(f"{getattr(r, n):g}" for n in names)
        print(f"| {where} | {r.rounds} | {r.mean_gamma:+.1f} | [{r.lo:+.1f}, {r.hi:+.1f}] | {'yes' if r.above else ''} |")
    above = table[table["above"]]
    found = ", ".join(" ".join(f"{v:g}" for v in row) for row in above[names].itertuples(index=False))
    print(f"tasks with the interval above 0: {len(above)} of {len(table)}" + (f" ({param} {found})" if found else
                                                                           " (no negative adaptation found)"))
    if args.band is not None and len(names) == 1:
        low, high = args.band
        inside = above[(above[names[0]] >= low - 1e-9) & (above[names[0]] <= high + 1e-9)]
        print(f"of them inside [{low:g}, {high:g}]: {len(inside)}")
