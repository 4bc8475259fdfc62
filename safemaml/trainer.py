"""Meta-training: `meta_step` (one readable iteration) and `train` (the loop, with progress,
metrics CSV, checkpoints, resume, Ctrl-C and non-finite guards).

All randomness of iteration i derives from (seed, i), so a run resumed from a checkpoint
reproduces the metrics of an uninterrupted run exactly.
"""

from __future__ import annotations

import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from objectives import make_objective
from safemaml import config as config_io
from safemaml.config import TrainConfig
from safemaml import rundir
from safemaml.errors import RunFault, SafeMamlError
from safemaml.curvature import make_fvp as curvature_fvp
from safemaml.fisher import supports
from safemaml.metaopt import MetaOptimizer
from safemaml.metastep import MetaData, inner_loop, meta_loss
from safemaml.metrics import summarize
from safemaml.policy import Params, PolicySpec, action_std, mean_action
from safemaml.returns import advantages
from safemaml.rollout import Sampler
from safemaml.rundir import RunDir
from safemaml.tasks import get_family

METRIC_FIELDS = ["iteration", "pre_return", "post_return", "mean_gamma", "cvar_gamma", "frac_negative",
                 "violation_rate", "certified_fraction", "action_std", "loss_before", "loss_after", "kl",
                 "grad_norm", "ls_steps", "accepted", "time_sampling", "time_adapt", "time_optimize"]


def derive_seed(*parts: int) -> int:
    """A 31-bit seed determined by the parts (seed, iteration, phase)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


@dataclass
class Learner:
    """Everything a meta-step needs that lives across iterations."""

    cfg: TrainConfig
    spec: PolicySpec
    params: Params
    optimizer: MetaOptimizer
    objective: object
    pre_sampler: Sampler
    post_sampler: Sampler
    device: torch.device

    @classmethod
    def create(cls, cfg: TrainConfig) -> "Learner":
        family = get_family(cfg.tasks)
        device = torch_device(cfg.device)
        spec = policy_spec(cfg, family)
        objective = make_objective(cfg.objective_name, **cfg.objective_params)
        pre = Sampler(family, spec, cfg.meta_batch_size, cfg.fast_batch_size, device=device,
                      clip_actions=cfg.clip_actions)
        post = pre if cfg.post_batch_size == cfg.fast_batch_size else Sampler(
            family, spec, cfg.meta_batch_size, cfg.post_batch_size, device=device, clip_actions=cfg.clip_actions)
        params = initial_params(cfg, spec, device)
        return cls(cfg, spec, params, MetaOptimizer(cfg.meta), objective, pre, post, device)

    def advantages(self, traj) -> torch.Tensor:
        return advantages(traj.obs, traj.rewards, traj.mask, self.cfg.gamma, self.cfg.gae_lambda)


def torch_device(name: str) -> torch.device:
    """The torch device `name` (cpu, cuda, cuda:N), or a one-line error if this machine lacks it."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SafeMamlError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise SafeMamlError(f"device {name!r} is not supported; use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SafeMamlError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SafeMamlError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def policy_spec(cfg: TrainConfig, family) -> PolicySpec:
    """The policy shape of a run of `cfg` on `family`."""
    return PolicySpec(family.obs_dim, family.act_dim, cfg.policy.hidden, cfg.policy.activation,
                      cfg.policy.init_std, cfg.policy.min_std, cfg.policy.learn_std)


def initial_params(cfg: TrainConfig, spec: PolicySpec, device: torch.device) -> Params:
    """A fresh policy from the seed, or the parameters of the checkpoint named by `cfg.init`.

    A std that is not learned is held at `policy.init_std` in both cases (the checkpoint's log std is
    replaced): that is how the matched-std control fine-tunes a checkpoint at another run's std.
    """
    fresh = spec.init(cfg.seed, device)
    if not cfg.init:
        return fresh
    path = Path(cfg.init)
    ckpt = rundir.load_checkpoint(path / "last.pt" if path.is_dir() else path, keys=("params",))
    params = ckpt["params"]
    if {k: tuple(v.shape) for k, v in params.items()} != {k: tuple(v.shape) for k, v in fresh.items()}:
        raise SafeMamlError(f"--init {cfg.init}: its policy does not have this run's shape")
    rundir.check_params(params, fresh, path)
    params = {k: v.to(device=device, dtype=fresh[k].dtype) for k, v in params.items()}
    if not spec.learn_std:
        params["log_std"] = fresh["log_std"]
    return params


