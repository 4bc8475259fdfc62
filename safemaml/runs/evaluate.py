"""Before/after returns on a set of tasks: the measurement of negative adaptation.

The tasks are drawn i.i.d. from the family's training distribution p(T) (`--sample N`, the
default: the only task set on which the certificate of Eq. 6 speaks of p(T)), or a fixed grid
(`--grid`, for the paper's figures). For each task and each of R independent rounds: sample
n + 1 trajectories with theta, adapt on the first n, sample n with theta'_T. The extra
(held-out) pre-update trajectory and the first post-update one form the round's pair for the
certificate: it was not used to adapt, so the R pairs are independent draws of
(G_pre, G_post) and their wins are Binomial(R, p_T). Writes a tidy CSV (one row per
trajectory), a per-task CSV, a JSON summary (safemaml.measure.metrics) and the paper's figure.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from safemaml.checks import MAX_SEED, check_eval_request
from safemaml.config import DEFAULT_ROUNDS, DEFAULT_SAMPLE, EvalRequest
from safemaml.engine.learner import derive_seed, policy_spec
from safemaml.engine.metastep import InnerLoop, inner_loop
from safemaml.engine.policy import PolicySpec, action_std
from safemaml.engine.returns import advantages
from safemaml.engine.rollout import Sampler, Trajectories
from safemaml.errors import SafeMamlError
from safemaml.files import RETURNS, write_gzip_text
from safemaml.measure.metrics import per_task_rounds, summarize
from safemaml.runs.integrity import check_config_matches_checkpoint, check_evaluation_out, valid_rounds
from safemaml.runs.rundir import RunDir, check_params, load_checkpoint, replaced_folder, write_bytes_atomic
from safemaml.tasks import TaskFamily, get_family

MAX_GRID_TASKS = 10_000


def parse_grid(text: str, family: TaskFamily, flag: str = "--grid") -> np.ndarray:
    """'START:STOP:STEP' (stop included); for a family with several parameters, the same range on
    every axis (their Cartesian product). `flag` names the option in error messages."""
    try:
        start, stop, step = (float(x) for x in text.split(":"))
    except ValueError:
        raise SafeMamlError(f"{flag} must be START:STOP:STEP, got {text!r}") from None
    if not all(np.isfinite([start, stop, step])):
        raise SafeMamlError(f"{flag} {text!r}: START, STOP and STEP must be finite numbers")
    if step <= 0 or stop < start:
        raise SafeMamlError(f"{flag} {text!r}: need STEP > 0 and STOP >= START")
    with np.errstate(over="ignore"):
        span = (stop - start) / step  # STEP-sized intervals; inf when it overflows
    if not span < MAX_GRID_TASKS or (int(span) + 1) ** family.num_params > MAX_GRID_TASKS:
        raise SafeMamlError(f"{flag} {text!r} has more than {MAX_GRID_TASKS} tasks; use a larger STEP")
    points = int(np.floor(span + 1e-6)) + 1
    axis = np.round(start + step * np.arange(points), 10)
    mesh = np.meshgrid(*[axis] * family.num_params, indexing="ij")
    return family.validate(np.stack(mesh, axis=-1).reshape(-1, family.num_params))


# bump when a change to sampling, the statistics or the files changes what an evaluation writes: an evaluation
# made by another version is then not reused (evaluate_run's `reuse`)
EVAL_VERSION = 1


def choose_tasks(family: TaskFamily, grid_text: str | None, sample: int | None,
                 task_seed: int) -> tuple[np.ndarray, dict]:
    """The evaluation tasks [K, P] and the summary fields that say what they are."""
    if grid_text is not None and sample is not None:
        raise SafeMamlError("give either --sample N or --grid, not both")
    if grid_text is None:
        count = DEFAULT_SAMPLE if sample is None else sample
        if count < 1:
            raise SafeMamlError(f"--sample must be >= 1, got {count}")
        if count > MAX_GRID_TASKS:  # as a grid: the tasks' rounds are kept in memory
            raise SafeMamlError(f"--sample {count}: at most {MAX_GRID_TASKS} tasks")
        if not 0 <= task_seed <= MAX_SEED:
            raise SafeMamlError(f"--task-seed must be in [0, {MAX_SEED}], got {task_seed}")
        tasks = family.validate(family.sample(count, np.random.default_rng(task_seed)))
        return tasks, {"task_set": "sampled from p(T)", "task_distribution": family.distribution,
                       "task_seed": task_seed,
                       "bound_scope": "tasks drawn i.i.d. from the training distribution: the certified "
                                      "fraction is a lower bound (95%) on Pr_T(p_T >= 1 - beta) under p(T)"}
    grid = family.eval_grid() if grid_text == "default" else parse_grid(grid_text, family)
    return grid, {"task_set": "grid", "task_distribution": family.distribution, "task_seed": None,
                  "bound_scope": "a fixed grid, not draws from p(T): the certified fraction bounds the fraction of "
                                 "these grid points with p_T >= 1 - beta, not Pr_T(p_T >= 1 - beta) under p(T); "
                                 "grid points outside the training range count as much as those inside"}


def objective_risk_levels(cfg) -> tuple[float, float]:
    """beta and delta of the run's objective ([objective] in config.toml, else the objective's defaults)."""
    from objectives import make_objective

    objective = make_objective(cfg.objective_name, **cfg.objective_params)
    return float(objective.beta), float(objective.delta)


POST_PHASE = 1  # seed part of the post-update sample (inner_loop uses 0, 2, 3, ...)
HELD_OUT_PHASE = 1000  # seed part of the held-out pre-update sample


def sample_before_after(family: TaskFamily, cfg, params, tasks: np.ndarray, n: int, repeats: int,
                        seed: int, device: torch.device, progress: Path | None = None,
                        key: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pre [K, repeats, n] (the adaptation data), held-out pre [K, repeats], post [K, repeats, n].

    The held-out trajectory of round r is sampled with theta apart from the adaptation data
    (its own seed), so theta'_T of that round never saw it. Every round's seeds derive from (seed, r),
    so an evaluation stopped after some rounds continues where it stopped: the finished rounds are kept
    in `progress` (with `key`, which names the request) after each round.
    """
    spec = policy_spec(cfg, family)
    sampler = Sampler(family, spec, len(tasks), n, device=device, clip_actions=cfg.clip_actions)
    held_sampler = Sampler(family, spec, len(tasks), 1, device=device, clip_actions=cfg.clip_actions)
    pre_all, held_all, post_all = load_rounds(progress, key, (len(tasks), n, repeats))
    for r in range(len(pre_all), repeats):
        inner, held, post = evaluation_round(cfg, spec, params, sampler, held_sampler, tasks, seed, r)
        pre_all.append(inner.pre.returns.cpu().numpy())
        held_all.append(held.returns[:, 0].cpu().numpy())
        post_all.append(post.returns.cpu().numpy())
        if progress is not None:
            save_rounds(progress, key, pre_all, held_all, post_all)
    return np.stack(pre_all, 1), np.stack(held_all, 1), np.stack(post_all, 1)


