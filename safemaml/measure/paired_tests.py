"""Pre-registered paired tests of several arms against one control over training seeds, with Holm's correction
over the arms (protocol R2.3 of docs/results.md; usable for any folder of ARM/seed-N runs).

An endpoint is a function of one evaluation folder (e.g. V̂ at a stated β or the band peak, from tasks.csv);
`collect` reads it for every run, `against_control` pairs each arm with the control seed by seed and tests the
mean difference with the two-sided paired t-test, Holm-adjusted over the arms of one endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from safemaml.errors import SafeMamlError
from safemaml.measure.metrics import violates
from safemaml.measure.paired import (
    holm,
    paired_t_interval,
    paired_t_test,
    paired_wilcoxon,
    task_column,
    task_gammas,
)

Endpoint = Callable[[Path], float]


def summary_value(key: str) -> Endpoint:
    """The endpoint `key` of an evaluation's summary.json (violation_rate, post_return, ...)."""
    def read(folder: Path) -> float:
        return float(json.loads((folder / "summary.json").read_text())[key])
    return read


def violation_rate_at(beta: float) -> Endpoint:
    """V̂ at the tolerance `beta`, whatever beta the evaluation itself used: the fraction of tasks with
    wins / rounds < 1 - beta (tasks.csv's `wins`, summary.json's `rounds`), the rule of
    `safemaml.measure.metrics.violates`. β enters no simulation, so this is exactly the V̂ that evaluating
    at `beta` would report; arms compared on V̂ must share one β. Where the evaluation used this β, the
    value must equal its summary's, or the folder is refused as inconsistent."""
    def read(folder: Path) -> float:
        summary = json.loads((folder / "summary.json").read_text())
        rate = float(violates(task_column(folder, "wins"), int(summary["rounds"]), beta).mean())
        if abs(float(summary["beta"]) - beta) < 1e-12 and rate != float(summary["violation_rate"]):
            raise SafeMamlError(f"{folder}: V̂ from tasks.csv's wins is {rate}, its summary.json says "
                                f"{summary['violation_rate']} at the same β")
        return rate
    return read


def largest_mean_gamma(folder: Path) -> float:
    """The band peak: the largest per-task mean Γ of an evaluation (tasks.csv)."""
    return float(task_gammas(folder).max())


def metric_curves(arm_dir: Path, column: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{seed: (meta-iterations counted from 1, the column)} from each ARM/seed-N/metrics.csv, for figures of
    training over iterations (metrics.csv counts from 0). A run without the column is an error."""
    curves = {}
    for seed, run in seed_runs(arm_dir):
        data = np.genfromtxt(run / "metrics.csv", delimiter=",", names=True, ndmin=1)
        if data.dtype.names is None or column not in data.dtype.names:
            raise SafeMamlError(f"{run / 'metrics.csv'} has no column {column!r}")
        curves[seed] = (data["iteration"] + 1, data[column].astype(float))
    return curves


def collect(root: Path, arms: list[str], folder: str, endpoint: Endpoint) -> dict[str, dict[int, float]]:
    """{arm: {seed: endpoint(root/ARM/seed-N/folder)}} over the seeds found; a missing folder is an error, so
    that a test never runs silently on fewer seeds than the protocol has."""
    out: dict[str, dict[int, float]] = {}
    for arm in arms:
        runs = seed_runs(root / arm)
        if not runs:
            raise SafeMamlError(f"no runs {root / arm}/seed-N")
        for seed, run in runs:
            if not (run / folder).is_dir():
                raise SafeMamlError(f"{run / folder} does not exist: evaluate the run first")
            out.setdefault(arm, {})[seed] = endpoint(run / folder)
    return out


def seed_runs(arm_dir: Path) -> list[tuple[int, Path]]:
    """(seed, folder) of each ARM/seed-N run, by seed (a folder seed-X with X not an integer is an error)."""
    found = []
    for run in arm_dir.glob("seed-*"):
        try:
            found.append((int(run.name.removeprefix("seed-")), run))
        except ValueError:
            raise SafeMamlError(f"{run}: not a seed-N run folder") from None
    return sorted(found)


@dataclass(frozen=True)
class PairedTest:
    """One arm against the control on one endpoint, over the seeds both have."""

    arm: str
    seeds: int
    arm_mean: float
    difference: float  # mean of arm - control
    lo: float  # 95% t-interval of the difference
    hi: float
    lower: int  # seeds where the arm is below the control
    p_t: float  # two-sided paired t-test
    p_holm: float  # p_t Holm-adjusted over the arms tested on this endpoint
    p_wilcoxon: float  # reported, not used to decide


def against_control(values: dict[str, dict[int, float]], control: str, arms: list[str]) -> list[PairedTest]:
    """Each arm minus the control, paired by seed; the seeds must be the same for every arm."""
    seeds = sorted(values[control])
    for arm in arms:
        if sorted(values[arm]) != seeds:
            raise SafeMamlError(f"{arm} has seeds {sorted(values[arm])}, {control} has {seeds}: cannot pair")
    ctrl = np.array([values[control][s] for s in seeds])
    rows = []
    for arm in arms:
        x = np.array([values[arm][s] for s in seeds])
        mean, lo, hi = paired_t_interval(x, ctrl)
        rows.append((arm, x, mean, lo, hi, paired_t_test(x, ctrl), paired_wilcoxon(x, ctrl)))
    adjusted = holm([r[5] for r in rows])
    return [PairedTest(arm, len(seeds), float(x.mean()), mean, lo, hi, int((x < ctrl).sum()), p, q, w)
            for (arm, x, mean, lo, hi, p, w), q in zip(rows, adjusted)]
