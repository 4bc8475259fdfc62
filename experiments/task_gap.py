"""How much more one task gains from the inner step than another, from one evaluation's rounds.

Usage (repository root): python experiments/task_gap.py RUN/eval A B

Reads EVAL/returns.csv (written by `safemaml evaluate`) and prints, for tasks A and B (task_index values),
the mean Γ of each and the mean of the per-round difference Γ_B − Γ_A with its 95% t-interval over the
rounds. Rounds are independent draws (fresh trajectories and a fresh adaptation each), so the interval is
about this checkpoint's sampling noise only, not about training seeds. docs/results.md uses it for the
HalfCheetahDir evaluation (the favoured direction's smaller gain).
"""
import argparse
import sys
from pathlib import Path

import pandas as pd

from safemaml.runs.compare import paired_t_interval


def per_round_gamma(returns: pd.DataFrame) -> pd.DataFrame:
    """Γ per (round, task): mean pre-update minus mean post-update return over the round's trajectories."""
    means = returns.groupby(["repeat", "task_index", "phase"])["return"].mean().unstack("phase")
    return (means["pre"] - means["post"]).unstack("task_index")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dir", type=Path, help="an evaluation folder holding returns.csv")
    parser.add_argument("a", type=int, help="task_index of the first task")
    parser.add_argument("b", type=int, help="task_index of the second task")
    args = parser.parse_args(argv)
    path = args.eval_dir / "returns.csv"
    if not path.is_file():
        sys.exit(f"no {path}: run `safemaml evaluate` first (it writes returns.csv)")
    gamma = per_round_gamma(pd.read_csv(path))
    for task in (args.a, args.b):
        if task not in gamma.columns:
            sys.exit(f"task {task} is not in {path} (tasks: {', '.join(map(str, gamma.columns))})")
    mean, lo, hi = paired_t_interval(gamma[args.b].to_numpy(), gamma[args.a].to_numpy())
    print(f"mean Γ: task {args.a} {gamma[args.a].mean():.1f}, task {args.b} {gamma[args.b].mean():.1f}")
    print(f"Γ_{args.b} − Γ_{args.a}: {mean:+.1f}, 95% t-interval over {len(gamma)} rounds "
          f"[{lo:+.1f}, {hi:+.1f}]")


if __name__ == "__main__":
    main()