def evaluation_round(cfg, spec: PolicySpec, params, sampler: Sampler, held_sampler: Sampler, tasks: np.ndarray,
                     seed: int, r: int) -> tuple[InnerLoop, Trajectories, Trajectories]:
    """Round r: adapt on `sampler`'s n pre-update trajectories per task (the InnerLoop), then the round's
    held-out pre-update trajectory [K, 1] (with theta) and the n post-update ones (with theta'_T).
    Their environments were reset with seed derive_seed(seed, r, HELD_OUT_PHASE or POST_PHASE) + index
    (safemaml.runs.render replays them from these seeds)."""
    inner = inner_loop(spec, cfg.adapt, params, sampler, tasks, lambda s: derive_seed(seed, r, s),
                       lambda t: advantages(t.obs, t.rewards, t.mask, cfg.gamma, cfg.gae_lambda))
    post = sampler.sample(inner.fast, tasks, seed=derive_seed(seed, r, POST_PHASE))
    held = held_sampler.sample(params, tasks, seed=derive_seed(seed, r, HELD_OUT_PHASE))
    return inner, held, post


def load_rounds(path: Path | None, key: str, shape: tuple[int, int, int] | None = None) -> tuple[list, list, list]:
    """The rounds an interrupted evaluation of the same request finished (none if the file is missing, damaged
    — truncated, not an npz, of other shapes than `shape` = (tasks, trajectories, repeats) — or from another
    request: the rounds are sampled again, and the evaluation is exactly what an uninterrupted one writes)."""
    if path is None:
        return [], [], []
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {name: f[name] for name in ("key", "pre", "held", "post")}
    except Exception:  # a damaged file: zipfile, EOF, OSError, ValueError, KeyError ... all mean "start again"
        return [], [], []
    if str(data["key"]) != key or (shape is not None and not valid_rounds(data, *shape)):
        return [], [], []
    pre, held, post = (list(np.moveaxis(data[name], 1, 0)) for name in ("pre", "held", "post"))
    return pre, held, post


