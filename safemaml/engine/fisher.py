"""Fisher-vector products of the mean KL of the adapted policies, by their structure.

For one inner step theta'_T = theta - alpha grad L_in,T(theta), the Hessian of the mean KL
at the sampling point theta_0 is exactly (1/K) sum_T J_T F_T J_T with J_T = I - alpha H_T
(H_T the Hessian of task T's inner loss, so J_T is symmetric) and F_T the Hessian of KL_T
in theta'_T (the Fisher; the other chain-rule term vanishes because the KL's gradient is zero
at theta'_0). Each product therefore needs two block-diagonal Hessian-vector products on the
pre-update data and one on the post-update data, instead of a third-order differentiation
through the whole adaptation. Tested equal to the autograd double-backward product.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor

from safemaml.config import AdaptConfig
from safemaml.engine.adapt import inner_loss
from safemaml.engine.policy import Params, PolicySpec, kl_divergence

FVP = Callable[[Tensor], Tensor]


def _per_task_copy(params: Params, K: int) -> Params:
    return {k: v.detach().unsqueeze(0).expand(K, *v.shape).clone().requires_grad_(True) for k, v in params.items()}


def _block_hvp(loss: Tensor, leaves: Params) -> Callable[[Params], Params]:
    """v -> (d^2 loss / d leaves^2) v, where the loss is a sum of per-task terms (block diagonal)."""
    grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True)

    def hvp(v: Params) -> Params:
        dot = cast(Tensor, sum((g * v[k]).sum() for g, k in zip(grads, leaves)))
        out = torch.autograd.grad(dot, list(leaves.values()), retain_graph=True)
        return dict(zip(leaves, out))

    return hvp


def _first(traj, count: int):
    """The first `count` trajectories of every task (they are i.i.d., so this is a random subsample)."""
    return dataclasses.replace(traj, **{f: getattr(traj, f)[:, :count] for f in
                                        ("obs", "actions", "rewards", "mask", "log_probs")})


def curvature_data(data, subsample: float):
    """The pre-update trajectories, their advantages and the post-update trajectories that TRPO's curvature
    is computed from: the first `subsample` fraction of each task's trajectories (at least 2), all at 1.0."""
    n = max(2, math.ceil(subsample * data.pre.rewards.shape[1]))
    m = max(2, math.ceil(subsample * data.post.rewards.shape[1]))
    return _first(data.pre, n), data.pre_adv[:, :n], _first(data.post, m)


def maml_fvp(spec: PolicySpec, cfg: AdaptConfig, theta0: Params, data, subsample: float = 1.0) -> FVP:
    """The Fisher-vector product of TRPO's KL through one inner step, at theta0 (flat vectors).

    `subsample` < 1 estimates the curvature from that fraction of each task's trajectories (the
    common TRPO economy: it shapes only the search direction; the line search still enforces
    the exact KL). 1.0 is exact.
    """
    pre, pre_adv, post = curvature_data(data, subsample)
    K, m, H = post.rewards.shape
    old = data.sampling_params

    inner_hvp = None
    if not cfg.first_order:
        leaves = _per_task_copy(theta0, K)
        # the sum over tasks of each task's inner loss, batched over tasks (per-task leaves)
        inner = inner_loss(spec, leaves, pre.obs, pre.actions, pre_adv, pre.mask).sum()
        inner_hvp = _block_hvp(inner, leaves)

    post_leaves = {k: v.detach().clone().requires_grad_(True) for k, v in old.items()}
    obs = post.obs.view(K, m * H, -1)
    steps = post.mask.sum((1, 2)).clamp_min(1.0)
    kl = (kl_divergence(spec, old, post_leaves, obs).view(K, m, H) * post.mask).sum((1, 2)) / steps
    kl_hvp = _block_hvp(kl.mean(), post_leaves)

    return jfj_product(theta0, K, cfg.fast_lr, inner_hvp, kl_hvp)


def jfj_product(theta0: Params, K: int, fast_lr: float, inner_hvp: Callable[[Params], Params] | None,
                fisher: Callable[[Params], Params]) -> FVP:
    """v -> sum_T J_T F_T J_T v on flat vectors, with J_T v = v - alpha H_T v (J_T = I when
    `inner_hvp` is None) and F_T v given per task by `fisher`."""
    names, sizes = list(theta0), [v.numel() for v in theta0.values()]

    def jacobian(v: Params) -> Params:
        if inner_hvp is None:
            return v
        hv = inner_hvp(v)
        return {k: v[k] - fast_lr * hv[k] for k in names}

    def fvp(vector: Tensor) -> Tensor:
        parts = dict(zip(names, torch.split(vector, sizes)))
        v = {k: parts[k].to(theta0[k].dtype).view_as(theta0[k]).unsqueeze(0).expand(K, *theta0[k].shape)
             for k in names}
        z = jacobian(fisher(jacobian(v)))
        return torch.cat([z[k].sum(0).reshape(-1) for k in names])

    return fvp

def supports(cfg: AdaptConfig) -> bool:
    """The structured product is exact for one inner step, and for first-order adaptation (J = I)."""
    return cfg.num_steps == 1 or cfg.first_order
