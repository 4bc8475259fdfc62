"""MAML's inner loop: REINFORCE steps on each task's pre-update trajectories, for all tasks at once.

`adapt` maps shared parameters theta to per-task parameters theta'_T [K, ...], differentiable
in theta (second order by default). It vmaps one task's adaptation over the K tasks of a
meta-batch with torch.func; `adapt_loop` is the per-task reference it is tested against.
"""

from __future__ import annotations

import torch
from torch import Tensor

from safemaml.config import AdaptConfig
from safemaml.engine.policy import Params, PolicySpec, log_prob


def inner_loss(spec: PolicySpec, params: Params, obs: Tensor, actions: Tensor, adv: Tensor,
               mask: Tensor) -> Tensor:
    """The REINFORCE loss -mean_t[log pi(a_t|s_t) A_t] over each task's steps taken.

    Data [..., n, H, ·] -> one loss per leading index: a scalar for one task's [n, H] data, [K]
    for a meta-batch [K, n, H] with per-task parameters (leading dim K). The one definition of
    the inner loss: adaptation descends it and the Fisher product differentiates it.
    """
    logp = log_prob(spec, params, obs, actions)
    return -(logp * adv * mask).sum((-2, -1)) / mask.sum((-2, -1)).clamp_min(1.0)


def _adapt_one(spec: PolicySpec, cfg: AdaptConfig, params: Params, obs: Tensor, actions: Tensor,
               adv: Tensor, mask: Tensor) -> Params:
    grad_fn = torch.func.grad(lambda p: inner_loss(spec, p, obs, actions, adv, mask))
    for _ in range(cfg.num_steps):
        grads = grad_fn(params)
        if cfg.first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        params = {k: params[k] - cfg.fast_lr * grads[k] for k in params}
    return params


def per_task(params: Params) -> bool:
    """Whether `params` carry a leading task dimension (adapted parameters do)."""
    return params["log_std"].dim() == 2


def adapt(spec: PolicySpec, cfg: AdaptConfig, params: Params, obs: Tensor, actions: Tensor,
          adv: Tensor, mask: Tensor) -> Params:
    """theta'_T for every task: data [K, n, H, ...] -> params with a leading K dimension.

    `params` may be shared or already per task (the later steps of a resampling inner loop).

    On CPU the per-task loop is the default: the work inside each task is already batched and
    measured faster than vmap there (docs/performance.md); on CUDA vmap is the win.
    """
    use_vmap = cfg.vectorize == "vmap" or (cfg.vectorize == "auto" and obs.device.type == "cuda")
    fn = adapt_vmap if use_vmap else adapt_loop
    return fn(spec, cfg, params, obs, actions, adv, mask)


def adapt_vmap(spec: PolicySpec, cfg: AdaptConfig, params: Params, obs: Tensor, actions: Tensor,
               adv: Tensor, mask: Tensor) -> Params:
    """`adapt` vmapped over tasks with torch.func."""
    one = lambda p, o, a, d, m: _adapt_one(spec, cfg, p, o, a, d, m)  # noqa: E731
    return torch.func.vmap(one, in_dims=(0 if per_task(params) else None, 0, 0, 0, 0))(params, obs, actions, adv, mask)


def adapt_loop(spec: PolicySpec, cfg: AdaptConfig, params: Params, obs: Tensor, actions: Tensor,
               adv: Tensor, mask: Tensor) -> Params:
    """The per-task Python loop with torch.autograd: the reference `adapt_vmap` is tested against.

    Differentiable in `params` when they require grad and grad mode is on; otherwise it
    returns detached parameters (sampling, line-search evaluations).
    """
    outer = torch.is_grad_enabled() and any(v.requires_grad for v in params.values())
    if not outer:
        params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    tasks, start = [], per_task(params)
    with torch.enable_grad():
        for k in range(obs.shape[0]):
            p = {name: v[k] for name, v in params.items()} if start else params
            for _ in range(cfg.num_steps):
                loss = inner_loss(spec, p, obs[k], actions[k], adv[k], mask[k])
                grads = torch.autograd.grad(loss, list(p.values()), create_graph=outer and not cfg.first_order)
                if not outer or cfg.first_order:
                    grads = tuple(g.detach() for g in grads)
                p = {name: v - cfg.fast_lr * g for (name, v), g in zip(p.items(), grads)}
            tasks.append(p)
    stacked = {name: torch.stack([p[name] for p in tasks]) for name in params}
    return stacked if outer else {k: v.detach() for k, v in stacked.items()}