def save_rounds(path: Path, key: str, pre: list, held: list, post: list) -> None:
    """Keep the finished rounds, written atomically (a stop while writing leaves the previous file)."""
    buffer = io.BytesIO()
    np.savez(buffer, key=np.array(key), pre=np.stack(pre, 1), held=np.stack(held, 1), post=np.stack(post, 1))
    write_bytes_atomic(path, buffer.getvalue())


def write_returns_csv(path: Path, family: TaskFamily, tasks: np.ndarray, pre: np.ndarray, held: np.ndarray,
                      post: np.ndarray) -> None:
    """One row per trajectory; phase "heldout" is the round's pre-update trajectory not used to adapt. Written
    gzip-compressed (safemaml.files.RETURNS): pandas.read_csv and gzip.open read it as it is."""
    with write_gzip_text(path) as f:
        w = csv.writer(f)
        w.writerow(["task_index", *family.param_names, "repeat", "phase", "trajectory", "return"])
        for g in range(len(tasks)):
            for phase, data in (("pre", pre), ("heldout", held[:, :, None]), ("post", post)):
                for r in range(data.shape[1]):
                    for j in range(data.shape[2]):
                        w.writerow([g, *tasks[g].tolist(), r, phase, j, f"{data[g, r, j]:.6f}"])


def write_tasks_csv(path: Path, family: TaskFamily, tasks: np.ndarray, pre: np.ndarray, post: np.ndarray,
                    per_task: dict[str, np.ndarray]) -> None:
    """Per task: mean returns and Gamma over all rounds; p-hat_T = wins / R of the held-out pairs with its
    95% Clopper-Pearson interval, and whether the task passes the per-task test."""
    flat_pre, flat_post = pre.reshape(len(tasks), -1), post.reshape(len(tasks), -1)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task_index", *family.param_names, "mean_pre", "mean_post", "mean_gamma", "wins", "p_hat",
                    "p_lo", "p_hi", "passes"])
        for g in range(len(tasks)):
            w.writerow([g, *tasks[g].tolist(), f"{flat_pre[g].mean():.6f}", f"{flat_post[g].mean():.6f}",
                        f"{flat_pre[g].mean() - flat_post[g].mean():.6f}", int(per_task["wins"][g]),
                        f"{per_task['p_hat'][g]:.6f}", f"{per_task['p_lo'][g]:.6f}", f"{per_task['p_hi'][g]:.6f}",
                        int(per_task["passes"][g])])


def request_record(request: EvalRequest, checkpoint_sha256: str) -> dict:
    """summary.json's `request`: the resolved request's fields in their order, the evaluation's version and the
    checkpoint's hash. An earlier evaluation is reused only for an equal record, so its keys, their order and
    its values stay as they are (the evaluations already on disk are recognised by them)."""
    return {**dataclasses.asdict(request), "version": EVAL_VERSION, "checkpoint_sha256": checkpoint_sha256}


