"""lagrangian: min_theta max_{lambda >= 0} mean_T L_T + lambda (V(theta) - delta).

V is a smoothed violation rate: v_T = (1/nm) sum_ij sigmoid(gamma_ij / (tau s)) smooths
Pr(Gamma_T > 0), and V = (1/K) sum_T sigmoid((v_T - beta) / tau_h) smooths the fraction of
tasks with Pr(Gamma_T > 0) > beta. Its gradient is per-pair weights from the chain rule on the
post-update log-likelihoods. The multiplier is a component (objectives/multipliers.py) that moves
after each meta-step on the unsmoothed violation rate V-hat: projected dual ascent, or the PID
Lagrangian of Stooke, Achiam & Abbeel (2020) with its integral started at lambda_0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from objectives.base import register
from objectives.multipliers import DualAscent, Multiplier, PIDLagrangian
from objectives.penalty import PenaltyObjective, pairs, return_scale, score_surrogate
from safemaml.engine.metabatch import MetaBatch
from safemaml.engine.objective import check_state_keys
from safemaml.errors import SafeMamlError

# The objective state of checkpoints written before the multiplier was a component (up to commit 34edd5e):
# `multiplier` the running lambda, `integral` the PID's clipped sum of V-hat - delta (without K_I), `previous`
# the PID's last V-hat (dual ascent left both at 0).
OLD_STATE_KEYS = frozenset({"multiplier", "integral", "previous"})


@register
@dataclasses.dataclass
class Lagrangian(PenaltyObjective):
    name = "lagrangian"
    description = "MAML + lambda (smoothed violation rate - delta); lambda by dual ascent or PID"
    multiplier: float = 0.0  # lambda_0, the initial multiplier (the running one is lam.value)
    update: str = "dual"  # "dual" (projected dual ascent) or "pid"
    lambda_lr: float = 1.0  # eta_lambda of dual ascent
    lambda_max: float = 100.0
    kp: float = 1.0  # PID gains
    ki: float = 1.0
    kd: float = 0.0
    tau: float = 0.1  # pair smoothing, in units of s
    tau_h: float = 0.05  # task smoothing of v_T - beta
    lam: Multiplier = dataclasses.field(init=False, repr=False, compare=False)  # lambda: its rule and state

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.update not in ("dual", "pid"):
            raise SafeMamlError(f"lagrangian: update must be dual or pid, got {self.update!r}")
        self.check_nonnegative("multiplier", "lambda_lr", "kp", "ki", "kd")
        self.check_positive("lambda_max", "tau", "tau_h")
        if self.multiplier > self.lambda_max:
            raise SafeMamlError(f"lagrangian: multiplier (lambda_0) must be <= lambda_max = {self.lambda_max}, "
                                f"got {self.multiplier}")
        self.lam = (DualAscent(self.multiplier, self.lambda_max, lr=self.lambda_lr) if self.update == "dual" else
                    PIDLagrangian(self.multiplier, self.lambda_max, kp=self.kp, ki=self.ki, kd=self.kd))

    def __call__(self, batch: MetaBatch) -> tuple[Tensor, dict[str, float]]:
        gamma = pairs(batch)
        K, n, m = gamma.shape
        s = return_scale(gamma, self.return_scale)
        smooth = torch.sigmoid(gamma / (self.tau * s))  # [K, n, m]
        v = smooth.mean((1, 2))
        h = torch.sigmoid((v - self.beta) / self.tau_h)
        dV_dv = h * (1 - h) / (self.tau_h * K)  # chain rule through the task smoothing
        weights = self.lam.value * dV_dv[:, None, None] * smooth / (n * m)
        loss = batch.surrogates.mean() + score_surrogate(batch, *self.split(weights))
        return loss, {"surrogate": float(batch.surrogates.mean().detach()), "smoothed_violation": float(h.mean()),
                      "multiplier": self.lam.value, "scale": float(s)}

    def after_meta_step(self, metrics: Mapping[str, float]) -> None:
        """Move lambda on the unsmoothed violation rate V-hat of the step just taken."""
        self.lam.update(float(metrics["violation_rate"]), self.delta)

    def state_dict(self) -> dict[str, float]:
        return {f"lambda.{k}": v for k, v in self.lam.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """The state of `state_dict`, or that of a checkpoint written before the multiplier was a component."""
        if set(state) == OLD_STATE_KEYS:
            state = self.from_old_state(state)
        check_state_keys(f"objective {self.name}", state, self.state_dict())
        self.lam.load_state_dict({k.removeprefix("lambda."): v for k, v in state.items()})

    def from_old_state(self, old: Mapping[str, float]) -> dict[str, float]:
        """Old keys -> this state. The old `multiplier` is the lambda in force. Under PID, the old integral
        summed the errors without K_I, and lambda_0 did not enter it: I = K_I * integral continues the run
        exactly as the old rule would have (the recursion is the same; only its start, lambda_0, changed)."""
        if self.update == "dual":
            return {"lambda.value": float(old["multiplier"])}
        return {"lambda.value": float(old["multiplier"]), "lambda.integral": self.ki * float(old["integral"]),
                "lambda.previous": float(old["previous"])}

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """The update rule first, then only the parameters that act under it (Optuna's define-by-run): beta,
        delta and tau always; lambda_lr under dual ascent; the gains K_P and K_I under PID (K_D, lambda_0 and
        lambda_max are left at their values unless searched with --search)."""
        update = trial.suggest_categorical("update", ["dual", "pid"])
        params = {"update": update, "beta": trial.suggest_float("beta", 0.05, 0.3),
                  "delta": trial.suggest_float("delta", 0.05, 0.3),
                  "tau": trial.suggest_float("tau", 0.02, 1.0, log=True)}
        if update == "dual":
            params["lambda_lr"] = trial.suggest_float("lambda_lr", 0.01, 10.0, log=True)
        else:
            params["kp"] = trial.suggest_float("kp", 0.01, 10.0, log=True)
            params["ki"] = trial.suggest_float("ki", 0.01, 10.0, log=True)
        return params
