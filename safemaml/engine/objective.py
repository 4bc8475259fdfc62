"""The objective seam: what the engine asks of a meta-objective (implementations live in the
top-level `objectives/` package, with their registry)."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor

from safemaml.engine.metabatch import MetaBatch
from safemaml.errors import SafeMamlError


@dataclasses.dataclass
class Objective(abc.ABC):
    """A meta-objective: the loss the meta-optimiser minimises in place of MAML's mean surrogate.

    The contract, which the engine (safemaml.engine.learner, safemaml.engine.metastep) relies on and
    tests/test_objectives.py checks for every registered objective:

    - Parameters. A subclass is a dataclass whose init fields, each with a default, are its parameters:
      configs, the CLI and studies set them by name (`parameters()` lists them). Every objective has `beta` and
      `delta`, the targets of the paper's Eq. 6, Pr_T(Pr(Gamma_T <= 0) >= 1 - beta) >= 1 - delta; the learner's
      metrics (violation rate, certificate) are measured against them. Class attributes: `name`, the registry key,
      and `description`, one line for `safemaml objectives`.
    - `__call__(batch)` -> (loss, metrics): a scalar tensor whose gradient in theta the meta-optimiser follows,
      and float metrics (metrics.csv records them as objective_<key>). It is called at theta and at every
      line-search candidate of a meta-step, so it must not change the objective.
    - `after_meta_step(metrics)`: called once after each accepted meta-step with that step's metrics
      (`violation_rate` among them); the only place where state (e.g. a Lagrange multiplier) may move.
    - `state_dict()` / `load_state_dict(state)`: the state that moves, as a flat dict of floats that
      `torch.load(weights_only=True)` reads back; parameters are not in it (the run's config holds them). A
      restored objective continues exactly as the original would have; a state with keys the objective does not
      know, or without keys it needs, is refused with a one-line SafeMamlError.
    - `search_space(trial)`: the parameters an Optuna study draws, define-by-run: an objective with modes draws
      the mode first and then only the parameters that act in it, so that no trial samples a parameter without
      effect (a noise dimension for the sampler and for parameter importances).

    The default state is the fields marked with `state()` (none here); objectives with other state override
    `state_dict` and `load_state_dict`.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    beta: float = 0.1  # per-task tolerance of Eq. 6: Pr(Gamma_T <= 0) >= 1 - beta
    delta: float = 0.1  # fraction of tasks allowed to violate

    def __post_init__(self) -> None:
        for field in ("beta", "delta"):
            value = getattr(self, field)
            if not 0.0 < value < 1.0:
                raise SafeMamlError(f"{field} must be in (0, 1), got {value}")

    @abc.abstractmethod
    def __call__(self, batch: MetaBatch) -> tuple[Tensor, dict[str, float]]:
        """The loss to minimise at the parameters that produced `batch`, and metrics (floats)."""

    def after_meta_step(self, metrics: Mapping[str, float]) -> None:  # noqa: B027  (a hook: most keep no state)
        """Update internal state (e.g. a multiplier) from the metrics of the step just taken."""

    def state_dict(self) -> dict[str, float]:
        """State to checkpoint (beyond the parameters): the fields marked `state()`."""
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata.get("state")}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Restore what `state_dict` returned; unknown or missing keys are a SafeMamlError."""
        check_state_keys(f"objective {self.name}", state, self.state_dict())
        for key, value in state.items():
            setattr(self, key, float(value))

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """The objective's Optuna search space: parameter values drawn from `trial` (an optuna Trial)."""
        return {"beta": trial.suggest_float("beta", 0.05, 0.3), "delta": trial.suggest_float("delta", 0.05, 0.3)}

    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """Parameter names and defaults: the init fields (fields marked `state()` are state, not parameters)."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.init and not f.metadata.get("state")}


def state(default: float = 0.0) -> Any:
    """A dataclass field holding internal state (checkpointed, not a user parameter)."""
    return dataclasses.field(default=default, metadata={"state": True})


def check_state_keys(owner: str, state: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Refuse a checkpointed state whose keys are not exactly `expected`'s, in one line."""
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if unknown or missing:
        parts = ([f"unknown key(s) {', '.join(map(str, unknown))}"] if unknown else []) + (
            [f"missing key(s) {', '.join(missing)}"] if missing else [])
        raise SafeMamlError(f"{owner}: checkpointed state has {'; '.join(parts)} "
                            f"(expected: {', '.join(expected) or 'none'})")