def evaluate_run(run: Path, request: EvalRequest | None = None, out: Path | None = None, *,
                 reuse: bool = False) -> dict:
    """Evaluate the run's last checkpoint; write returns.csv.gz, tasks.csv, summary.json, figure.png (the
    figure only where matplotlib is installed; the summary's `figure` is null otherwise).

    `request` (default: EvalRequest()): beta and delta left None are the run's objective's, repeats
    DEFAULT_ROUNDS. The certificate needs repeats >= 29 rounds to certify anything at beta = 0.1;
    `min_passing_p` in the summary states its power (the smallest p_T that passes with probability >= 0.8).
    Writing into the run folder takes its lock; the output folder is replaced only when complete.
    `reuse`: return the summary already in `out` instead when it was made from this checkpoint (the same
    last.pt bytes) with the same request and EVAL_VERSION (a resumed comparison does not evaluate its
    finished runs again).
    """
    request = request or EvalRequest()
    check_eval_request(request)  # types and ranges: a SafeMamlError that names the field (the API's callers too)
    if request.trajectories < 1 or (request.repeats is not None and request.repeats < 1):
        raise SafeMamlError("--trajectories and --repeats must be >= 1")
    folder = RunDir(run)
    cfg = folder.read_config()
    run_beta, run_delta = objective_risk_levels(cfg)
    request = request.resolved(EvalRequest(repeats=DEFAULT_ROUNDS, beta=run_beta, delta=run_delta))
    repeats, beta, delta = request.levels()
    for name, value in (("beta", beta), ("delta", delta)):
        if not 0 < value < 1:
            raise SafeMamlError(f"{name} must be in (0, 1), got {value}")
    family = get_family(cfg.tasks)
    tasks, task_set = choose_tasks(family, request.grid, request.sample, request.task_seed)
    if not folder.has_checkpoint():
        raise SafeMamlError(f"{run} has no finished iteration to evaluate (no last.pt)")
    ckpt = load_checkpoint(folder.last_path)
    # the adaptation is config.toml's: one edited by hand would evaluate another inner loop than the run's
    check_config_matches_checkpoint(folder.config_path.read_text(), ckpt, folder.path)
    check_params(ckpt["params"], policy_spec(cfg, family).init(0), folder.last_path)
    out = Path(out) if out else run / "eval"
    check_evaluation_out(run, out)  # never the run, a folder holding it, or a folder that is not an evaluation
    record = request_record(request, hashlib.sha256(folder.last_path.read_bytes()).hexdigest())
    if reuse and (earlier := _earlier_summary(out, record)) is not None:
        return earlier
    params = {k: v.to(request.device) for k, v in ckpt["params"].items()}
    inside = out.resolve().is_relative_to(run.resolve())
    progress = out.with_name(out.name + ".rounds.npz")  # the finished rounds, until the folder is complete
    with folder.lock() if inside else contextlib.nullcontext(), replaced_folder(out) as tmp:
        pre, held, post = sample_before_after(family, cfg, params, tasks, request.trajectories, repeats,
                                              request.seed, torch.device(request.device), progress,
                                              json.dumps(record, sort_keys=True))
        summary = _write(tmp, family, cfg, tasks, task_set, pre, held, post, ckpt, request, record)
    progress.unlink(missing_ok=True)
    return summary


def _earlier_summary(out: Path, record: dict) -> dict | None:
    """The summary in `out` if it answers `record` (which names the checkpoint by its hash), else None."""
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("request") == record and (out / "tasks.csv").is_file() else None


def _write(out: Path, family: TaskFamily, cfg, tasks: np.ndarray, task_set: dict, pre: np.ndarray, held: np.ndarray,
           post: np.ndarray, ckpt: dict, request: EvalRequest, record: dict) -> dict:
    draw = _figure_drawer()
    write_returns_csv(out / RETURNS, family, tasks, pre, held, post)
    repeats, beta, delta = request.levels()
    write_tasks_csv(out / "tasks.csv", family, tasks, pre, post, per_task_rounds(held, post[:, :, 0], beta))
    summary = summarize(pre.reshape(len(tasks), -1), post.reshape(len(tasks), -1), beta, delta, intervals=True,
                        rounds=(held, post[:, :, 0]))  # one (held-out pre, post) pair per independent round
    summary.update(iteration=int(ckpt["iteration"]) + 1, tasks=len(tasks), trajectories=request.trajectories,
                   repeats=repeats, beta=beta, delta=delta, action_std=action_std(ckpt["params"]), **task_set,
                   request=record, figure="figure.png" if draw else None)
    summary = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if draw:
        draw(family, tasks, pre, post, out / "figure.png",
             title=f"{family.name}, {cfg.objective_name}, after {summary['iteration']} meta-iterations, "
                   f"{len(tasks)} tasks ({task_set['task_set']})")
    return summary


def _figure_drawer() -> Callable[..., None] | None:
    """safemaml.measure.figures.before_after_figure, or None where matplotlib is not installed: a machine
    that only computes (the GPU check's, benchmarks/gpu_check.sh) still gets every number, and the
    summary's `figure` says that the figure is missing. A broken matplotlib install is still an error."""
    try:
        from safemaml.measure.figures import before_after_figure
    except ModuleNotFoundError as missing:
        if missing.name != "matplotlib":
            raise
        return None
    return before_after_figure