def _finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors if isinstance(t, torch.Tensor))


def _usable(spec: PolicySpec, params: Params, obs: torch.Tensor) -> bool:
    """Finite parameters whose policy has a finite mean and standard deviation on `obs`."""
    with torch.no_grad():
        return (_finite(params.values()) and _finite([torch.exp(params["log_std"])])
                and _finite([mean_action(spec, params, obs)]))


def meta_step(learner: Learner, iteration: int,
              phase: Callable[[str], None] | None = None) -> dict[str, float]:
    """Sample, adapt, sample again, and take one meta-optimiser step on the objective.

    `phase(name)` is called as each stage starts (for progress inside a long iteration). A step
    that would leave non-finite parameters, policy outputs, loss or optimiser state raises
    NonFiniteError and changes nothing."""
    phase = phase or (lambda name: None)
    cfg, t0 = learner.cfg, time.perf_counter()
    family = learner.pre_sampler.family
    tasks = family.sample(cfg.meta_batch_size, np.random.default_rng([cfg.seed, iteration]))
    phase("sampling pre-update trajectories and adapting")
    inner = inner_loop(learner.spec, cfg.adapt, learner.params, learner.pre_sampler, tasks,
                       lambda s: derive_seed(cfg.seed, iteration, s), learner.advantages)
    pre = inner.pre
    if not _usable(learner.spec, inner.fast, pre.obs):
        raise NonFiniteError(f"non-finite adapted policy at iteration {iteration} (adapt.fast_lr = "
                             f"{cfg.adapt.fast_lr:g} may be too large)")
    phase("sampling post-update trajectories")
    post = learner.post_sampler.sample(inner.fast, tasks, seed=derive_seed(cfg.seed, iteration, 1))
    data = MetaData(pre, post, inner.pre_adv, learner.advantages(post), inner.fast, inner.resampled)
    t3 = time.perf_counter()
    objective_metrics: dict[str, float] = {}

    def evaluate(theta: Params):
        loss, kl, extra = meta_loss(learner.spec, cfg.adapt, learner.objective, theta, data)
        if not objective_metrics:  # the first evaluation is at the current theta; later ones are candidates
            objective_metrics.update(extra)
        return loss, kl

    phase("meta-optimiser step")
    optimizer_state = learner.optimizer.state_dict()
    make_fvp = None
    if supports(cfg.adapt):
        def make_fvp(theta: Params):
            return curvature_fvp(cfg.meta.curvature, learner.spec, cfg.adapt, theta, data, cfg.meta.fvp_subsample)
    std_before = action_std(learner.params)  # of the policy that sampled the pre-update data
    new_params, info = learner.optimizer.step(learner.params, evaluate, make_fvp)
    t4 = time.perf_counter()
    metrics = summarize(pre.returns.cpu().numpy(), post.returns.cpu().numpy(),
                        getattr(learner.objective, "beta", 0.1), getattr(learner.objective, "delta", 0.1))
    metrics.update(info)
    metrics.update({f"objective_{k}": v for k, v in objective_metrics.items()})
    metrics.update(iteration=float(iteration), action_std=std_before,
                   time_sampling=(t3 - t0) - inner.adapt_seconds, time_adapt=inner.adapt_seconds,
                   time_optimize=t4 - t3)
    finite = (math.isfinite(info["loss_before"]) and _usable(learner.spec, new_params, pre.obs)
              and _finite(learner.optimizer.state_dict()["adam_state"].values()))
    if not finite:
        learner.optimizer.load_state_dict(optimizer_state)  # nothing of the failed step is kept
        raise NonFiniteError(f"non-finite loss, parameters or optimiser state at iteration {iteration}")
    learner.params = new_params
    learner.objective.after_meta_step(metrics)
    return metrics


