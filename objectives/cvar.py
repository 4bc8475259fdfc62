"""cvar: MAML plus a penalty on the nested CVaR of Gamma (a conservative form of Eq. 6).

Y_T = CVaR_beta of the pairs gamma_ij of task T; C = CVaR_delta of Y over the K tasks.
C <= 0 implies Eq. 6 (Nemirovski & Shapiro). Loss = mean_T L_T + eta (C + margin)^+ / s.
Gradient (Tamar, Glassner & Mannor 2015): task weight omega_T (the dual weights of the
Rockafellar-Uryasev LP over tasks) times pair weight (gamma_ij - nu_T)^+ / (beta n m),
nu_T the task's VaR, on the post-update log-likelihoods.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from objectives.base import register
from objectives.penalty import PenaltyObjective, pairs, return_scale, score_surrogate
from safemaml.engine.metabatch import MetaBatch
from safemaml.errors import SafeMamlError


def cvar_weights(x: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """CVaR_alpha of the upper tail of x [..., N] and its LP dual weights (sum to 1, each <= 1/(alpha N)).

    The weights put 1/(alpha N) on the floor(alpha N) largest values and the fractional rest on
    the next one, so that CVaR = sum w x exactly (Rockafellar-Uryasev).
    """
    N = x.shape[-1]
    k = alpha * N
    order = torch.argsort(x, dim=-1, descending=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(N, device=x.device).expand_as(order))
    whole = math.floor(k)
    w = ((ranks < whole).to(x.dtype) + (ranks == whole).to(x.dtype) * (k - whole)) / k  # in x's precision
    return (w * x).sum(-1), w


def value_at_risk(x: Tensor, alpha: float) -> Tensor:
    """The upper alpha-tail threshold nu (the ceil(alpha N)-th largest value) of x [..., N]."""
    N = x.shape[-1]
    idx = max(math.ceil(alpha * N) - 1, 0)
    return torch.sort(x, dim=-1, descending=True).values[..., idx]


def neutral_like(weights: Tensor, gamma: Tensor) -> Tensor:
    """Pair weights of the risk-neutral penalty mean_T mean_ij gamma_ij (every task and pair alike), scaled to
    the same total magnitude sum |w| as `weights`: the ablation that keeps how hard the penalty pushes and
    changes only where it aims (at the mean of Gamma instead of its tail)."""
    total = gamma.abs().sum()
    return gamma * (weights.abs().sum() / total) if total > 0 else torch.zeros_like(gamma)


@register
@dataclasses.dataclass
class CVaR(PenaltyObjective):
    name = "cvar"
    description = "MAML + eta (CVaR_delta over tasks of CVaR_beta(Gamma_T) + margin)^+ / s"
    eta: float = 1.0
    margin: float = 0.0
    aim: str = "tail"  # "neutral": the control of docs/results.md, same penalty magnitude aimed at mean Gamma

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_nonnegative("eta", "margin")
        if self.aim not in ("tail", "neutral"):
            raise SafeMamlError(f"cvar: aim must be tail or neutral, got {self.aim!r}")

    def __call__(self, batch: MetaBatch) -> tuple[Tensor, dict[str, float]]:
        gamma = pairs(batch)
        K, n, m = gamma.shape
        s = return_scale(gamma, self.return_scale)
        flat = gamma.reshape(K, n * m)
        y, _ = cvar_weights(flat, self.beta)  # Y_T
        c, task_w = cvar_weights(y, self.delta)  # C and omega_T
        active = float(c + self.margin * s > 0)
        nu = value_at_risk(flat, self.beta)
        pair_w = (gamma - nu[:, None, None]).clamp_min(0) / (self.beta * n * m)
        weights = active * self.eta / s * task_w[:, None, None] * pair_w
        if self.aim == "neutral":
            weights = neutral_like(weights, gamma)
        penalty = score_surrogate(batch, *self.split(weights))
        loss = batch.surrogates.mean() + penalty
        return loss, {"surrogate": float(batch.surrogates.mean().detach()), "cvar_C": float(c / s),
                      "penalty_active": active, "scale": float(s)}

    @staticmethod
    def search_space(trial) -> dict:
        return {"beta": trial.suggest_float("beta", 0.05, 0.3), "delta": trial.suggest_float("delta", 0.05, 0.3),
                "eta": trial.suggest_float("eta", 0.01, 10.0, log=True),
                "margin": trial.suggest_float("margin", 0.0, 0.5)}
