"""Side-by-side comparison of objectives: the same config, seeds and evaluation tasks.

Each objective is trained on every seed into OUT/<objective>/seed-<s> (OUT/<objective> when no
seeds are given; resumed if a run is already there) and evaluated on the same grid with the same
evaluation seed (an evaluation already in the run, of its last checkpoint with the same settings, is reused:
a comparison stopped part-way resumes without evaluating its finished runs again). Two tables:

- per seed: the metrics of each run, and a task-level Wilcoxon test (paired over evaluation
  tasks, against the first objective on the same seed). It tells two *policies* apart; with
  dozens of tasks it is significant for almost any two different policies.
- per objective: means over seeds, and the objective-level test, a Wilcoxon signed-rank test
  paired over seeds (the unit) on each seed's V-hat and mean Gamma against the first objective.
  It tells two *objectives* apart. With n seeds the smallest two-sided p is 2 / 2^n: at least
  6 seeds are needed for p < 0.05.

The tasks are drawn from p(T) (evaluate's default). `band` evaluates every run a second time on a
grid (e.g. where the paper saw negative adaptation) into RUN/eval-band, with its own two tables.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from safemaml import config as config_io
from safemaml.config import EvalRequest, TrainConfig
from safemaml.errors import SafeMamlError
from safemaml.files import ensure_folder, os_errors
from safemaml.measure import schema
from safemaml.measure.paired import paired_t_interval, paired_wilcoxon, task_gammas  # noqa: F401  (re-exported)
from safemaml.runs import compare_request
from safemaml.runs.evaluate import evaluate_run
from safemaml.runs.rundir import RunDir
from safemaml.runs.train import train_or_resume

METRICS = list(schema.EVALUATION)  # the metrics of each run's evaluation, in the tables' order
COLUMNS = ["objective", "seed", *METRICS[:3], "mean_gamma_ci", *METRICS[3:], "task_wilcoxon_p"]
# the endpoints compared over seeds: the violation rate and the share of tasks with mean Gamma > 0 (the effect),
# mean Gamma, the post-update return (its cost), the pre-update return (sandbagging), the action std (a confound)
SEED_TESTED = {m: schema.METRICS[m].label  # metric -> its column in comparison.md
               for m in ("violation_rate", "frac_negative", "mean_gamma", "post_return", "pre_return", "action_std")}
OBJECTIVE_COLUMNS = ["objective", "seeds", *[f"{m}_mean" for m in METRICS],
                     *[f"{key}_{m}" for m in SEED_TESTED for key in ("diff", "diff_lo", "diff_hi", "seed_wilcoxon_p")]]


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_arms(path: Path) -> dict[str, dict[str, Any]]:
    """Arms from a TOML file: one table [arms.NAME] per arm, holding the settings it changes in the base config,
    e.g. [arms.maml-matched-std] with policy = {learn_std = false, init_std = 0.4}; flattened to dotted keys."""
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SafeMamlError(f"--arms {path}: {exc}") from None
    arms = data.get("arms")
    if set(data) != {"arms"} or not isinstance(arms, dict) or not arms:
        raise SafeMamlError(f"--arms {path}: expected only [arms.NAME] tables, one per arm")
    if not all(isinstance(v, dict) for v in arms.values()):
        raise SafeMamlError(f"--arms {path}: every arm must be a table of settings")
    bad = [name for name in arms if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name)]
    if bad:  # an arm's name is the folder of its runs
        raise SafeMamlError(f"--arms {path}: arm names are letters, digits, '_', '-' and '.', got {bad[0]!r}")
    return {name: _flatten(table) for name, table in arms.items()}


def arm_configs(cfg: TrainConfig, arms: dict[str, dict[str, Any]]) -> dict[str, TrainConfig]:
    """Each arm's training config (the base with the arm's settings), checked before anything is trained."""
    from objectives import make_objective

    configs = {}
    for name, settings in arms.items():
        try:
            arm = config_io.override(cfg, settings)
            make_objective(arm.objective_name, **arm.objective_params)
        except SafeMamlError as exc:
            raise SafeMamlError(f"arm {name!r}: {exc}") from None
        configs[name] = arm
    return configs


def compare(cfg: TrainConfig, objectives: list[str] | dict[str, dict[str, Any]], out: Path,
            evaluation: EvalRequest | None = None, quiet: bool = False, seeds: list[int] | None = None,
            band: str | None = None) -> list[dict]:
    """Train and evaluate every arm on every seed in this process; write comparison.csv (one row per run),
    comparison_objectives.csv (one row per arm), comparison.md and comparison.png (each endpoint per seed
    and arm) under `out`.

    `objectives`: names of objectives (each an arm with the base config), or arms as {name: {setting: value}}
    (an objective with tuned parameters, a control such as a fixed std); the first is the reference.
    `evaluation`: how every run is evaluated (default: EvalRequest(), tasks drawn from p(T)); beta and delta
    left None are the base config's objective's (0.1 where it sets none), the same for every arm.
    `band` (START:STOP:STEP): also evaluate every run on that grid, into comparison-band.csv,
    comparison_objectives-band.csv and a second part of comparison.md. Returns the p(T) rows.
    (`safemaml compare` runs the same cells as units of work shared through a storage:
    safemaml.studies.cells.)
    """
    comparison = Comparison.make(cfg, objectives, evaluation, seeds, band)
    compare_request.claim(out, comparison.record())
    results = {cell: run_cell(comparison, out, *cell, quiet=quiet) for cell in comparison.cells()}
    return write_tables(comparison, results, out)


@dataclass(frozen=True)
class Comparison:
    """A comparison's request as data: the base config, each arm's training config, the seeds, the evaluation
    and the band. It travels as JSON (a storage shared by workers, safemaml.studies.cells), and the tables are
    written from it and the cells' results alone."""

    base: dict[str, Any]  # the base TrainConfig (config_io.to_dict, JSON-normalised)
    arms: dict[str, dict[str, Any]]  # each arm's TrainConfig, in the arms' order (the first is the reference)
    seeds: tuple[int, ...] | None  # None: one run per arm, OUT/ARM, on the base's seed
    evaluation: dict[str, Any]  # the EvalRequest's fields, beta and delta resolved
    band: str | None = None

    @classmethod
    def make(cls, cfg: TrainConfig, objectives: list[str] | dict[str, dict[str, Any]],
             evaluation: EvalRequest | None = None, seeds: list[int] | None = None,
             band: str | None = None) -> Comparison:
        """The comparison of `objectives` (names, or arms as {name: {setting: value}}), checked whole
        (compare_request.check) before anything is written."""
        arms = objectives if isinstance(objectives, dict) else {n: {"objective.name": n} for n in objectives}
        configs = arm_configs(cfg, arms)
        request = (evaluation or EvalRequest()).resolved(EvalRequest(beta=float(cfg.objective.get("beta", 0.1)),
                                                                     delta=float(cfg.objective.get("delta", 0.1))))
        fields = {k: getattr(request, k) for k in request.__dataclass_fields__}
        compare_request.check(cfg, configs, seeds, fields, band)
        return cls(base=_plain(config_io.to_dict(cfg)), arms={n: _plain(config_io.to_dict(c)) for n, c in
                                                                configs.items()},
                   seeds=None if seeds is None else tuple(seeds), evaluation=fields, band=band)

    @property
    def config(self) -> TrainConfig:
        return config_io.from_dict(self.base, where="the comparison's base config")

    @property
    def names(self) -> list[str]:
        return list(self.arms)

    def arm_config(self, arm: str, seed: int) -> TrainConfig:
        return config_io.override(config_io.from_dict(self.arms[arm], where=f"arm {arm!r}"), {"seed": seed})

    def cells(self) -> list[tuple[str, int]]:
        """(arm, seed) for every run, seed by seed and arm by arm (the order in which one process runs them)."""
        seeds = self.seeds if self.seeds is not None else (int(self.base["seed"]),)
        return [(arm, seed) for seed in seeds for arm in self.arms]

    def run_folder(self, out: Path, arm: str, seed: int) -> Path:
        return Path(out) / arm if self.seeds is None else Path(out) / arm / f"seed-{seed}"

    def task_sets(self) -> dict[str, tuple[str, EvalRequest]]:
        """Table suffix -> (evaluation folder in the run, request): p(T), and the band if there is one."""
        request = EvalRequest(**self.evaluation)
        band = {"-band": ("eval-band", replace(request, grid=self.band))} if self.band else {}
        return {"": ("eval", request)} | band

    def record(self) -> dict[str, Any]:
        """What makes two comparisons the same (compare_request.record: the seeds and the device aside)."""
        configs = {n: config_io.from_dict(c, where=f"arm {n!r}") for n, c in self.arms.items()}
        return compare_request.record(self.config, configs, None if self.seeds is None else list(self.seeds),
                                      self.evaluation, self.band)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=False, default=list)

    @classmethod
    def from_json(cls, text: str) -> Comparison:
        data = json.loads(text)
        seeds = data["seeds"]
        return cls(base=data["base"], arms=data["arms"], seeds=None if seeds is None else tuple(seeds),
                   evaluation=data["evaluation"], band=data["band"])


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """JSON's view of a config dict (tuples as lists), so that a comparison equals itself after a round trip."""
    return json.loads(json.dumps(data, default=list))


