"""lagrangian: min_theta max_{lambda >= 0} mean_T L_T + lambda (V(theta) - delta).

V is a smoothed violation rate: v_T = (1/nm) sum_ij sigmoid(gamma_ij / (tau s)) smooths
Pr(Gamma_T > 0), and V = (1/K) sum_T sigmoid((v_T - beta) / tau_h) smooths the fraction of
tasks with Pr(Gamma_T > 0) > beta. Its gradient is per-pair weights from the chain rule on the
post-update log-likelihoods. The multiplier moves after each meta-step on the unsmoothed
violation rate V-hat: projected dual ascent, or the PID Lagrangian of Stooke, Achiam & Abbeel
(2020) with anti-windup and a derivative on rising violations only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import Tensor

from objectives.base import register, state
from objectives.penalty import PenaltyObjective, pairs, return_scale, score_surrogate
from safemaml.engine.metabatch import MetaBatch
from safemaml.errors import SafeMamlError


@register
@dataclasses.dataclass
class Lagrangian(PenaltyObjective):
    name = "lagrangian"
    description = "MAML + lambda (smoothed violation rate - delta); lambda by dual ascent or PID"
    multiplier: float = 0.0  # lambda_0, then the current lambda
    update: str = "dual"  # "dual" (projected dual ascent) or "pid"
    lambda_lr: float = 1.0  # eta_lambda of dual ascent
    lambda_max: float = 100.0
    kp: float = 1.0
    ki: float = 1.0
    kd: float = 0.0
    tau: float = 0.1  # pair smoothing, in units of s
    tau_h: float = 0.05  # task smoothing of v_T - beta
    integral: float = state()  # PID: the clipped integral of V-hat - delta
    previous: float = state()  # PID: last V-hat

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.update not in ("dual", "pid"):
            raise SafeMamlError(f"lagrangian: update must be dual or pid, got {self.update!r}")
        self.check_nonnegative("multiplier", "lambda_lr", "kp", "ki", "kd")
        self.check_positive("lambda_max", "tau", "tau_h")

    def __call__(self, batch: MetaBatch) -> tuple[Tensor, dict[str, float]]:
        gamma = pairs(batch)
        K, n, m = gamma.shape
        s = return_scale(gamma, self.return_scale)
        smooth = torch.sigmoid(gamma / (self.tau * s))  # [K, n, m]
        v = smooth.mean((1, 2))
        h = torch.sigmoid((v - self.beta) / self.tau_h)
        dV_dv = h * (1 - h) / (self.tau_h * K)  # chain rule through the task smoothing
        weights = self.multiplier * dV_dv[:, None, None] * smooth / (n * m)
        loss = batch.surrogates.mean() + score_surrogate(batch, *self.split(weights))
        return loss, {"surrogate": float(batch.surrogates.mean().detach()), "smoothed_violation": float(h.mean()),
                      "multiplier": self.multiplier, "scale": float(s)}

    def after_meta_step(self, metrics: Mapping[str, float]) -> None:
        """Move lambda on the unsmoothed violation rate V-hat of the step just taken."""
        violation = float(metrics["violation_rate"])
        error = violation - self.delta
        if self.update == "dual":
            self.multiplier = min(max(self.multiplier + self.lambda_lr * error, 0.0), self.lambda_max)
            return
        self.integral = max(0.0, self.integral + error)  # anti-windup: the integral never goes negative
        rise = max(0.0, violation - self.previous)
        self.previous = violation
        self.multiplier = min(max(self.kp * error + self.ki * self.integral + self.kd * rise, 0.0), self.lambda_max)

    def state_dict(self) -> dict[str, float]:
        return {"multiplier": self.multiplier, "integral": self.integral, "previous": self.previous}

    @staticmethod
    def search_space(trial) -> dict:
        return {"beta": trial.suggest_float("beta", 0.05, 0.3), "delta": trial.suggest_float("delta", 0.05, 0.3),
                "lambda_lr": trial.suggest_float("lambda_lr", 0.01, 10.0, log=True),
                "tau": trial.suggest_float("tau", 0.02, 1.0, log=True),
                "update": trial.suggest_categorical("update", ["dual", "pid"])}
