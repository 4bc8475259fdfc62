"""Paired statistics over training seeds (the unit of every comparison) and the per-task Γ of an
evaluation folder: shared by `safemaml compare`, the analyses of safemaml.measure.analysis and the
experiment scripts."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy import stats


def task_column(eval_dir: Path, column: str) -> np.ndarray:
    """One column of an evaluation folder's tasks.csv (mean_gamma, wins, ...), in task order."""
    with (eval_dir / "tasks.csv").open() as f:
        return np.array([float(r[column]) for r in csv.DictReader(f)])


def task_gammas(eval_dir: Path) -> np.ndarray:
    """Each task's mean Γ from an evaluation folder's tasks.csv, in task order."""
    return task_column(eval_dir, "mean_gamma")


SIGNIFICANT_DIGITS = 12  # differences are compared at this precision, relative to the largest |value|


def paired_wilcoxon(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of x - y; NaN when it is undefined (fewer than two pairs,
    or every difference zero).

    The differences are rounded first (`rounded_differences`): equal differences that floating point makes
    unequal are then ties, ranked together as the test defines it, and a difference that is zero up to
    rounding is dropped as a zero."""
    d = rounded_differences(x, y)
    if len(d) < 2 or np.all(d == 0):
        return float("nan")
    return float(stats.wilcoxon(d).pvalue)


def rounded_differences(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x - y rounded to SIGNIFICANT_DIGITS digits of the largest |x|, |y|: differences equal in value come out
    equal (task fractions: 8/40 - 7/40 = 0.025000000000000022 but 3/40 - 2/40 = 0.024999999999999994)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    d = x - y
    magnitudes = np.abs(np.concatenate([x, y]))
    magnitudes = magnitudes[np.isfinite(magnitudes)]
    if magnitudes.size and magnitudes.max() > 0:
        d = np.round(d, SIGNIFICANT_DIGITS - 1 - int(np.floor(np.log10(magnitudes.max()))))
    return d


def paired_t_interval(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of x - y over the pairs (seeds) and its t confidence interval; NaN bounds below two pairs."""
    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    mean = float(np.mean(d))
    if len(d) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1) * np.std(d, ddof=1) / np.sqrt(len(d)))
    return mean, mean - half, mean + half


def paired_t_test(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided p of the paired t-test of mean(x - y) = 0 (Student, n - 1 degrees of freedom); NaN below two
    pairs. The differences are rounded first (`rounded_differences`), so that differences equal in value
    decide alike; when they are then all equal the test is at its limit: p = 1 if they are all 0 (t = 0), else
    p = 0 (|t| infinite: every seed moved by exactly the same amount)."""
    d = rounded_differences(x, y)
    if len(d) < 2:
        return float("nan")
    if np.ptp(d) == 0:
        return 1.0 if d[0] == 0 else 0.0
    t = np.mean(d) / (np.std(d, ddof=1) / np.sqrt(len(d)))
    return float(2 * stats.t.sf(abs(t), len(d) - 1))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input's order: the k-th smallest p is multiplied by
    (m - k + 1), made non-decreasing along the sorted order and capped at 1; rejecting where the adjusted p <= α
    keeps the family-wise error at α over the m tests. m is the number of tests, an undefined one (NaN)
    included: it counts as p = 1 (it can never reject) and stays NaN in the output."""
    order = sorted(range(len(pvalues)), key=lambda i: 1.0 if np.isnan(pvalues[i]) else pvalues[i])
    out = [float("nan")] * len(pvalues)
    running = 0.0
    for k, i in enumerate(order):
        p = 1.0 if np.isnan(pvalues[i]) else pvalues[i]
        running = max(running, min(1.0, (len(pvalues) - k) * p))
        out[i] = float("nan") if np.isnan(pvalues[i]) else running
    return out
