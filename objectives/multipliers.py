"""Lagrange multipliers as components: lambda >= 0 for a constraint c <= d, moved after each meta-step on the
measured value of c.

The lagrangian objective minimises f(theta) + lambda (V(theta) - delta) in theta (the meta-optimiser) and moves
lambda here, on the unsmoothed violation rate V-hat of the step just taken (c = V-hat, d = delta). Each rule keeps
its initial value lambda_0 (a parameter, from the run's config) apart from its state (what moves, checkpointed by
`state_dict`): the objective's `multiplier` parameter is lambda_0 and nothing else, and `value` is the lambda the
next meta-step uses.

- `DualAscent`: projected gradient ascent on the dual, lambda <- clip(lambda + eta (c - d), 0, lambda_max).
- `PIDLagrangian`: the PID Lagrangian of Stooke, Achiam & Abbeel (2020, "Responsive Safety in Reinforcement
  Learning by PID Lagrangian Methods", ICML, Algorithm 2), with its integral term started at lambda_0.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import ClassVar

from safemaml.engine.objective import check_state_keys
from safemaml.errors import SafeMamlError


def _clip(x: float, high: float) -> float:
    return min(max(x, 0.0), high)


def _nonnegative(owner: Multiplier, *names: str) -> None:
    for name in names:
        if not getattr(owner, name) >= 0:
            raise SafeMamlError(f"{type(owner).__name__}: {name} must be >= 0, got {getattr(owner, name)}")


@dataclasses.dataclass
class Multiplier(abc.ABC):
    """lambda in [0, maximum], started at `initial` and moved by `update` after each meta-step.

    `value` is the lambda in force; the names in STATE are what a checkpoint holds. `initial` and the gains are
    parameters: a restored multiplier takes them from the run's config, its state from the checkpoint."""

    initial: float = 0.0  # lambda_0
    maximum: float = 100.0  # lambda_max
    value: float = dataclasses.field(init=False)
    STATE: ClassVar[tuple[str, ...]] = ("value",)

    def __post_init__(self) -> None:
        if not self.maximum > 0:
            raise SafeMamlError(f"{type(self).__name__}: maximum must be > 0, got {self.maximum}")
        if not 0 <= self.initial <= self.maximum:
            raise SafeMamlError(f"{type(self).__name__}: initial must be in [0, maximum = {self.maximum}], "
                                f"got {self.initial}")
        self.value = self.initial

    @abc.abstractmethod
    def update(self, measured: float, bound: float) -> float:
        """Move lambda on the measured constraint value (c) against its bound (d); the new lambda."""

    def state_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in self.STATE}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        check_state_keys(type(self).__name__, state, self.state_dict())
        for name in self.STATE:
            setattr(self, name, float(state[name]))


@dataclasses.dataclass
class DualAscent(Multiplier):
    """Projected dual ascent: lambda_{t+1} = clip(lambda_t + lr (c_t - d), 0, lambda_max), lambda_0 = `initial`.

    The gradient of the Lagrangian in lambda is c - d, so lambda grows while the constraint is violated and
    shrinks (to 0, the projection) while it holds with room. It is an integral controller: lambda_t is lambda_0
    plus lr times the running sum of the errors, clipped at every step."""

    lr: float = 1.0  # eta_lambda

    def __post_init__(self) -> None:
        super().__post_init__()
        _nonnegative(self, "lr")

    def update(self, measured: float, bound: float) -> float:
        self.value = _clip(self.value + self.lr * (measured - bound), self.maximum)
        return self.value


@dataclasses.dataclass
class PIDLagrangian(Multiplier):
    """The PID Lagrangian (Stooke, Achiam & Abbeel 2020, Algorithm 2), its integral term started at lambda_0.

    With the error e_t = c_t - d, after each meta-step:

        I_{t+1}      = max(0, I_t + K_I e_t)                          (integral term, anti-windup at 0)
        rise_t       = max(0, c_t - c_{t-1})                          (derivative on rising violations only)
        lambda_{t+1} = clip(K_P e_t + I_{t+1} + K_D rise_t, 0, lambda_max)

    with c_{-1} = 0 and **I_0 = lambda_0** (the paper starts I at 0 and has no lambda_0). The integral is kept in
    units of lambda (K_I folded in), so it can start at lambda_0 for any K_I, K_I = 0 included (lambda_0 is then a
    constant bias). The rule chosen, and why: lambda_0 is the prior guess of the multiplier the constraint needs;
    started in the integral, lambda continues from it (lambda_1 = lambda_0 + (K_P + K_I) e_0 + K_D rise_0 while the
    integral stays positive and lambda within [0, lambda_max]) and gives it up only as the constraint holds with
    room (negative errors drain the integral), as dual ascent would. Started as the first lambda only (lambda_0 =
    lambda in the first step, I_0 = 0), lambda_0 acted in the first meta-step alone and was forgotten at the second,
    whatever its value. With K_P = K_D = 0 the rule is dual ascent with lr = K_I, except that dual ascent also stops
    lambda at lambda_max while the integral here may grow past it (the paper's anti-windup is at 0 only).
    """

    kp: float = 1.0  # K_P
    ki: float = 1.0  # K_I
    kd: float = 0.0  # K_D
    integral: float = dataclasses.field(init=False)  # I_t, in units of lambda
    previous: float = dataclasses.field(init=False)  # c_{t-1}
    STATE: ClassVar[tuple[str, ...]] = ("value", "integral", "previous")

    def __post_init__(self) -> None:
        super().__post_init__()
        _nonnegative(self, "kp", "ki", "kd")
        self.integral = self.initial  # I_0 = lambda_0: lambda continues from lambda_0 (see above)
        self.previous = 0.0

    def update(self, measured: float, bound: float) -> float:
        error = measured - bound
        self.integral = max(0.0, self.integral + self.ki * error)
        rise = max(0.0, measured - self.previous)
        self.previous = measured
        self.value = _clip(self.kp * error + self.integral + self.kd * rise, self.maximum)
        return self.value
