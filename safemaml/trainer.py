"""Meta-training: `meta_step` (one readable iteration) and `train` (the loop, with progress,
metrics CSV, checkpoints, resume, Ctrl-C and non-finite guards).

All randomness of iteration i derives from (seed, i), so a run resumed from a checkpoint
reproduces the metrics of an uninterrupted run exactly.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from objectives import make_objective
from safemaml import config as config_io
from safemaml.config import TrainConfig
from safemaml.errors import SafeMamlError
from safemaml.curvature import make_fvp as curvature_fvp
from safemaml.fisher import supports
from safemaml.metaopt import MetaOptimizer
from safemaml.metastep import MetaData, inner_loop, meta_loss
from safemaml.metrics import summarize
from safemaml.policy import Params, PolicySpec
from safemaml.returns import advantages
from safemaml.rollout import Sampler
from safemaml.tasks import get_family

METRIC_FIELDS = ["iteration", "pre_return", "post_return", "mean_gamma", "cvar_gamma", "frac_negative",
                 "violation_rate", "certified_fraction", "loss_before", "loss_after", "kl", "grad_norm",
                 "ls_steps", "accepted", "time_sampling", "time_adapt", "time_optimize"]


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
        device = torch.device(cfg.device)
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


def policy_spec(cfg: TrainConfig, family) -> PolicySpec:
    """The policy shape of a run of `cfg` on `family`."""
    return PolicySpec(family.obs_dim, family.act_dim, cfg.policy.hidden, cfg.policy.activation,
                      cfg.policy.init_std, cfg.policy.min_std)


def initial_params(cfg: TrainConfig, spec: PolicySpec, device: torch.device) -> Params:
    """A fresh policy from the seed, or the parameters of the checkpoint named by `cfg.init`."""
    fresh = spec.init(cfg.seed, device)
    if not cfg.init:
        return fresh
    path = Path(cfg.init)
    ckpt = load_checkpoint(path / "last.pt" if path.is_dir() else path)
    params = ckpt["params"]
    if {k: tuple(v.shape) for k, v in params.items()} != {k: tuple(v.shape) for k, v in fresh.items()}:
        raise SafeMamlError(f"--init {cfg.init}: its policy does not have this run's shape")
    return {k: v.to(device=device, dtype=fresh[k].dtype) for k, v in params.items()}


def meta_step(learner: Learner, iteration: int) -> dict[str, float]:
    """Sample, adapt, sample again, and take one meta-optimiser step on the objective."""
    cfg, t0 = learner.cfg, time.perf_counter()
    family = learner.pre_sampler.family
    tasks = family.sample(cfg.meta_batch_size, np.random.default_rng([cfg.seed, iteration]))
    inner = inner_loop(learner.spec, cfg.adapt, learner.params, learner.pre_sampler, tasks,
                       lambda s: derive_seed(cfg.seed, iteration, s), learner.advantages)
    pre = inner.pre
    post = learner.post_sampler.sample(inner.fast, tasks, seed=derive_seed(cfg.seed, iteration, 1))
    data = MetaData(pre, post, inner.pre_adv, learner.advantages(post), inner.fast, inner.resampled)
    t3 = time.perf_counter()
    objective_metrics: dict[str, float] = {}

    def evaluate(theta: Params):
        loss, kl, extra = meta_loss(learner.spec, cfg.adapt, learner.objective, theta, data)
        if not objective_metrics:  # the first evaluation is at the current theta; later ones are candidates
            objective_metrics.update(extra)
        return loss, kl

    make_fvp = None
    if supports(cfg.adapt):
        def make_fvp(theta: Params):
            return curvature_fvp(cfg.meta.curvature, learner.spec, cfg.adapt, theta, data, cfg.meta.fvp_subsample)
    new_params, info = learner.optimizer.step(learner.params, evaluate, make_fvp)
    t4 = time.perf_counter()
    metrics = summarize(pre.returns.cpu().numpy(), post.returns.cpu().numpy(),
                        getattr(learner.objective, "beta", 0.1), getattr(learner.objective, "delta", 0.1))
    metrics.update(info)
    metrics.update({f"objective_{k}": v for k, v in objective_metrics.items()})
    metrics.update(iteration=float(iteration), time_sampling=(t3 - t0) - inner.adapt_seconds,
                   time_adapt=inner.adapt_seconds,
                   time_optimize=t4 - t3)
    finite = math.isfinite(info["loss_before"]) and all(bool(torch.isfinite(v).all()) for v in new_params.values())
    if not finite:
        raise NonFiniteError(f"non-finite loss or parameters at iteration {iteration}")
    learner.params = new_params
    learner.objective.after_meta_step(metrics)
    return metrics


class NonFiniteError(SafeMamlError):
    pass


# ---- run directory: config, metrics, checkpoints ---------------------------------------------


def save_checkpoint(learner: Learner, path: Path, iteration: int) -> None:
    """Atomically write a checkpoint loadable with torch.load(weights_only=True)."""
    state = {"iteration": iteration, "params": {k: v.detach().cpu() for k, v in learner.params.items()},
             "optimizer": learner.optimizer.state_dict(), "objective": learner.objective.state_dict(),
             "config": config_io.dumps(learner.cfg)}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise SafeMamlError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


class MetricsLog:
    """metrics.csv, one row per meta-iteration: the common fields, then the objective's own
    (`objective_*`, fixed by the first row). On resume, rows past the checkpoint are dropped."""

    def __init__(self, path: Path, keep_below: int | None = None):
        self.path, self.fields, rows = path, None, []
        if keep_below is not None and path.exists():
            with path.open() as f:
                reader = csv.DictReader(f)
                self.fields = reader.fieldnames
                rows = [r for r in reader if int(float(r["iteration"])) < keep_below]
        if self.fields is None:
            path.write_text("")
            return
        self._write(rows, "w", header=True)

    def _write(self, rows: list[dict], mode: str, header: bool) -> None:
        with self.path.open(mode, newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="ignore")
            if header:
                writer.writeheader()
            writer.writerows(rows)

    def append(self, metrics: dict[str, float]) -> None:
        header = self.fields is None
        if header:
            self.fields = METRIC_FIELDS + sorted(k for k in metrics if k.startswith("objective_"))
        row = {k: (int(metrics[k]) if k == "iteration" else f"{metrics.get(k, float('nan')):.6g}")
               for k in self.fields}
        self._write([row], "a", header)


def time_breakdown(m: dict[str, float]) -> str:
    """Where an iteration's time went (the time_* columns of metrics.csv), for the progress line."""
    return (f"sampling {m['time_sampling']:.1f} s / adaptation {m['time_adapt']:.1f} s / "
            f"meta-step {m['time_optimize']:.1f} s")


