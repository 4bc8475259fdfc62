"""The learner: what one meta-training run holds across iterations, and `meta_step`, one readable
meta-iteration (sample, adapt, sample again, one meta-optimiser step on the objective).

All randomness of iteration i derives from (seed, i), so a run resumed from a checkpoint
reproduces the metrics of an uninterrupted run exactly. The loop over a run folder (progress,
metrics.csv, checkpoints, resume) is safemaml.runs.train.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from safemaml import files
from safemaml.config import TrainConfig
from safemaml.engine.curvature import make_fvp as curvature_fvp
from safemaml.engine.curvature import preconditioner
from safemaml.engine.fisher import supports
from safemaml.engine.metaopt import MetaOptimizer
from safemaml.engine.metastep import MetaData, inner_loop, meta_loss
from safemaml.engine.objective import Objective
from safemaml.engine.policy import Params, PolicySpec, action_std, mean_action
from safemaml.engine.returns import advantages
from safemaml.engine.rollout import Sampler
from safemaml.errors import RunFault, SafeMamlError
from safemaml.measure import schema
from safemaml.measure.metrics import summarize
from safemaml.tasks import get_family

METRIC_FIELDS = list(schema.TRAINING_COLUMNS)  # metrics.csv's leading columns (safemaml.measure.schema)


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
    objective: Objective
    pre_sampler: Sampler
    post_sampler: Sampler
    device: torch.device

    @classmethod
    def create(cls, cfg: TrainConfig, objective: Objective) -> Learner:
        """A fresh learner for `cfg` (initial parameters from its seed or its `init` checkpoint)."""
        family = get_family(cfg.tasks)
        device = torch_device(cfg.device)
        spec = policy_spec(cfg, family)
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
    ckpt = files.load_checkpoint(path / "last.pt" if path.is_dir() else path, keys=("params",))
    params = ckpt["params"]
    if {k: tuple(v.shape) for k, v in params.items()} != {k: tuple(v.shape) for k, v in fresh.items()}:
        raise SafeMamlError(f"--init {cfg.init}: its policy does not have this run's shape")
    files.check_params(params, fresh, path)
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
    make_preconditioner = None
    if cfg.meta.cg_precondition != "none":
        def make_preconditioner(theta: Params):
            return preconditioner(cfg.meta.cg_precondition, learner.spec, theta, data, cfg.meta.fvp_subsample,
                                  cfg.meta.cg_damping)
    std_before = action_std(learner.params)  # of the policy that sampled the pre-update data
    new_params, info = learner.optimizer.step(learner.params, evaluate, make_fvp, make_preconditioner)
    t4 = time.perf_counter()
    metrics = summarize(pre.returns.cpu().numpy(), post.returns.cpu().numpy(),
                        learner.objective.beta, learner.objective.delta)
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
