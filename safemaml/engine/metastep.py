"""One meta-step's mathematics: adapted policies, per-task surrogates, KL, and the MetaBatch.

`MetaData` holds what one meta-iteration sampled (fixed while the meta-optimiser works);
`meta_loss(theta)` re-adapts from it and hands the objective a MetaBatch, so the TRPO line
search judges every candidate theta with its own adapted policies.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from safemaml.config import AdaptConfig
from safemaml.engine.adapt import adapt
from safemaml.engine.metabatch import MetaBatch
from safemaml.engine.objective import Objective
from safemaml.engine.policy import Params, PolicySpec, gaussian_kl, gaussian_log_prob, log_prob, log_std_for, mean_action
from safemaml.engine.rollout import Sampler, Trajectories


@dataclass
class MetaData:
    """Sampled data of one meta-iteration, with their (constant) advantages."""

    pre: Trajectories
    post: Trajectories
    pre_adv: Tensor  # [K, n, H]
    post_adv: Tensor  # [K, m, H]
    sampling_params: Params  # theta'_T(theta_0) that sampled `post`, per task (detached)
    resampled: list[tuple[Trajectories, Tensor]] = field(default_factory=list)  # adapt.resample: steps 2, 3, ...
    _sampling_means: tuple[Tensor, Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    def sampling_means(self, spec: PolicySpec) -> tuple[Tensor, Tensor]:
        """The sampling policies' means and log stds on the post-update observations [K, m*H, A]:
        constant during the meta-step, so computed once and reused by every evaluation of the KL."""
        if self._sampling_means is None:
            K, m, H = self.post.rewards.shape
            with torch.no_grad():
                mean = mean_action(spec, self.sampling_params, self.post.obs.view(K, m * H, -1))
                self._sampling_means = mean, log_std_for(spec, self.sampling_params, mean)
        return self._sampling_means


def adapted(spec: PolicySpec, cfg: AdaptConfig, params: Params, pre: Trajectories, pre_adv: Tensor,
            resampled: Sequence[tuple[Trajectories, Tensor]] = ()) -> Params:
    """theta'_T: cfg.num_steps inner steps on the pre-update data; with cfg.resample, one step on
    the pre-update data and one on each batch of `resampled` (sampled by the step before it)."""
    if not cfg.resample:
        return adapt(spec, cfg, params, pre.obs, pre.actions, pre_adv, pre.mask)
    one = dataclasses.replace(cfg, num_steps=1)
    for traj, adv in [(pre, pre_adv), *resampled]:
        params = adapt(spec, one, params, traj.obs, traj.actions, adv, traj.mask)
    return params


@dataclass
class InnerLoop:
    """What `inner_loop` sampled and adapted, and the seconds spent adapting (sampling aside)."""

    pre: Trajectories
    pre_adv: Tensor
    resampled: list[tuple[Trajectories, Tensor]]
    fast: Params  # theta'_T, detached
    adapt_seconds: float


def inner_loop(spec: PolicySpec, cfg: AdaptConfig, params: Params, sampler: Sampler, tasks: np.ndarray,
               seed_of: Callable[[int], int], advantages_of: Callable[[Trajectories], Tensor]) -> InnerLoop:
    """Sample the pre-update data with theta and adapt to it; with cfg.resample (and num_steps > 1)
    sample again with the parameters of every intermediate step, as the paper's code does.

    Sampling seeds: seed_of(0) for the pre-update data, seed_of(s + 1) for the data of inner
    step s + 1 (seed_of(1) is left to the post-update phase).
    """
    pre = sampler.sample(params, tasks, seed=seed_of(0))
    pre_adv = advantages_of(pre)
    resampled: list[tuple[Trajectories, Tensor]] = []
    adapting = 0.0
    with torch.no_grad():
        for s in range(1, cfg.num_steps if cfg.resample else 1):
            start = time.perf_counter()
            theta_s = adapted(spec, cfg, params, pre, pre_adv, resampled)
            adapting += time.perf_counter() - start
            traj = sampler.sample(theta_s, tasks, seed=seed_of(s + 1))
            resampled.append((traj, advantages_of(traj)))
        start = time.perf_counter()
        fast = {k: v.detach() for k, v in adapted(spec, cfg, params, pre, pre_adv, resampled).items()}
    return InnerLoop(pre, pre_adv, resampled, fast, adapting + time.perf_counter() - start)


def meta_loss(spec: PolicySpec, cfg: AdaptConfig, objective: Objective, params: Params,
              data: MetaData) -> tuple[Tensor, Tensor, dict[str, float]]:
    """(objective loss, mean KL from the sampling policies, objective metrics) at theta = params."""
    pre, post = data.pre, data.post
    K, m, H = post.rewards.shape
    new = adapted(spec, cfg, params, pre, data.pre_adv, data.resampled)
    post_obs, post_act = post.obs.view(K, m * H, -1), post.actions.view(K, m * H, -1)
    mean = mean_action(spec, new, post_obs)  # one forward pass serves the likelihoods and the KL
    log_std = log_std_for(spec, new, mean)
    logp_post = gaussian_log_prob(mean, log_std, post_act).view(K, m, H)
    steps = post.mask.sum((1, 2)).clamp_min(1.0)
    ratio = torch.exp(logp_post - post.log_probs)
    surrogates = -(ratio * data.post_adv * post.mask).sum((1, 2)) / steps
    kl = (gaussian_kl(*data.sampling_means(spec), mean, log_std).view(K, m, H) * post.mask).sum((1, 2)) / steps
    n = pre.rewards.shape[1]
    logp_pre = log_prob(spec, params, pre.obs.view(K, n * H, -1), pre.actions.view(K, n * H, -1)).view(K, n, H)
    batch = MetaBatch(
        pre_returns=pre.returns, post_returns=post.returns, surrogates=surrogates,
        pre_loglik=(logp_pre * pre.mask).sum(-1), pre_loglik_old=(pre.log_probs * pre.mask).sum(-1),
        post_loglik=(logp_post * post.mask).sum(-1),
        post_loglik_old=(post.log_probs * post.mask).sum(-1), tasks=pre.tasks)
    loss, metrics = objective(batch)
    return loss, kl.mean(), metrics
