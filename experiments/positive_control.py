"""Positive control (issue 11, point 1): do the constrained objectives lower the exact violation rate
on the Gaussian bandit, where MAML shows negative adaptation by construction?

For every objective and training seed (the statistical unit; the same seeds for every arm) it trains
with safemaml's trainer, then measures the last policy exactly with safemaml.engine.bandit_exact: E[Gamma_T],
p_T = Pr(Gamma_T <= 0) and the violation rate V = Pr_T(p_T < 1 - beta) over p(T) = U[-1, 1]^2 (midpoint
rule), from closed-form returns and adaptations -- not from the training code's metrics. The initial
policy of each seed is measured the same way. Writes, into --out:
    per_seed.csv   one row per (objective, seed): exact V, pre/post return, mean Gamma, ...
    tasks.csv      one row per (objective, seed, task): the exact statistics of every grid task
    tests.csv      each constrained objective vs maml: paired differences and Wilcoxon signed-rank tests
    summary.md     mean ± sd over seeds per arm and the tests, as Markdown tables
    figure.png     V, post- and pre-update return per seed and arm; p_T maps of seed 0
Runs are trained into --runs/<objective>/seed<k> and resumed there; a finished run's exact
statistics are cached in its exact.json, so the script picks up where it stopped.

    nice -n 10 python experiments/positive_control.py --config experiments/positive-control.toml --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import tomllib
import torch
from scipy import stats

from safemaml import config as config_io
from safemaml.config import TrainConfig
from safemaml.engine.bandit_exact import InnerStep, TaskStatistics, midpoint_grid, task_statistics
from safemaml.engine.learner import policy_spec
from safemaml.measure.figures import paired_seed_panel
from safemaml.runs.train import load_checkpoint, train
from safemaml.tasks import get_family

ROOT = Path(__file__).resolve().parent.parent
STAT_FIELDS = ("pre_return", "post_return", "mean_gamma", "p", "p_se", "p_expected", "post_std")


@dataclasses.dataclass(frozen=True)
class Experiment:
    seeds: list[int]
    objectives: list[str]
    beta: float
    delta: float
    grid_cells: int
    rounds: int
    post_draws: int
    pre_pool: int
    eval_seed: int
    train: TrainConfig
    objective_params: dict[str, dict]

    def config(self, objective: str, seed: int) -> TrainConfig:
        params = {"name": objective, "beta": self.beta, "delta": self.delta, **self.objective_params.get(objective, {})}
        return dataclasses.replace(self.train, seed=seed, objective=params)


def load_experiment(path: Path, iterations: int | None = None) -> Experiment:
    data = tomllib.loads(path.read_text())
    train_cfg = config_io.from_dict(data["train"], where=f"{path.name} [train]")
    if iterations is not None:
        train_cfg = dataclasses.replace(train_cfg, iterations=iterations, checkpoint_every=iterations)
    return Experiment(**data["experiment"], train=train_cfg, objective_params=data.get("objectives", {}))


def measure(exp: Experiment, cfg: TrainConfig, params) -> TaskStatistics:
    """Exact Gamma statistics of `params` on the midpoint grid over p(T) (common random numbers)."""
    family = get_family(cfg.tasks)
    inner = InnerStep(cfg.adapt, cfg.gamma, cfg.gae_lambda, cfg.fast_batch_size, family.horizon)
    return task_statistics(policy_spec(cfg, family), inner, params, midpoint_grid(exp.grid_cells),
                           rounds=exp.rounds, post_draws=exp.post_draws, pre_pool=exp.pre_pool, seed=exp.eval_seed)


def summary_row(exp: Experiment, st: TaskStatistics, params, spec) -> dict[str, float]:
    std = float(torch.exp(spec.log_std(params)).mean())
    return {"violation_rate": st.violation_rate(exp.beta), "violation_rate_expected": st.expected_violation_rate(exp.beta),
            "ambiguous": st.ambiguous(exp.beta), "pre_return": float(st.pre_return.mean()),
            "post_return": float(st.post_return.mean()), "mean_gamma": float(st.mean_gamma.mean()),
            "frac_negative": float((st.mean_gamma > 0).mean()), "pre_std": std, "post_std": float(st.post_std.mean())}


def run_one(exp: Experiment, objective: str, seed: int, runs: Path) -> dict:
    """Train (or resume) one arm and seed, then measure it exactly; cached in exact.json."""
    torch.set_num_threads(1)
    cfg = exp.config(objective, seed)
    spec = policy_spec(cfg, get_family(cfg.tasks))
    if objective == "init":  # the seed's initial policy, shared by every arm
        run, params = runs / "init" / f"seed{seed}", spec.init(seed)
        run.mkdir(parents=True, exist_ok=True)
    else:
        run = runs / objective / f"seed{seed}"
        done = (run / "last.pt").is_file() and int(load_checkpoint(run / "last.pt")["iteration"]) + 1 >= cfg.iterations
        if not done:
            train(cfg, run, resume=(run / "last.pt").is_file(), quiet=True)
        params = load_checkpoint(run / "last.pt")["params"]
    cache = run / "exact.json"
    key = {"iterations": cfg.iterations, "grid_cells": exp.grid_cells, "rounds": exp.rounds, "beta": exp.beta,
           "post_draws": exp.post_draws, "pre_pool": exp.pre_pool, "eval_seed": exp.eval_seed}
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved["key"] == key:
            return saved
    st = measure(exp, cfg, params)
    result = {"key": key, "objective": objective, "seed": seed, **summary_row(exp, st, params, spec),
              "tasks": {f: getattr(st, f).tolist() for f in ("goals", *STAT_FIELDS)}}
    cache.write_text(json.dumps(result))
    print(f"{objective:>10} seed {seed}: V = {result['violation_rate']:.3f}, post {result['post_return']:.2f}, "
          f"pre {result['pre_return']:.2f}", file=sys.stderr, flush=True)
    return result


def paired_tests(rows: list[dict], objectives: list[str]) -> list[dict]:
    """Each objective vs maml over seeds: mean difference, wins, and a two-sided Wilcoxon signed-rank test."""
    by = {(r["objective"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows if r["objective"] == "maml"})
    out = []
    for obj in objectives:
        if obj == "maml":
            continue
        for metric in ("violation_rate", "violation_rate_expected", "frac_negative", "post_return", "pre_return",
                       "mean_gamma", "pre_std"):
            diff = np.array([by[(obj, s)][metric] - by[("maml", s)][metric] for s in seeds])
            nonzero = diff[diff != 0]
            p = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) > 0 else 1.0
            out.append({"objective": obj, "metric": metric, "seeds": len(seeds), "mean_diff": float(diff.mean()),
                        "median_diff": float(np.median(diff)), "lower": int((diff < 0).sum()),
                        "equal": int((diff == 0).sum()), "higher": int((diff > 0).sum()), "wilcoxon_p": p})
    return out


SUMMARY_METRICS = (("violation_rate", "exact V"), ("violation_rate_expected", "V with expected returns"),
                   ("frac_negative", "tasks with E[Γ_T] > 0"), ("pre_return", "pre-update J(θ)"),
                   ("post_return", "post-update E J(θ')"), ("mean_gamma", "E[Γ_T]"), ("pre_std", "σ"))


def summary_markdown(rows: list[dict], tests: list[dict], arms: list[str]) -> str:
    """Mean ± sd over seeds per arm, and the paired tests against maml, as Markdown tables."""
    lines = ["| arm | seeds | " + " | ".join(label for _, label in SUMMARY_METRICS) + " |",
             "|---" * (len(SUMMARY_METRICS) + 2) + "|"]
    for arm in arms:
        sel = [r for r in rows if r["objective"] == arm]
        cells = [f"{np.mean([r[m] for r in sel]):.3f} ± {np.std([r[m] for r in sel], ddof=1):.3f}"
                 for m, _ in SUMMARY_METRICS]
        lines.append(f"| {arm} | {len(sel)} | " + " | ".join(cells) + " |")
    lines += ["", "| objective − maml | metric | mean diff | median diff | lower / equal / higher | Wilcoxon p |",
              "|---|---|---|---|---|---|"]
    for t in tests:
        lines.append(f"| {t['objective']} | {t['metric']} | {t['mean_diff']:+.4f} | {t['median_diff']:+.4f} | "
                     f"{t['lower']} / {t['equal']} / {t['higher']} | {t['wilcoxon_p']:.3g} |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def figure(rows: list[dict], objectives: list[str], cells: int, beta: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = ["init", *objectives]
    metrics = (("violation_rate", "exact V = Pr_T(p_T < 1 - β)"), ("post_return", "post-update return E J(θ')"),
               ("pre_return", "pre-update return J(θ)"))
    fig, axes = plt.subplots(2, max(3, len(objectives)), figsize=(4 * max(3, len(objectives)), 7.5))
    for ax, (metric, label) in zip(axes[0], metrics):
        shown = objectives if metric == "violation_rate" else arms  # the initial policy's V (= 1) would flatten the rest
        paired_seed_panel(ax, rows, shown, metric, label + (" (init: 1)" if metric == "violation_rate" else ""))
        ax.legend(fontsize=8)
    for ax in axes[0][len(metrics):]:
        ax.axis("off")
    for ax, obj in zip(axes[1], objectives):
        r = next(r for r in rows if r["objective"] == obj and r["seed"] == min(x["seed"] for x in rows))
        p = np.array(r["tasks"]["p"]).reshape(cells, cells)
        im = ax.imshow(p.T, origin="lower", extent=(-1, 1, -1, 1), vmin=0, vmax=1, cmap="RdYlGn")
        ax.contour(np.linspace(-1, 1, cells), np.linspace(-1, 1, cells), p.T, levels=[1 - beta], colors="k",
                   linewidths=0.8, extent=(-1, 1, -1, 1))
        ax.set_title(f"p_T, {obj}, seed {r['seed']} (V = {r['violation_rate']:.3f})", fontsize=9)
        ax.set_xlabel("goal x")
        ax.set_ylabel("goal y")
    fig.colorbar(im, ax=axes[1].tolist(), shrink=0.8, label="p_T = Pr(Γ_T ≤ 0)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def bound_table(alpha: float, n: int, horizon: int, draws: int = 200_000, seed: int = 0) -> list[tuple[float, float]]:
    """The by-construction bound on p_T (docs/positive-control.md) for an isotropic policy, as a function
    of r / sigma, r = ||g - mu||: Pr(chi'^2_{2H}(H r^2 / sigma^2) >= sum_d exp(-2 alpha sqrt(m4_d)) chi^2_H)."""
    rng = np.random.default_rng(seed)
    m4 = np.stack([((rng.standard_normal((draws, n * horizon)) ** 2 - 1) ** 2).mean(1) for _ in range(2)], 1)
    post = (np.exp(-2 * alpha * np.sqrt(m4)) * rng.chisquare(horizon, (draws, 2))).sum(-1)
    rows = []
    for r in np.arange(0.0, 1.51, 0.125):
        pre = rng.noncentral_chisquare(2 * horizon, horizon * r ** 2, draws) if r > 0 else rng.chisquare(2 * horizon, draws)
        rows.append((float(r), float((pre >= post).mean())))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "experiments" / "positive-control.toml")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "positive-control")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "positive-control")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=None, help="override [train] iterations")
    parser.add_argument("--bound", action="store_true", help="print the by-construction bound on p_T and stop")
    args = parser.parse_args(argv)
    exp = load_experiment(args.config, args.iterations)
    if args.bound:
        cfg = exp.train
        print(f"alpha = {cfg.adapt.fast_lr}, n = {cfg.fast_batch_size}, H = {get_family(cfg.tasks).horizon}: "
              "upper bound on p_T for a goal at distance r from the pre-update mean (isotropic sigma)")
        for r, p in bound_table(cfg.adapt.fast_lr, cfg.fast_batch_size, get_family(cfg.tasks).horizon):
            print(f"  r = {r:5.3f} sigma   p_T <= {p:.3f}")
        return 0
    jobs = [(o, s) for s in exp.seeds for o in ("init", *exp.objectives)]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(run_one, *zip(*[(exp, o, s, args.runs) for o, s in jobs])))
    else:
        rows = [run_one(exp, o, s, args.runs) for o, s in jobs]
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "per_seed.csv", [{k: v for k, v in r.items() if k not in ("key", "tasks")} for r in rows])
    task_rows = []
    for r in rows:
        t = r["tasks"]
        for i, goal in enumerate(t["goals"]):
            task_rows.append({"objective": r["objective"], "seed": r["seed"], "goal_x": goal[0], "goal_y": goal[1],
                              **{f: t[f][i] for f in STAT_FIELDS}})
    write_csv(args.out / "tasks.csv", task_rows)
    tests = paired_tests(rows, exp.objectives)
    write_csv(args.out / "tests.csv", tests)
    (args.out / "config.toml").write_text(args.config.read_text())
    (args.out / "summary.md").write_text(summary_markdown(rows, tests, ["init", *exp.objectives]))
    figure(rows, exp.objectives, exp.grid_cells, exp.beta, args.out / "figure.png")
    for t in tests:
        if t["metric"] in ("violation_rate", "post_return", "pre_return"):
            print(f"{t['objective']:>10} - maml  {t['metric']:<16} mean {t['mean_diff']:+.4f}  "
                  f"lower/equal/higher {t['lower']}/{t['equal']}/{t['higher']}  Wilcoxon p = {t['wilcoxon_p']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