def cell_name(comparison: Comparison, arm: str, seed: int) -> str:
    """A cell as the run folder under OUT names it: ARM/seed-S (ARM without --seeds)."""
    return arm if comparison.seeds is None else f"{arm}/seed-{seed}"


def run_cell(comparison: Comparison, out: Path, arm: str, seed: int, quiet: bool = False) -> dict[str, Any]:
    """Train one (arm, seed) into its run folder (resumed where it holds a run) and evaluate it on every task
    set (an evaluation of the same last.pt with the same request is reused). Returns the cell's results as
    JSON-able data: per task set the row of comparison.csv, each task's mean Γ (for the task-level test
    against the reference arm) and summary.json; and what it cost here."""
    import torch

    run = comparison.run_folder(out, arm, seed)
    before = RunDir(run).finished_iterations()
    start = time.perf_counter()
    train_or_resume(comparison.arm_config(arm, seed), run, quiet)
    result: dict[str, Any] = {"trained_iterations": RunDir(run).finished_iterations() - before,
                              "train_seconds": round(time.perf_counter() - start, 3),
                              "torch_threads": torch.get_num_threads(), "task_sets": {}}
    for suffix, (folder, request) in comparison.task_sets().items():
        start = time.perf_counter()
        evaluate_run(run, request, run / folder, reuse=True)
        summary = json.loads((run / folder / "summary.json").read_text())  # exactly what the run folder keeps
        result["task_sets"][suffix] = {"row": _row(summary), "task_gammas": task_gammas(run / folder).tolist(),
                                       "summary": summary, "seconds": round(time.perf_counter() - start, 3)}
    return result