def _progress(i: int, total: int, m: dict[str, float], per_it: float) -> None:
    eta = per_it * (total - i - 1)
    line = (f"[{i + 1:>4}/{total}] pre {m['pre_return']:9.2f}  post {m['post_return']:9.2f}  "
            f"Γ {m['mean_gamma']:+8.2f}  V̂ {m['violation_rate']:.2f}  {per_it:5.1f} s/it "
            f"({time_breakdown(m)})  ETA {int(eta // 60)}m{int(eta % 60):02d}s")
    end = "\r" if sys.stderr.isatty() and i + 1 < total else "\n"
    print(line, end=end, file=sys.stderr, flush=True)


def prepare_run(cfg: TrainConfig, out: Path) -> None:
    """Create a new run directory; an existing run there is never overwritten."""
    if (out / "metrics.csv").exists() or (out / "last.pt").exists():
        raise SafeMamlError(f"{out} already holds a run; resume it with --resume {out} or choose another --out")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(config_io.dumps(cfg))


def train(cfg: TrainConfig, out: Path, resume: bool = False, quiet: bool = False) -> Learner:
    """Meta-train into run directory `out` (created, or resumed from its last.pt)."""
    learner = Learner.create(cfg)
    start = 0
    if resume:
        ckpt = load_checkpoint(out / "last.pt")
        learner.params = {k: v.to(learner.device) for k, v in ckpt["params"].items()}
        learner.optimizer.load_state_dict(ckpt["optimizer"])
        learner.objective.load_state_dict(ckpt["objective"])
        start = int(ckpt["iteration"]) + 1
        (out / "config.toml").write_text(config_io.dumps(cfg))
    else:
        prepare_run(cfg, out)
    log = MetricsLog(out / "metrics.csv", keep_below=start if resume else None)
    last_done = start - 1
    try:
        for i in range(start, cfg.iterations):
            t = time.perf_counter()
            try:
                metrics = meta_step(learner, i)
            except NonFiniteError as exc:
                raise SafeMamlError(f"{exc}; stopped, the last good checkpoint is {out / 'last.pt'} "
                                    f"(iteration {last_done})") from None
            log.append(metrics)
            last_done = i
            save_checkpoint(learner, out / "last.pt", i)
            if (i + 1) % cfg.checkpoint_every == 0:
                save_checkpoint(learner, out / "checkpoints" / f"iter_{i + 1:05d}.pt", i)
            if not quiet:
                _progress(i, cfg.iterations, metrics, time.perf_counter() - t)
    except KeyboardInterrupt:  # last.pt already holds the last finished iteration: nothing half-done is saved
        print(f"\ninterrupted after iteration {last_done + 1}; resume with: safemaml train --resume {out}",
              file=sys.stderr)
        raise
    return learner
