"""Learning curves of the nav2d curvature-parity runs (run.sh): for each curvature, the mean over
seeds of pre/post return, mean Γ and V̂ per meta-iteration, with the min-max band over seeds;
and a table at the last iteration that every run of both curvatures reached.

Usage (repository root): python experiments/results/curvature-parity/plot.py [RUNS_DIR] [OUT.png]
(RUNS_DIR holds one folder per curvature, each with seed* run folders; default: this folder. The reference band
is the folder exact-1.0, or else default.)
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).parent
FIELDS = {"pre_return": "pre-update return", "post_return": "post-update return", "mean_gamma": "mean Γ",
          "violation_rate": "V̂ (β = 0.1)"}


def load(variant: Path) -> dict[str, np.ndarray]:
    """field -> [seeds, iterations], cut to the shortest seed."""
    runs = []
    for seed in sorted(variant.glob("seed*")):
        with (seed / "metrics.csv").open() as f:
            runs.append(list(csv.DictReader(f)))
    runs = [r for r in runs if r]  # a seed not started yet
    n = min(len(r) for r in runs)
    return {k: np.array([[float(row[k]) for row in r[:n]] for r in runs]) for k in FIELDS}


def main() -> None:
    runs = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else runs / "curvature-parity.png"
    variants = {v.name: load(v) for v in sorted(runs.iterdir()) if v.is_dir() and any(v.glob("seed*"))}
    n = min(d["pre_return"].shape[1] for d in variants.values())
    fig, axes = plt.subplots(1, len(FIELDS), figsize=(4 * len(FIELDS), 3.4))
    for ax, (field, label) in zip(axes, FIELDS.items()):
        for name, data in variants.items():
            x, y = np.arange(1, n + 1), data[field][:, :n]
            line, = ax.plot(x, y.mean(0), label=f"{name} ({y.shape[0]} seeds)")
            ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(label)
        ax.set_xlabel("meta-iteration")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}; iterations shown: {n}")
    header = " | ".join(f"{label} at iteration {n}: mean [min, max]" for label in FIELDS.values())
    print(f"| curvature | seeds | {header} |")
    print("| --- | ---: |" + " ---: |" * len(FIELDS))
    for name, data in variants.items():
        cells = [f"{data[f][:, n - 1].mean():.2f} [{data[f][:, n - 1].min():.2f}, {data[f][:, n - 1].max():.2f}]"
                 for f in FIELDS]
        print(f"| {name} | {data['pre_return'].shape[0]} | " + " | ".join(cells) + " |")
    reference = next((r for r in ("exact-1.0", "default") if r in variants), None)
    if reference:  # the rule: each candidate's mean curve inside the reference's seed band
        ref = variants[reference]
        for name, data in variants.items():
            if name == reference:
                continue
            for field, label in FIELDS.items():
                mean, low, high = data[field][:, :n].mean(0), ref[field][:, :n].min(0), ref[field][:, :n].max(0)
                outside = [i + 1 for i in range(n) if not low[i] <= mean[i] <= high[i]]
                print(f"{name} {label}: mean outside {reference}'s min-max band at iterations "
                      f"{outside or 'none'}")


if __name__ == "__main__":
    main()
