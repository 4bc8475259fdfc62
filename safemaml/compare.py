"""Side-by-side comparison of objectives: the same config, seeds and evaluation tasks.

Each objective is trained into OUT/<objective> (resumed if a run is already there) and
evaluated on the same grid with the same evaluation seed; the table reports the metrics of
each, and a paired Wilcoxon test of the per-task mean Gamma against the first objective.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from scipy import stats

from safemaml import config as config_io
from safemaml.config import TrainConfig
from safemaml.errors import SafeMamlError
from safemaml.evaluate import evaluate_run
from safemaml.trainer import train

COLUMNS = ["objective", "pre_return", "post_return", "mean_gamma", "mean_gamma_ci", "cvar_gamma",
           "frac_negative", "violation_rate", "certified_fraction", "certified", "wilcoxon_p"]


def _task_gammas(eval_dir: Path) -> np.ndarray:
    with (eval_dir / "tasks.csv").open() as f:
        return np.array([float(r["mean_gamma"]) for r in csv.DictReader(f)])


def _check_same_settings(run: Path, cfg: TrainConfig) -> None:
    """A run found in OUT is continued only if it was made with these settings (iterations aside)."""
    saved = config_io.to_dict(config_io.load(run / "config.toml"))
    wanted = config_io.to_dict(cfg)
    saved.pop("iterations"), wanted.pop("iterations")
    if saved != wanted:
        raise SafeMamlError(f"{run} holds a run made with other settings; choose another --out")


def compare(cfg: TrainConfig, objectives: list[str], out: Path, trajectories: int = 20, repeats: int = 1,
            eval_seed: int = 0, quiet: bool = False) -> list[dict]:
    """Train and evaluate every objective; write comparison.csv and comparison.md under `out`."""
    beta = float(cfg.objective.get("beta", 0.1))
    delta = float(cfg.objective.get("delta", 0.1))
    rows, gammas = [], {}
    for name in objectives:
        run_cfg = config_io.override(cfg, {"objective.name": name})
        run = out / name
        done = (run / "last.pt").exists()
        if done:
            _check_same_settings(run, run_cfg)
        train(run_cfg, run, resume=done, quiet=quiet)
        summary = evaluate_run(run, trajectories=trajectories, repeats=repeats, seed=eval_seed,
                               beta=beta, delta=delta)
        gammas[name] = _task_gammas(run / "eval")
        reference = gammas[objectives[0]]
        p = float("nan") if name == objectives[0] else float(stats.wilcoxon(gammas[name], reference).pvalue)
        rows.append({"objective": name, **{k: summary[k] for k in COLUMNS if k in summary},
                     "mean_gamma_ci": f"[{summary['mean_gamma_lo']:.2f}, {summary['mean_gamma_hi']:.2f}]",
                     "wilcoxon_p": p})
    out.mkdir(parents=True, exist_ok=True)
    with (out / "comparison.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "comparison.md").write_text(markdown_table(rows, cfg, beta, delta))
    (out / "config.json").write_text(json.dumps(config_io.to_dict(cfg), indent=2, default=list) + "\n")
    return rows


def markdown_table(rows: list[dict], cfg: TrainConfig, beta: float, delta: float) -> str:
    head = (f"{cfg.tasks}, {cfg.iterations} meta-iterations, seed {cfg.seed}, beta = {beta}, delta = {delta}\n\n"
            "| objective | pre | post | mean Γ [95% CI] | CVaR_δ Γ | tasks Γ>0 | V̂ | certified fraction | "
            "certified | Wilcoxon p vs first |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = [f"| {r['objective']} | {r['pre_return']:.2f} | {r['post_return']:.2f} | {r['mean_gamma']:.2f} "
             f"{r['mean_gamma_ci']} | {r['cvar_gamma']:.2f} | {r['frac_negative']:.2f} | "
             f"{r['violation_rate']:.2f} | {r['certified_fraction']:.2f} | {'yes' if r['certified'] else 'no'} | "
             f"{'—' if np.isnan(r['wilcoxon_p']) else format(r['wilcoxon_p'], '.3g')} |" for r in rows]
    return head + "\n".join(lines) + "\n"