def _row(summary: dict[str, Any]) -> dict[str, Any]:
    """A run's row of comparison.csv from its evaluation summary (the test against the reference aside)."""
    return {k: summary[k] for k in METRICS if k in summary} | {
        "mean_gamma_ci": f"[{summary['mean_gamma_lo']:.2f}, {summary['mean_gamma_hi']:.2f}]"}


def write_tables(comparison: Comparison, results: dict[tuple[str, int], dict[str, Any]], out: Path) -> list[dict]:
    """comparison.md, the CSVs, config.json and the figures under `out`, from the cells' results alone (no run
    folder is read). Only files whose content changed are written (a rerun of a finished comparison changes
    nothing), each through a temporary file and a rename. Returns the p(T) rows."""
    cfg, names = comparison.config, comparison.names
    rows: dict[str, list[dict]] = {suffix: [] for suffix in comparison.task_sets()}
    for arm, seed in comparison.cells():
        for suffix in rows:
            cell, reference = (results[arm, seed]["task_sets"][suffix],
                               results[names[0], seed]["task_sets"][suffix])
            row = {"objective": arm, "seed": seed, **cell["row"]}
            row["task_wilcoxon_p"] = (float("nan") if arm == names[0] else paired_wilcoxon(
                np.array(cell["task_gammas"]), np.array(reference["task_gammas"])))
            rows[suffix].append(row)
    beta, delta = comparison.evaluation["beta"], comparison.evaluation["delta"]
    texts, parts = {}, []
    for suffix in rows:
        summary = objective_rows(rows[suffix], names)
        texts[f"comparison{suffix}.csv"] = _csv(COLUMNS, rows[suffix])
        texts[f"comparison_objectives{suffix}.csv"] = _csv(OBJECTIVE_COLUMNS, summary)
        tasks = (f"Tasks: the grid {comparison.band} (RUN/eval-band)" if suffix else
                 "Tasks: drawn from p(T), the same for every run (RUN/eval)")
        parts.append(f"{tasks}. " + markdown_table(rows[suffix], summary, cfg, beta, delta))
    texts["comparison.md"] = "\n".join(parts)
    texts["config.json"] = json.dumps(config_io.to_dict(cfg), indent=2, default=list) + "\n"
    ensure_folder(out)
    data = {name: text.encode() for name, text in texts.items()}
    changed = [name for name in data if _read(out / name) != data[name]]
    for name in changed:
        _replace(out / name, functools.partial(Path.write_bytes, data=data[name]))
    figures = {suffix: out / f"comparison{suffix}.png" for suffix in rows}
    if changed or not all(path.is_file() for path in figures.values()):
        _draw(comparison, rows, figures)
    return rows[""]


