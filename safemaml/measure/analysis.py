"""Analyses of committed results that docs/results.md and docs/learning.md quote, as functions (the scripts in
experiments/ are their command lines):

- `peaks`: the largest per-task mean Γ of each comparison run (the size of the worst negative adaptation);
- `per_round_gamma`: Γ per (round, task) from an evaluation's returns.csv (how much more one task gains);
- `block_means` / `block_table`: a run's metrics.csv averaged over blocks of meta-iterations;
- `band_location` / `band_test`: where a base's negative adaptation sits against where its initial policy is
  best, and protocol R2.2's test of that across bases (docs/results.md);
- `gamma_intervals`: each task's mean Γ with its t-interval over an evaluation's rounds, and which tasks have
  the whole interval above 0 (protocol R2.1's endpoint on the grid).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from safemaml.errors import SafeMamlError
from safemaml.measure.paired import task_gammas

if TYPE_CHECKING:
    import pandas as pd

BLOCK_COLUMNS = {  # metrics.csv column -> table header, in table order
    "pre_return": "pre-update return",
    "post_return": "post-update return",
    "mean_gamma": "mean Γ",
    "frac_negative": "tasks with Γ > 0",
    "violation_rate": "V̂",
    "action_std": "action std",
}
TIMINGS = {"time_sampling": "s sampling", "time_optimize": "s meta-step"}  # wall time: includes any pause


def peaks(compare_dir: Path, folder: str) -> dict[str, dict[int, float]]:
    """{arm: {seed: largest mean Γ over the tasks of ARM/seed-N/FOLDER/tasks.csv}} under a compare folder."""
    out: dict[str, dict[int, float]] = {}
    for path in sorted(Path(compare_dir).glob(f"*/seed-*/{folder}/tasks.csv")):
        arm, seed = path.parts[-4], int(path.parts[-3].removeprefix("seed-"))
        out.setdefault(arm, {})[seed] = float(task_gammas(path.parent).max())
    return out


def per_round_gamma(returns: pd.DataFrame) -> pd.DataFrame:
    """Γ per (round, task): mean pre-update minus mean post-update return over the round's trajectories.

    Rounds are independent draws (fresh trajectories and a fresh adaptation each), so differences between
    tasks over rounds measure one checkpoint's sampling noise, not training seeds."""
    means = returns.groupby(["repeat", "task_index", "phase"])["return"].mean().unstack("phase")
    return (means["pre"] - means["post"]).unstack("task_index")


def parse_block(text: str) -> tuple[int, int]:
    """'96-100' -> (96, 100), both inclusive and counted from 1 (as the training log prints iterations)."""
    try:
        first, last = (int(part) for part in text.split("-"))
    except ValueError:
        raise SafeMamlError(f"block {text!r} is not FIRST-LAST, e.g. 96-100") from None
    if not 1 <= first <= last:
        raise SafeMamlError(f"block {text!r} needs 1 <= FIRST <= LAST")
    return first, last


def block_means(rows: list[dict[str, str]], first: int, last: int, columns: dict[str, str]) -> dict[str, float]:
    """Mean of each of `columns` (those the run has) over iterations first..last (counted from 1; metrics.csv's
    `iteration` counts from 0). A block past the run's last iteration is an error, not an empty row."""
    block = [row for row in rows if first <= int(row["iteration"]) + 1 <= last]
    if len(block) != last - first + 1:
        raise SafeMamlError(f"the run has {len(rows)} iterations; block {first}-{last} is not complete")
    return {column: statistics.fmean(float(row[column]) for row in block)
            for column in columns if column in block[0]}


