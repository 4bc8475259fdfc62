"""The worst negative adaptation per comparison run: the largest per-task mean Γ in one evaluation folder.

Usage (repository root): python experiments/band_peak.py COMPARE_DIR [--folder eval-band] [--reference ARM]

For every COMPARE_DIR/ARM/seed-N/FOLDER/tasks.csv (written by `safemaml compare`), takes the largest
`mean_gamma` over the tasks: how much the inner step hurts on the task where it hurts most. Prints it per
arm and seed, and each arm minus the reference arm (`maml` by default) paired over the seeds, with a 95%
t-interval and a Wilcoxon p (`safemaml.runs.compare`). V̂ and the fraction of tasks with mean Γ > 0 count tasks;
this measures the size of the worst one. It is not one of the comparison's endpoints fixed in advance:
docs/results.md reports it as a look taken after the comparison ran.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

from safemaml.runs.compare import paired_t_interval, paired_wilcoxon, task_gammas


def peaks(compare_dir: Path, folder: str) -> dict[str, dict[int, float]]:
    """{arm: {seed: largest mean Γ over the tasks of ARM/seed-N/FOLDER/tasks.csv}}."""
    out: dict[str, dict[int, float]] = {}
    for path in sorted(compare_dir.glob(f"*/seed-*/{folder}/tasks.csv")):
        arm, seed = path.parts[-4], int(path.parts[-3].removeprefix("seed-"))
        out.setdefault(arm, {})[seed] = float(task_gammas(path.parent).max())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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


if __name__ == "__main__":
    main()
