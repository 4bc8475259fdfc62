"""MetaBatch: what the meta-step hands to an objective — per task, per trajectory, never pre-averaged."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class MetaBatch:
    """One meta-batch of K tasks, n pre-update and m post-update trajectories per task.

    Tensors marked (grad) are differentiable in theta, through the inner step for post-update
    quantities; the returns are constants (the sampled episodes).
    """

    pre_returns: Tensor  # [K, n] undiscounted returns of D_T, sampled with pi_theta
    post_returns: Tensor  # [K, m] undiscounted returns of D'_T, sampled with pi_theta'_T
    surrogates: Tensor  # [K] (grad) the MAML outer surrogate L_T of each task (importance-weighted)
    pre_loglik: Tensor  # [K, n] (grad) log p_theta(tau) of each pre-update trajectory
    pre_loglik_old: Tensor  # [K, n] the same under the parameters that sampled them (constant)
    post_loglik: Tensor  # [K, m] (grad) log p_theta'_T(theta)(tau) of each post-update trajectory
    post_loglik_old: Tensor  # [K, m] the same under the parameters that sampled them (constant)
    tasks: Tensor  # [K, P] task parameters