def block_table(rows: list[dict[str, str]], blocks: list[tuple[int, int]], timings: bool = False) -> str:
    """The Markdown table, one row per block, columns in BLOCK_COLUMNS (and TIMINGS) order, those the run has."""
    headers = BLOCK_COLUMNS | (TIMINGS if timings else {})
    means = [block_means(rows, first, last, headers) for first, last in blocks]
    columns = list(means[0])
    lines = ["| iterations | " + " | ".join(headers[c] for c in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    for (first, last), row in zip(blocks, means, strict=True):
        cells = [f"{row[c]:.2f}" if c in ("frac_negative", "violation_rate", "action_std") else f"{row[c]:.1f}"
                 for c in columns]
        lines.append(f"| {first}–{last} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def grid_rows(tasks_csv: Path) -> tuple[str, list[dict[str, str]]]:
    """(parameter name, rows) of a one-parameter family's evaluation tasks.csv; refused for other families."""
    import csv

    with Path(tasks_csv).open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SafeMamlError(f"{tasks_csv} has no tasks")
    names = [k for k in rows[0] if k not in TASK_COLUMNS]
    if len(names) != 1:
        raise SafeMamlError(f"{tasks_csv}: a one-parameter family's grid is needed, got parameters {names}")
    return names[0], rows


def band_location(tasks_csv: Path, low: float = 0.0, high: float = 2.0) -> tuple[float, float]:
    """(v_pre, v_Γ) of one grid evaluation of a one-parameter family (R2.2): over the grid points in [low, high),
    the parameter with the highest mean pre-update return and the one with the largest mean Γ (first on ties)."""
    name, rows = grid_rows(tasks_csv)
    inside = [r for r in rows if low <= float(r[name]) < high]
    if not inside:
        raise SafeMamlError(f"{tasks_csv}: no grid point in [{low}, {high})")
    best = max(inside, key=lambda r: float(r["mean_pre"]))  # max keeps the first of equal values
    worst = max(inside, key=lambda r: float(r["mean_gamma"]))
    return float(best[name]), float(worst[name])


def positive_points(tasks_csv: Path) -> list[float]:
    """The grid points of a one-parameter family's evaluation where the mean Γ is above 0 (the band of negative
    adaptation as docs/results.md reads it), in grid order."""
    name, rows = grid_rows(tasks_csv)
    return [float(r[name]) for r in rows if float(r["mean_gamma"]) > 0]


TASK_COLUMNS = {"task_index", "mean_pre", "mean_post", "mean_gamma", "wins", "p_hat", "p_lo", "p_hi", "passes"}


def band_test(locations: list[tuple[float, float]], width: float = 0.2, points: int = 20,
              step: float = 0.1) -> tuple[bool, float]:
    """R2.2's test: (every base has |v_Γ − v_pre| <= width, the null probability of that). Under the null, v_Γ
    is uniform over the `points` grid points independently of v_pre, so one base lands within ±width with
    probability at most (2 width / step + 1) / points, and all of them with that to the power of their number."""
    within = all(abs(g - p) <= width + 1e-9 for p, g in locations)
    one = min(1.0, (2 * round(width / step) + 1) / points)
    return within, one ** len(locations)


def median_returns(returns: pd.DataFrame) -> pd.DataFrame:
    """Per task: the median pre-update and post-update return over all rounds and trajectories (columns
    task_index, median_pre, median_post): the curves of the paper's Figure 1 and of `figure.png`.

    The paper reads its band from these medians; R2.1/R2.2 use mean Γ. Comparing the two says whether the
    criterion moves the band (a check added after R2.2's data, docs/results.md)."""
    kept = returns[returns["phase"].isin(["pre", "post"])]
    medians = kept.groupby(["task_index", "phase"])["return"].median().unstack("phase")
    return medians.rename(columns={"pre": "median_pre", "post": "median_post"}).reset_index()[
        ["task_index", "median_pre", "median_post"]]


def gamma_intervals(returns: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per task: mean Γ over the rounds and its two-sided t-interval at `level`, and whether the interval lies
    above 0 ("negative adaptation there", R2.1). Columns task_index, rounds, mean_gamma, lo, hi, above, and
    share_positive (the share of rounds whose Γ is above 0: the step, averaged over a round, hurt).

    The rounds are independent (fresh trajectories and a fresh adaptation each), so the interval is about this
    checkpoint's sampling noise on one task; it is not corrected over the tasks of a grid."""
    import numpy as np
    import pandas as pd
    from scipy import stats

    gamma = per_round_gamma(returns)
    n = gamma.count()
    if (n < 2).any():
        raise SafeMamlError("a t-interval needs at least two rounds per task")
    mean = gamma.mean()
    half = stats.t.ppf(0.5 + level / 2, n - 1) * gamma.std(ddof=1) / np.sqrt(n)
    out = pd.DataFrame({"rounds": n, "mean_gamma": mean, "lo": mean - half, "hi": mean + half})
    out["above"] = out["lo"] > 0
    out["share_positive"] = (gamma > 0).sum() / n  # rounds whose Γ (over the round's trajectories) is > 0
    return out.rename_axis("task_index").reset_index()
