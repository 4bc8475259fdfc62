"""Before/after returns on a task grid: the measurement of negative adaptation.

For each grid task and each of r independent rounds: sample n trajectories with theta,
adapt, sample n with theta'_T. Writes a tidy CSV (one row per trajectory), a per-task CSV,
a JSON summary of the metrics (safemaml.metrics) and the paper's figure.
"""

from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path

import numpy as np
import torch

from safemaml.errors import SafeMamlError
from safemaml.metrics import p_hat, summarize
from safemaml.metastep import inner_loop
from safemaml.returns import advantages
from safemaml.rollout import Sampler
from safemaml.tasks import TaskFamily, get_family
from safemaml.rundir import RunDir, check_params, load_checkpoint, replaced_folder
from safemaml.trainer import derive_seed, policy_spec

MAX_GRID_TASKS = 10_000


def parse_grid(text: str, family: TaskFamily) -> np.ndarray:
    """'START:STOP:STEP' (stop included); for a family with several parameters, the same range on
    every axis (their Cartesian product)."""
    try:
        start, stop, step = (float(x) for x in text.split(":"))
    except ValueError:
        raise SafeMamlError(f"--grid must be START:STOP:STEP, got {text!r}") from None
    if not all(np.isfinite([start, stop, step])):
        raise SafeMamlError(f"--grid {text!r}: START, STOP and STEP must be finite numbers")
    if step <= 0 or stop < start:
        raise SafeMamlError(f"--grid {text!r}: need STEP > 0 and STOP >= START")
    with np.errstate(over="ignore"):
        span = (stop - start) / step  # STEP-sized intervals; inf when it overflows
    if not span < MAX_GRID_TASKS or (int(span) + 1) ** family.num_params > MAX_GRID_TASKS:
        raise SafeMamlError(f"--grid {text!r} has more than {MAX_GRID_TASKS} tasks; use a larger STEP")
    points = int(np.floor(span + 1e-6)) + 1
    axis = np.round(start + step * np.arange(points), 10)
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
    Writing into the run folder takes its lock; the output folder is replaced only when complete.
    """
    if trajectories < 1 or repeats < 1:
        raise SafeMamlError("--trajectories and --repeats must be >= 1")
    for name, value in (("beta", beta), ("delta", delta)):
        if not 0 < value < 1:
            raise SafeMamlError(f"{name} must be in (0, 1), got {value}")
    folder = RunDir(run)
    cfg = folder.read_config()
    family = get_family(cfg.tasks)
    grid = parse_grid(grid_text, family) if grid_text else family.eval_grid()
    if not folder.has_checkpoint():
        raise SafeMamlError(f"{run} has no finished iteration to evaluate (no last.pt)")
    ckpt = load_checkpoint(folder.last_path)
    check_params(ckpt["params"], policy_spec(cfg, family).init(0), folder.last_path)
    params = {k: v.to(device) for k, v in ckpt["params"].items()}
    out = Path(out) if out else run / "eval"
    inside = out.resolve().is_relative_to(run.resolve())
    with folder.lock() if inside else contextlib.nullcontext(), replaced_folder(out) as tmp:
        pre, post = sample_before_after(family, cfg, params, grid, trajectories, repeats, seed, torch.device(device))
        summary = _write(tmp, family, cfg, grid, pre, post, ckpt, trajectories, repeats, beta, delta)
    return summary


def _write(out: Path, family: TaskFamily, cfg, grid: np.ndarray, pre: np.ndarray, post: np.ndarray, ckpt: dict,
           trajectories: int, repeats: int, beta: float, delta: float) -> dict[str, float]:
    from safemaml.report import before_after_figure

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
