"""One meta-step's mathematics: adapted policies, per-task surrogates, KL, and the MetaBatch.

`MetaData` holds what one meta-iteration sampled (fixed while the meta-optimiser works);
`meta_loss(theta)` re-adapts from it and hands the objective a MetaBatch, so the TRPO line
search judges every candidate theta with its own adapted policies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from safemaml.adapt import AdaptConfig, adapt
from safemaml.metabatch import MetaBatch
from safemaml.policy import Params, PolicySpec, kl_divergence, log_prob
from safemaml.rollout import Trajectories


@dataclass
class MetaData:
    """Sampled data of one meta-iteration, with their (constant) advantages."""

    pre: Trajectories
    post: Trajectories
    pre_adv: Tensor  # [K, n, H]
    post_adv: Tensor  # [K, m, H]
    sampling_params: Params  # theta'_T(theta_0) that sampled `post`, per task (detached)


def adapted(spec: PolicySpec, cfg: AdaptConfig, params: Params, pre: Trajectories, pre_adv: Tensor) -> Params:
    return adapt(spec, cfg, params, pre.obs, pre.actions, pre_adv, pre.mask)


def meta_loss(spec: PolicySpec, cfg: AdaptConfig, objective, params: Params,
              data: MetaData) -> tuple[Tensor, Tensor, dict[str, float]]:
    """(objective loss, mean KL from the sampling policies, objective metrics) at theta = params."""
    pre, post = data.pre, data.post
    K, m, H = post.rewards.shape
    new = adapted(spec, cfg, params, pre, data.pre_adv)
    post_obs, post_act = post.obs.view(K, m * H, -1), post.actions.view(K, m * H, -1)
    logp_post = log_prob(spec, new, post_obs, post_act).view(K, m, H)
    steps = post.mask.sum((1, 2)).clamp_min(1.0)
    ratio = torch.exp(logp_post - post.log_probs)
    surrogates = -(ratio * data.post_adv * post.mask).sum((1, 2)) / steps
    kl = (kl_divergence(spec, data.sampling_params, new, post_obs).view(K, m, H) * post.mask).sum((1, 2)) / steps
    n = pre.rewards.shape[1]
    logp_pre = log_prob(spec, params, pre.obs.view(K, n * H, -1), pre.actions.view(K, n * H, -1)).view(K, n, H)
    batch = MetaBatch(
        pre_returns=pre.returns, post_returns=post.returns, surrogates=surrogates,
        pre_loglik=(logp_pre * pre.mask).sum(-1), pre_loglik_old=(pre.log_probs * pre.mask).sum(-1),
        post_loglik=(logp_post * post.mask).sum(-1),
        post_loglik_old=(post.log_probs * post.mask).sum(-1), tasks=pre.tasks)
    loss, metrics = objective(batch)
    return loss, kl.mean(), metrics
