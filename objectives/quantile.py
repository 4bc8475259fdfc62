"""quantile: MAML plus a penalty on each task's VaR_{1-beta}(Gamma_T), the quantity Eq. 6 bounds.

p_T >= 1 - beta  <=>  VaR_{1-beta}(Gamma_T) <= 0. Loss = mean_T L_T + eta sum_T omega_T
(q_T + margin)^+ / s, q_T the (1-beta)-quantile of the pairs, omega_T soft weights on the
worst delta-fraction of tasks. The quantile's gradient (Hong 2009) is
grad q = -E[(1(X <= q) - (1 - beta)) grad log p] / f_X(q), with the indicator smoothed by a
sigmoid and f_X(q) a Gaussian kernel density estimate, both of a per-task bandwidth
h_T = c sigma_T (nm)^(-1/5) (Silverman's rule: sigma_T the task's robust spread of the pairs),
which shrinks with the sample, so the estimator is consistent (its bias vanishes as n, m grow);
it is not unbiased at finite n, m (docs/objectives.md gives the measured bias).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from objectives.base import register
from objectives.penalty import PenaltyObjective, pairs, return_scale, score_surrogate
from safemaml.engine.metabatch import MetaBatch


def upper_quantile(x: Tensor, level: float) -> Tensor:
    """The level-quantile of x [..., N] (numpy's default linear interpolation)."""
    return torch.quantile(x, level, dim=-1)


def silverman_bandwidth(x: Tensor, scale: float = 0.9, floor: Tensor | float = 1e-6) -> Tensor:
    """Per row of x [K, N]: scale * min(std, IQR / 1.349) * N^(-1/5), at least `floor`.

    The rule of thumb for a Gaussian kernel density estimate: on each task's own spread, and
    shrinking with the sample so that the smoothing bias vanishes as N grows.
    """
    quartiles = torch.quantile(x, torch.tensor([0.25, 0.75], dtype=x.dtype, device=x.device), dim=-1)
    spread = torch.minimum(x.std(-1), (quartiles[1] - quartiles[0]) / 1.349)
    return (scale * spread * x.shape[-1] ** -0.2).clamp_min(floor)


@register
@dataclasses.dataclass
class Quantile(PenaltyObjective):
    name = "quantile"
    description = "MAML + eta sum_T omega_T (VaR_{1-beta}(Gamma_T) + margin)^+ / s, smoothed quantile gradients"
    eta: float = 1.0
    margin: float = 0.0  # in units of s
    bandwidth: float = 0.9  # c in h_T = c sigma_T (nm)^(-1/5), Silverman's constant
    temperature: float = 0.1  # softness of the worst-delta task weights, in units of s

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_nonnegative("eta", "margin")
        self.check_positive("bandwidth", "temperature")

    def task_weights(self, q: Tensor, s: Tensor) -> Tensor:
        """Soft indicator of the worst delta-fraction of tasks, normalised like 1/(delta K)."""
        threshold = upper_quantile(q, 1.0 - self.delta)
        return torch.sigmoid((q - threshold) / (self.temperature * s)) / (self.delta * q.shape[0])

    def __call__(self, batch: MetaBatch) -> tuple[Tensor, dict[str, float]]:
        gamma = pairs(batch)
        K, n, m = gamma.shape
        s = return_scale(gamma, self.return_scale)
        flat = gamma.reshape(K, n * m)
        q = upper_quantile(flat, 1.0 - self.beta)  # VaR_{1-beta}(Gamma_T)
        h = silverman_bandwidth(flat, self.bandwidth, floor=1e-3 * s)[:, None, None]  # h_T
        z = (q[:, None, None] - gamma) / h
        density = torch.exp(-0.5 * z.pow(2)).mean((1, 2)) / (h[:, 0, 0] * math.sqrt(2 * math.pi))  # f(q_T)
        below = torch.sigmoid(z)  # smoothed 1(gamma <= q)
        dq = -(below - (1.0 - self.beta)) / (density[:, None, None] * n * m)
        active = ((q + self.margin * s) > 0).to(gamma.dtype)
        omega = self.task_weights(q, s)
        weights = self.eta / s * (omega * active)[:, None, None] * dq
        loss = batch.surrogates.mean() + score_surrogate(batch, *self.split(weights))
        penalty = float((omega * (q / s + self.margin).clamp_min(0)).sum())
        return loss, {"surrogate": float(batch.surrogates.mean().detach()), "quantile_penalty": penalty,
                      "scale": float(s)}

    @staticmethod
    def search_space(trial) -> dict:
        return {"beta": trial.suggest_float("beta", 0.05, 0.3), "delta": trial.suggest_float("delta", 0.05, 0.3),
                "eta": trial.suggest_float("eta", 0.01, 10.0, log=True),
                "bandwidth": trial.suggest_float("bandwidth", 0.2, 3.0, log=True)}