def _csv(columns: list[str], table: list[dict]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _replace(path: Path, write: Callable[[Path], Any]) -> None:
    """Write `path` through a temporary file of its own in the same folder and a rename: workers that write
    the same tables at once never see a half-written file or each other's temporary."""
    tmp = path.with_name(f".{path.stem}.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}.tmp{path.suffix}")
    try:
        with os_errors(path):
            write(tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _draw(comparison: Comparison, rows: dict[str, list[dict]], figures: dict[str, Path]) -> None:
    try:
        from safemaml.measure import figures as report  # matplotlib, only here
    except ImportError:  # a machine without matplotlib (the GPU machine) writes every number, no figure
        return
    for suffix, path in figures.items():
        where = f"the grid {comparison.band}" if suffix else "tasks from p(T)"
        title = f"{comparison.base['tasks']}, {where}; a grey line per training seed"
        _replace(path, functools.partial(_figure, rows[suffix], comparison.names, title=title, draw=report))


def _figure(rows: list[dict], arms: list[str], path: Path, title: str, draw: Any) -> None:
    draw.comparison_figure(rows, arms, path, title)


def objective_rows(rows: list[dict], objectives: list[str]) -> list[dict]:
    """Means over seeds per objective, and the seed-paired Wilcoxon test against the first objective."""
    def seed_values(name: str, metric: str) -> np.ndarray:
        ordered = sorted((r for r in rows if r["objective"] == name), key=lambda r: r["seed"])
        return np.array([np.nan if r.get(metric) is None else float(r[metric]) for r in ordered])

    out = []
    for name in objectives:
        row = {"objective": name, "seeds": len(seed_values(name, "post_return"))}
        row |= {f"{m}_mean": float(np.mean(seed_values(name, m))) for m in METRICS
                if any(m in r for r in rows)}
        for m in SEED_TESTED:
            x, y = seed_values(name, m), seed_values(objectives[0], m)
            reference = name == objectives[0]
            row[f"diff_{m}"], row[f"diff_lo_{m}"], row[f"diff_hi_{m}"] = (
                (float("nan"),) * 3 if reference else paired_t_interval(x, y))
            row[f"seed_wilcoxon_p_{m}"] = float("nan") if reference else paired_wilcoxon(x, y)
        out.append(row)
    return out


def _p(value: float) -> str:
    return "—" if np.isnan(value) else format(value, ".3g")


def _signed(value: float) -> str:
    """+.3g, with float residue such as 1e-18 (a mean of differences that cancel) shown as +0."""
    return f"{round(value, 12) + 0.0:+.3g}"


def _f(row: dict, key: str) -> str:
    value = row.get(key)
    return "—" if value is None or np.isnan(value) else f"{value:.2f}"


def markdown_table(rows: list[dict], summary: list[dict], cfg: TrainConfig, beta: float, delta: float) -> str:
    """comparison.md: per run, means per objective, and each arm's differences from the first over seeds."""
    seeds = sorted({r["seed"] for r in rows})
    power = sorted({f"{r['min_passing_p']:.3f}" for r in rows if r.get("min_passing_p") is not None})
    power_text = (f"a task passes its per-task test with probability >= 0.8 when p_T >= {' or '.join(power)} "
                  "(min_passing_p)" if power else "none: with so few rounds no task can pass its per-task test")
    head = (f"{cfg.tasks}, {cfg.iterations} meta-iterations, seeds {', '.join(map(str, seeds))}, "
            f"beta = {beta}, delta = {delta}. The certificate's power: {power_text}.\n\n"
            "Per run (task-level Wilcoxon: paired over evaluation tasks against the first objective on the same "
            "seed; it compares two policies):\n\n"
            "| objective | seed | pre | post | mean Γ [95% CI] | CVaR_δ Γ | tasks Γ>0 | V̂ | certified fraction | "
            "certified | action std | task-level Wilcoxon p |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = [f"| {r['objective']} | {r['seed']} | {r['pre_return']:.2f} | {r['post_return']:.2f} | "
             f"{r['mean_gamma']:.2f} {r['mean_gamma_ci']} | {r['cvar_gamma']:.2f} | {r['frac_negative']:.2f} | "
             f"{r['violation_rate']:.2f} | {r['certified_fraction']:.2f} | {'yes' if r['certified'] else 'no'} | "
             f"{_f(r, 'action_std')} | {_p(r['task_wilcoxon_p'])} |" for r in rows]
    n = len(seeds)
    means_head = (f"\nPer objective, means over {n} seeds:\n\n"
                  "| objective | seeds | pre | post | mean Γ | tasks Γ>0 | V̂ | certified | action std |\n"
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    means = [f"| {s['objective']} | {s['seeds']} | {s['pre_return_mean']:.2f} | {s['post_return_mean']:.2f} | "
             f"{s['mean_gamma_mean']:.2f} | {s['frac_negative_mean']:.2f} | {s['violation_rate_mean']:.2f} | "
             f"{s['certified_mean']:.2f} | {_f(s, 'action_std_mean')} |" for s in summary]
    return (head + "\n".join(lines) + "\n" + means_head + "\n".join(means) + "\n"
            + difference_table(summary, n))


def difference_table(summary: list[dict], n: int) -> str:
    """Each arm minus the first, paired over seeds: mean difference [95% t-interval] and Wilcoxon p."""
    head = (f"\nEach arm minus {summary[0]['objective']}, paired over the {n} seeds (the unit): mean difference "
            f"[95% t-interval] (p of the Wilcoxon signed-rank test over seeds; the smallest possible two-sided "
            f"p is {2 / 2 ** n:.3g}, larger where seeds tie, e.g. both V̂ = 0, as the test drops them):\n\n"
            "| objective | " + " | ".join(SEED_TESTED.values()) + " |\n|---|" + "---:|" * len(SEED_TESTED) + "\n")

    def cell(s: dict, m: str) -> str:
        if np.isnan(s[f"diff_{m}"]):
            return "—"
        return (f"{_signed(s[f'diff_{m}'])} [{_signed(s[f'diff_lo_{m}'])}, {_signed(s[f'diff_hi_{m}'])}] "
                f"(p {_p(s[f'seed_wilcoxon_p_{m}'])})")
    return head + "\n".join(f"| {s['objective']} | " + " | ".join(cell(s, m) for m in SEED_TESTED) + " |"
                             for s in summary[1:]) + "\n"
