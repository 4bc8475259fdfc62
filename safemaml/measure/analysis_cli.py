"""The command lines of the experiment analyses (experiments/band_peak.py, block_means.py, task_gap.py are
their launchers): argument parsing and printing around safemaml.measure.analysis."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from safemaml.errors import SafeMamlError
from safemaml.files import returns_file
from safemaml.measure.analysis import (
    TASK_COLUMNS,
    band_location,
    band_test,
    block_table,
    gamma_intervals,
    grid_rows,
    median_returns,
    parse_block,
    peaks,
    per_round_gamma,
    positive_points,
)
from safemaml.measure.paired import paired_t_interval, paired_wilcoxon
from safemaml.measure.paired_tests import (
    Endpoint,
    PairedTest,
    against_control,
    collect,
    largest_mean_gamma,
    metric_curves,
    seed_runs,
    summary_value,
    violation_rate_at,
)

if TYPE_CHECKING:
    import pandas as pd

BAND_PEAK = "The worst negative adaptation per comparison run: the largest per-task mean Γ in one evaluation folder."
BLOCK_MEANS = "Print a run's learning progress as a Markdown table: the mean of each metrics.csv column over blocks."
BAND_LOCATION = ("Where negative adaptation sits against where the initial policy is best, per base, and protocol "
                 "R2.2's test across bases (docs/results.md).")
GAMMA_INTERVALS = ("Each task's mean Γ with its 95% t-interval over an evaluation's rounds, the tasks whose interval "
                   "lies above 0 (negative adaptation there), and their overlap with a stated band (R2.1); beside it, "
                   "whether the median post-update return is below the median pre-update one (the paper's reading).")
LONGER_TESTS = ("Protocol R2.3's tests (docs/results.md): cvar and lagrangian against maml, paired over the training "
                "seeds, on the primary endpoint (V̂ on p(T)) and the secondaries, Holm over the objectives; the "
                "decision rule; cvar's constraint and the lagrangian's multiplier over iterations 21-120.")
LONGER_FIGURE = ("Protocol R2.3's training drawn over meta-iterations: post-update return per arm, cvar's constraint "
                 "C (met below 0) and the lagrangian's multiplier λ, a line per seed and each arm's mean.")
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
    parser.add_argument("--paper-band", type=float, nargs=2, default=[0.6, 1.1], metavar=("LOW", "HIGH"),
                        help="the paper's band, for the descriptive overlap column (default: HalfCheetahVel's 0.6 1.1)")
    args = parser.parse_args(argv)
    try:
        found = [band_location(g / "tasks.csv", args.low, args.high) for g in args.grids]
        bands = [positive_points(g / "tasks.csv") for g in args.grids]
    except (OSError, SafeMamlError) as exc:
        sys.exit(f"error: {exc}")
    name, rows = grid_rows(args.grids[0] / "tasks.csv")
    points = sum(args.low <= float(r[name]) < args.high for r in rows)
    low, high = args.paper_band
    print(f"| base | v_pre (best pre-update return) | v_Γ (largest mean Γ) | abs(v_Γ − v_pre) | mean Γ > 0 at | "
          f"of them in [{low:g}, {high:g}] |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for grid, (pre, gamma), band in zip(args.grids, found, bands):
        inside = [v for v in band if low - 1e-9 <= v <= high + 1e-9]
        print(f"| {grid} | {pre:.1f} | {gamma:.1f} | {abs(gamma - pre):.1f} | {', '.join(f'{v:g}' for v in band) or 'none'} "
              f"| {', '.join(f'{v:g}' for v in inside) or 'none'} |")
    within, p = band_test(found, args.width, points)
    print(f"all within ±{args.width}: {'yes' if within else 'no'}; null probability of that "
          f"(v_Γ uniform over the {points} points of [{args.low:g}, {args.high:g})): {p:.4g}")


def _listing(rows: pd.DataFrame) -> str:
    """'0.5, 1.2' (or '0.5 1, 1.2 0' for several parameters): the task parameters of the given rows."""
    return ", ".join(" ".join(f"{v:g}" for v in row) for row in rows.itertuples(index=False))


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
        returns = pd.read_csv(path)
        table = gamma_intervals(returns).merge(median_returns(returns), on="task_index", validate="1:1")
        tasks = pd.read_csv(args.eval_dir / "tasks.csv")
        names = [c for c in tasks.columns if c not in TASK_COLUMNS]
        table = tasks[["task_index", *names]].merge(table, on="task_index", how="outer", validate="1:1")
    except (OSError, EOFError, KeyError, ValueError, pd.errors.ParserError, SafeMamlError) as exc:
        sys.exit(f"error: {args.eval_dir}: {exc}")
    if table.isna().any().any() or not names:
        sys.exit(f"error: {args.eval_dir}: tasks.csv and {path.name} do not list the same tasks")
    if args.band is not None and len(names) != 1:
        parser.error(f"--band needs a one-parameter family; {args.eval_dir} has parameters {', '.join(names)}")
    param = " ".join(names)
    table["median_drop"] = table["median_post"] < table["median_pre"]
    print(f"| {param} | rounds | mean Γ | 95% t-interval | above 0 | rounds with Γ > 0 | median post < median pre |")
    print("| ---: | ---: | ---: | --- | --- | ---: | --- |")
    for r in table.itertuples(index=False):
        where = " ".join(f"{getattr(r, n):g}" for n in names)
        print(f"| {where} | {r.rounds} | {r.mean_gamma:+.1f} | [{r.lo:+.1f}, {r.hi:+.1f}] | {'yes' if r.above else ''} "
              f"| {r.share_positive:.2f} | {'yes' if r.median_drop else ''} |")
    above = table[table["above"]]
    found = _listing(above[names])
    print(f"tasks with the interval above 0: {len(above)} of {len(table)}" + (f" ({param} {found})" if found else
                                                                           " (no negative adaptation found)"))
    if args.band is not None and len(names) == 1:
        low, high = args.band
        inside = above[(above[names[0]] >= low - 1e-9) & (above[names[0]] <= high + 1e-9)]
        print(f"of them inside [{low:g}, {high:g}]: {len(inside)}")
    drops = _listing(table[table["median_drop"]][names])
    print(f"tasks whose median post-update return is below the median pre-update one: "
          f"{int(table['median_drop'].sum())} of {len(table)}" + (f" ({param} {drops})" if drops else ""))


def r23_endpoints(beta: float) -> list[tuple[str, str, Endpoint]]:
    """(name, evaluation folder, endpoint) of protocol R2.3, the primary first. V̂ is scored at one β for
    every arm (round 1's request: 0.1), from each evaluation's per-task wins, since each arm's own
    objective has its own β and `safemaml evaluate` defaults to it."""
    return [
        ("V̂ on p(T), task seed 0 (primary)", "eval", violation_rate_at(beta)),
        ("band peak: largest mean Γ on 0.3 … 1.1", "eval-band", largest_mean_gamma),
        ("V̂ on the fresh task set, task seed 1", "eval-fresh", violation_rate_at(beta)),
        ("post-update return on p(T)", "eval", summary_value("post_return")),
    ]


def longer_tests_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=LONGER_TESTS)
    parser.add_argument("root", type=Path, nargs="?", default=Path("experiments/results/longer-halfcheetah-vel"),
                        help="the folder of ARM/seed-N runs (default: R2.3's)")
    parser.add_argument("--control", default="maml", help="the arm every other is paired with (default maml)")
    parser.add_argument("--arms", nargs="+", default=["cvar", "lagrangian"], help="the arms tested (default: "
                        "cvar lagrangian; Holm runs over them)")
    parser.add_argument("--iterations", type=int, default=120, help="the iteration every evaluation must be at")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise error per endpoint (default 0.05)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(6)), help="the training seeds every "
                        "arm must have, no more and no fewer (default: 0-5)")
    parser.add_argument("--beta", type=float, default=0.1, help="the per-task tolerance V̂ is scored at, the same "
                        "for every arm (default 0.1: round 1's request, compare/comparison-request.json)")
    args = parser.parse_args(argv)
    if not 0 < args.beta < 1:
        parser.error(f"--beta must be in (0, 1), not {args.beta:g}")
    try:
        tables = [(name, against_control(_checked(args, folder, endpoint), args.control, args.arms))
                  for name, folder, endpoint in r23_endpoints(args.beta)]
        report = _training_report(args.root, args.iterations)
    except (OSError, KeyError, ValueError, SafeMamlError) as exc:
        sys.exit(f"error: {exc}")
    print(f"V̂ at β = {args.beta:g} for every arm (p̂_T = wins / rounds < 1 − β, from each evaluation's tasks.csv)")
    for name, rows in tables:
        print(f"\n**{name}**: arm − {args.control}, paired over seeds\n")
        print("| arm | seeds | arm mean | difference [95% t-interval] | lower on | t-test p | Holm p | Wilcoxon p |")
        print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r.arm} | {r.seeds} | {r.arm_mean:.4g} | {r.difference:+.4g} [{r.lo:+.4g}, {r.hi:+.4g}] | "
                  f"{r.lower} of {r.seeds} | {r.p_t:.3g} | {r.p_holm:.3g} | {r.p_wilcoxon:.3g} |")
    print()
    for primary, fresh in zip(tables[0][1], tables[2][1]):
        print(f"{primary.arm}: {_decision(primary, fresh, args.alpha)}")
    print("\n".join(report))


def _checked(args, folder: str, endpoint) -> dict[str, dict[int, float]]:
    """The endpoint over every run, after checking that each evaluation is of the protocol's iteration."""
    arms = [args.control, *args.arms]
    at = collect(args.root, arms, folder, summary_value("iteration"))
    for arm, seeds in at.items():
        if sorted(seeds) != sorted(args.seeds):
            raise SafeMamlError(f"{arm} has seeds {sorted(seeds)}, the protocol {sorted(args.seeds)}")
    wrong = [f"{arm}/seed-{s} at {int(i)}" for arm, seeds in at.items() for s, i in seeds.items()
             if int(i) != args.iterations]
    if wrong:
        raise SafeMamlError(f"{folder}: not evaluated at iteration {args.iterations}: {', '.join(wrong)}")
    return collect(args.root, arms, folder, endpoint)


def _decision(primary: PairedTest, fresh: PairedTest, alpha: float) -> str:
    """R2.3's rule: a reduction of V̂ is established only if the primary test rejects after Holm (with the
    arm below the control) and the fresh task set's mean difference is below 0 too."""
    if not primary.p_holm <= alpha:
        return f"not established (primary Holm p {primary.p_holm:.3g} > {alpha:g})"
    if primary.difference > 0:
        return (f"no reduction: {primary.arm}'s V̂ is higher than the control's (primary Holm p "
                f"{primary.p_holm:.3g}, difference {primary.difference:+.3g})")
    if not fresh.difference < 0:
        return (f"not established (the primary rejects, Holm p {primary.p_holm:.3g}, but the fresh task set's "
                f"difference is {fresh.difference:+.3g}, not below 0)")
    return f"established reduction of V̂ (primary Holm p {primary.p_holm:.3g}, fresh difference {fresh.difference:+.3g})"


def _training_report(root: Path, iterations: int) -> list[str]:
    """Reported, not tested: whether cvar's constraint is met (C <= 0) at any iteration 21..N, and the
    lagrangian's multiplier over them (metrics.csv, iterations counted from 1)."""
    lines = []
    for arm, column in (("cvar", "objective_cvar_C"), ("lagrangian", "objective_multiplier")):
        for seed, (counted, column_values) in metric_curves(root / arm, column).items():
            values, run = column_values[(counted > 20) & (counted <= iterations)], f"{arm}/seed-{seed}"
            if not len(values):
                lines.append(f"{run}: no iterations after 20")
            elif arm == "cvar":
                lines.append(f"{run}: C <= 0 at {(values <= 0).sum()} of {len(values)} iterations 21-"
                             f"{20 + len(values)}; C from {values.min():.3g} to {values.max():.3g}, "
                             f"last {values[-1]:.3g}")
            else:
                lines.append(f"{run}: λ at 21 {values[0]:.3g}, at {20 + len(values)} {values[-1]:.3g}, "
                             f"range {values.min():.3g}-{values.max():.3g}")
    return lines


def longer_figure_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=LONGER_FIGURE)
    parser.add_argument("root", type=Path, nargs="?", default=Path("experiments/results/longer-halfcheetah-vel"),
                        help="the folder of ARM/seed-N runs (default: R2.3's)")
    parser.add_argument("--out", type=Path, default=Path("docs/figures/longer-halfcheetah-vel-training.png"),
                        help="the PNG to write (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists (refused otherwise)")
    parser.add_argument("--since", type=int, default=20, help="the iteration the continuation began at, marked "
                        "by a dashed line (default 20)")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        parser.error(f"{args.out} exists (--overwrite replaces it)")
    if not args.out.parent.is_dir():
        parser.error(f"{args.out.parent} is not a folder")
    from safemaml.measure.figures import TrainingPanel, training_figure

    try:
        arms = [arm for arm in ("maml", "cvar", "lagrangian") if seed_runs(args.root / arm)]
        if not arms:
            raise SafeMamlError(f"no ARM/seed-N runs under {args.root}")
        panels = [TrainingPanel("post-update return", {arm: metric_curves(args.root / arm, "post_return")
                                                       for arm in arms})]
        if "cvar" in arms:
            panels.append(TrainingPanel("cvar's constraint C (met below 0)",
                                        {"cvar": metric_curves(args.root / "cvar", "objective_cvar_C")},
                                        zero_line=True))
        if "lagrangian" in arms:
            panels.append(TrainingPanel("lagrangian's multiplier λ",
                                        {"lagrangian": metric_curves(args.root / "lagrangian", "objective_multiplier")}))
        training_figure(panels, args.out, since=args.since, title=f"{args.root}: training seeds as thin lines")
    except (OSError, ValueError, SafeMamlError) as exc:
        sys.exit(f"error: {exc}")
    print(f"written: {args.out}")