class NonFiniteError(RunFault):
    """The run diverged; the message names the last good checkpoint."""


# ---- the loop over a run folder -----------------------------------------------------------


def checkpoint_state(learner: Learner, iteration: int) -> dict:
    """What last.pt and checkpoints/iter_N.pt hold (torch.load(weights_only=True) loads it)."""
    return {"iteration": iteration, "params": {k: v.detach().cpu() for k, v in learner.params.items()},
            "optimizer": learner.optimizer.state_dict(), "objective": learner.objective.state_dict(),
            "config": config_io.dumps(learner.cfg)}


def load_checkpoint(path: Path) -> dict:
    """A validated checkpoint (see safemaml.rundir.load_checkpoint)."""
    return rundir.load_checkpoint(path)


def _restore(learner: Learner, run: RunDir) -> int:
    """Load run's last.pt into learner; the number of finished iterations."""
    ckpt = run.load_last()
    rundir.check_params(ckpt["params"], learner.params, run.last_path)
    try:
        learner.optimizer.load_state_dict(ckpt["optimizer"])
        learner.objective.load_state_dict(ckpt["objective"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise SafeMamlError(f"{run.last_path} was not written by this run's optimiser and objective") from None
    learner.params = {k: v.to(learner.device) for k, v in ckpt["params"].items()}
    return int(ckpt["iteration"]) + 1


def time_breakdown(m: dict[str, float]) -> str:
    """Where an iteration's time went (the time_* columns of metrics.csv), for the progress line."""
    return (f"sampling {m['time_sampling']:.1f} s / adaptation {m['time_adapt']:.1f} s / "
            f"meta-step {m['time_optimize']:.1f} s")


class Progress:
    """What a person watching sees: a line at the start, the stages of the first iteration, one
    line per iteration (rewritten in place on a terminal), and what to run at the end."""

    def __init__(self, quiet: bool, total: int):
        self.quiet, self.total = quiet, total
        self.tty = sys.stdout.isatty()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def phase(self, iteration: int, first: bool) -> Callable[[str], None] | None:
        if self.quiet or not first:
            return None
        return lambda name: self.say(f"  iteration {iteration + 1}: {name}...")

    def iteration(self, i: int, m: dict[str, float], per_it: float) -> None:
        if self.quiet:
            return
        eta = per_it * (self.total - i - 1)
        line = (f"[{i + 1:>4}/{self.total}] pre {m['pre_return']:9.2f}  post {m['post_return']:9.2f}  "
                f"Γ {m['mean_gamma']:+8.2f}  V̂ {m['violation_rate']:.2f}  {per_it:5.1f} s/it "
                f"({time_breakdown(m)})  "
                f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")
        end = "\r" if self.tty and i + 1 < self.total else "\n"
        print(line, end=end, flush=True)


def _refuse_foreign(run: RunDir) -> None:
    foreign = run.foreign_files()
    if foreign and not run.has_checkpoint():
        raise SafeMamlError(f"{run} is not empty ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}) "
                            "and holds no run; choose another --out")


def _open(run: RunDir, cfg: TrainConfig, resume: bool, progress: Progress) -> tuple[Learner, int]:
    """The learner and the first iteration to run; refuses folders that hold other work."""
    learner = Learner.create(cfg)
    if not resume:
        if run.has_checkpoint():
            raise SafeMamlError(f"{run} already holds a run; continue it with `safemaml train --resume "
                                f"{shlex.quote(str(run))}` or choose another --out")
        _refuse_foreign(run)
        return learner, 0
    if not run.has_checkpoint():  # it never finished an iteration: start it again with its config
        progress.say(f"{run} has no finished iteration; starting it from iteration 1")
        return learner, 0
    done = _restore(learner, run)
    if cfg.iterations < done:
        raise SafeMamlError(f"{run} has {done} finished iterations; --iterations must be at least {done}")
    return learner, done


def train(cfg: TrainConfig, out: Path, resume: bool = False, quiet: bool = False,
          tensorboard: bool = False) -> Learner:
    """Meta-train into run folder `out` (created, or resumed from its last.pt) under its lock.

    A new run that stops before its first iteration finishes leaves nothing behind (the same
    command starts it again); a resume that stops before an iteration finishes changes nothing."""
    run, progress = RunDir(out), Progress(quiet, cfg.iterations)
    if resume:
        run.require_run()
    else:
        _refuse_foreign(run)  # before the lock file is made: a refused folder stays as it was
    created = not run.path.exists()
    with run.lock():
        try:
            learner, start = _open(run, cfg, resume, progress)  # refusals change nothing
        except BaseException:
            if created:
                run.remove_if_empty()
            raise
        if start >= cfg.iterations:
            progress.say(f"{run} is already complete at {start} iterations; to train further: "
                         f"safemaml train --resume {shlex.quote(str(run))} --iterations {start * 2}")
            return learner
        board = None
        try:
            board = _tensorboard(run) if tensorboard else None
            if not resume:
                run.discard_unstarted(created=False)  # leftovers of a start that never finished an iteration
                run.write_config(cfg)
            _loop(learner, run, start, progress, board)
        except BaseException:
            if not resume:
                run.discard_unstarted(created)
            raise
        finally:
            if board is not None:
                board.close()
    return learner


def _loop(learner: Learner, run: RunDir, start: int, progress: Progress, board) -> None:
    cfg = learner.cfg
    log = run.metrics_log(METRIC_FIELDS, keep_below=start)
    last_done = start - 1
    verb = "resuming" if start else "training"
    progress.say(f"{verb} {cfg.tasks} with {cfg.objective_name}: iterations {start + 1}..{cfg.iterations} "
                 f"into {run} (Ctrl-C keeps every finished iteration)")
    try:
        for i in range(start, cfg.iterations):
            t = time.perf_counter()
            try:
                metrics = meta_step(learner, i, progress.phase(i, first=i == start))
            except NonFiniteError as exc:
                where = (f"the last good checkpoint is {run.last_path} (iteration {last_done})"
                         if last_done >= 0 else "no iteration finished, nothing was kept")
                raise NonFiniteError(f"{exc}; stopped, {where}") from None
            # last.pt.tmp first: a full disk then stops the run before anything else has changed
            staged = rundir.stage_bytes(run.last_path, rundir.checkpoint_bytes(checkpoint_state(learner, i)))
            try:
                if i == start and start > 0:
                    run.write_config(cfg)  # a resume describes itself once it has done something
                log.append(metrics)
                rundir.commit(staged, run.last_path)
            finally:
                staged.unlink(missing_ok=True)
            last_done = i
            if (i + 1) % cfg.checkpoint_every == 0:
                rundir.ensure_folder(run.checkpoints)
                rundir.save_checkpoint(checkpoint_state(learner, i), run.checkpoint_path(i))
            if board is not None:
                for key in log.fields[1:]:  # the metrics.csv columns after `iteration`
                    board.add_scalar(key, metrics.get(key, float("nan")), i + 1)
            progress.iteration(i, metrics, time.perf_counter() - t)
    except KeyboardInterrupt:  # last.pt already holds the last finished iteration: nothing half-done is saved
        if last_done >= 0:
            message = (f"interrupted after iteration {last_done + 1}; resume with: safemaml train --resume "
                       f"{shlex.quote(str(run))}")
        else:
            message = "interrupted before the first iteration finished; nothing was kept"
        raise KeyboardInterrupt(message) from None


def _tensorboard(run: RunDir):
    """A SummaryWriter into RUN/tensorboard (the optional `tensorboard` extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SafeMamlError("--tensorboard needs the tensorboard package: pip install 'safemaml[tensorboard]'") \
            from None
    with rundir.os_errors(run.path / "tensorboard"):
        return SummaryWriter(str(run.path / "tensorboard"))
