"""Shared machinery of the penalties on Gamma: pairs, the return scale, and score-function surrogates.

A penalty is a function of the distribution of Gamma_T. By the score-function rule its
gradient is a weighted sum of the gradients of trajectory log-likelihoods, with constant
weights computed from the sampled returns. `score_surrogate` turns such weights into a
differentiable term whose value is 0 at the sampling parameters and whose gradient is the
penalty's gradient estimate; in a TRPO line search its value is the first-order estimate of
the penalty's change. Weights are centred per task with a leave-one-out baseline, which
lowers the variance. The weights depend on all the task's trajectories, so the estimates are
consistent (their bias vanishes as n, m grow), not unbiased; docs/objectives.md gives the bias.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from objectives.base import Objective
from safemaml.engine.metabatch import MetaBatch
from safemaml.errors import SafeMamlError


def pairs(batch: MetaBatch) -> Tensor:
    """gamma_ij = g^b_i - g^a_j for every task: [K, n, m] (constants)."""
    return (batch.pre_returns[:, :, None] - batch.post_returns[:, None, :]).detach()


def return_scale(gamma: Tensor, fixed: float = 0.0, floor: float = 1e-3) -> Tensor:
    """s: the median absolute deviation of the pairs over the meta-batch (or a fixed value)."""
    if fixed > 0:
        return torch.tensor(fixed, dtype=gamma.dtype, device=gamma.device)
    flat = gamma.reshape(-1)
    mad = (flat - flat.median()).abs().median()
    return mad.clamp_min(floor)


def loo_center(weights: Tensor) -> Tensor:
    """w_j - mean_{k != j} w_k along the last axis: a baseline that would leave the estimate unbiased if
    w_j did not depend on trajectory j (it lowers the variance; see the module docstring)."""
    m = weights.shape[-1]
    if m < 2:
        return weights
    return (weights - weights.mean(-1, keepdim=True)) * m / (m - 1)


def score_surrogate(batch: MetaBatch, post_weights: Tensor, pre_weights: Tensor | None = None) -> Tensor:
    """sum_Tj w_Tj (log p'(tau_j) - log p'_old(tau_j)) [+ the same on pre-update trajectories]."""
    term = (loo_center(post_weights.detach()) * (batch.post_loglik - batch.post_loglik_old)).sum()
    if pre_weights is not None:
        term = term + (loo_center(pre_weights.detach()) * (batch.pre_loglik - batch.pre_loglik_old)).sum()
    return term


@dataclasses.dataclass
class PenaltyObjective(Objective):
    """Base of the objectives that add a penalty on Gamma to MAML's loss."""

    pre_update_grad: bool = False  # also push the penalty through pi_theta's own trajectories
    return_scale: float = 0.0  # s; 0 = automatic (MAD of the pairs, floored)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.return_scale < 0:
            raise SafeMamlError(f"return_scale must be >= 0, got {self.return_scale}")

    def check_nonnegative(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value < 0:
                raise SafeMamlError(f"{self.name}: {name} must be >= 0, got {value}")

    def check_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not value > 0:
                raise SafeMamlError(f"{self.name}: {name} must be > 0, got {value}")

    def split(self, pair_weights: Tensor) -> tuple[Tensor, Tensor | None]:
        """Per-pair weights [K, n, m] -> post-trajectory weights [K, m] (and pre [K, n] if enabled)."""
        post = pair_weights.sum(1)
        pre = pair_weights.sum(2) if self.pre_update_grad else None
        return post, pre
