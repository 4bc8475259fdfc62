"""Before/after returns on a task grid: the measurement of negative adaptation.

For each grid task and each of r independent rounds: sample n trajectories with theta,
adapt, sample n with theta'_T. Writes a tidy CSV (one row per trajectory), a per-task CSV,
a JSON summary of the metrics (safemaml.metrics) and the paper's figure.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from safemaml import config as config_io
from safemaml.errors import SafeMamlError
from safemaml.metrics import p_hat, summarize
from safemaml.metastep import inner_loop
from safemaml.returns import advantages
from safemaml.rollout import Sampler
from safemaml.tasks import TaskFamily, get_family
from safemaml.trainer import derive_seed, load_checkpoint, policy_spec


def parse_grid(text: str, family: TaskFamily) -> np.ndarray:
    """'START:STOP:STEP' (stop included); for a family with several parameters, the same range on
    every axis (their Cartesian product)."""
    try:
        start, stop, step = (float(x) for x in text.split(":"))
    except ValueError:
        raise SafeMamlError(f"--grid must be START:STOP:STEP, got {text!r}") from None
    if step <= 0 or stop < start:
        raise SafeMamlError(f"--grid {text!r}: need STEP > 0 and STOP >= START")
    axis = np.round(np.arange(start, stop + step * 1e-6, step), 10)
    mesh = np.meshgrid(*[axis] * family.num_params, indexing="ij")
    return family.validate(np.stack(mesh, axis=-1).reshape(-1, family.num_params))


def sample_before_after(family: TaskFamily, cfg, params, grid: np.ndarray, n: int, repeats: int,
                        seed: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Returns pre, post of shape [G, repeats, n]."""
    spec = policy_spec(cfg, family)
    sampler = Sampler(family, spec, len(grid), n, device=device, clip_actions=cfg.clip_actions)
    pre_all, post_all = [], []
    for r in range(repeats):
        inner = inner_loop(spec, cfg.adapt, params, sampler, grid, lambda s: derive_seed(seed, r, s),
                           lambda t: advantages(t.obs, t.rewards, t.mask, cfg.gamma, cfg.gae_lambda))
        pre = inner.pre
        post = sampler.sample(inner.fast, grid, seed=derive_seed(seed, r, 1))
        pre_all.append(pre.returns.cpu().numpy())
        post_all.append(post.returns.cpu().numpy())
    return np.stack(pre_all, 1), np.stack(post_all, 1)


def write_returns_csv(path: Path, family: TaskFamily, grid: np.ndarray, pre: np.ndarray, post: np.ndarray) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task_index", *family.param_names, "repeat", "phase", "trajectory", "return"])
        for g in range(len(grid)):
            for phase, data in (("pre", pre), ("post", post)):
                for r in range(data.shape[1]):
                    for j in range(data.shape[2]):
                        w.writerow([g, *grid[g].tolist(), r, phase, j, f"{data[g, r, j]:.6f}"])


def write_tasks_csv(path: Path, family: TaskFamily, grid: np.ndarray, pre: np.ndarray, post: np.ndarray) -> None:
    flat_pre, flat_post = pre.reshape(len(grid), -1), post.reshape(len(grid), -1)
    probs = p_hat(flat_pre, flat_post)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task_index", *family.param_names, "mean_pre", "mean_post", "mean_gamma", "p_hat"])
        for g in range(len(grid)):
            w.writerow([g, *grid[g].tolist(), f"{flat_pre[g].mean():.6f}", f"{flat_post[g].mean():.6f}",
                        f"{flat_pre[g].mean() - flat_post[g].mean():.6f}", f"{probs[g]:.6f}"])


def evaluate_run(run: Path, out: Path | None = None, grid_text: str | None = None, trajectories: int = 20,
                 repeats: int = 1, seed: int = 0, beta: float = 0.1, delta: float = 0.1,
                 device: str = "cpu") -> dict[str, float]:
    """Evaluate the run's last checkpoint; write returns.csv, tasks.csv, summary.json, figure.png.

    The certificate uses one pair per round: it needs repeats >= 29 to certify beta = 0.1.
    """
    from safemaml.report import before_after_figure

    if not (run / "config.toml").is_file():
        raise SafeMamlError(f"{run} is not a run directory (no config.toml)")
    if trajectories < 1 or repeats < 1:
        raise SafeMamlError("--trajectories and --repeats must be >= 1")
    for name, value in (("beta", beta), ("delta", delta)):
        if not 0 < value < 1:
            raise SafeMamlError(f"{name} must be in (0, 1), got {value}")
    cfg = config_io.load(run / "config.toml")
    ckpt = load_checkpoint(run / "last.pt")
    family = get_family(cfg.tasks)
    grid = parse_grid(grid_text, family) if grid_text else family.eval_grid()
    params = {k: v.to(device) for k, v in ckpt["params"].items()}
    pre, post = sample_before_after(family, cfg, params, grid, trajectories, repeats, seed, torch.device(device))
    out = out or run / "eval"
    out.mkdir(parents=True, exist_ok=True)
    write_returns_csv(out / "returns.csv", family, grid, pre, post)
    write_tasks_csv(out / "tasks.csv", family, grid, pre, post)
    summary = summarize(pre.reshape(len(grid), -1), post.reshape(len(grid), -1), beta, delta, intervals=True,
                        rounds=(pre[:, :, 0], post[:, :, 0]))  # one pair per independent round
    summary.update(iteration=int(ckpt["iteration"]) + 1, tasks=len(grid), trajectories=trajectories,
                   repeats=repeats, beta=beta, delta=delta)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    before_after_figure(family, grid, pre, post, out / "figure.png",
                        title=f"{family.name}, {cfg.objective_name}, after {summary['iteration']} meta-iterations")
    return summary
