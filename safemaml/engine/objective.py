"""The objective seam: what the engine asks of a meta-objective (implementations live in the
top-level `objectives/` package, with their registry)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch import Tensor

from safemaml.engine.metabatch import MetaBatch
from safemaml.errors import SafeMamlError


@dataclasses.dataclass
class Objective:
    """Base class: subclasses are dataclasses whose fields are the objective's parameters."""

    name: ClassVar[str]
    description: ClassVar[str]
    beta: float = 0.1  # per-task tolerance of Eq. 6: Pr(Gamma_T <= 0) >= 1 - beta
    delta: float = 0.1  # fraction of tasks allowed to violate

    def __post_init__(self) -> None:
        for field in ("beta", "delta"):
            value = getattr(self, field)
            if not 0.0 < value < 1.0:
                raise SafeMamlError(f"{field} must be in (0, 1), got {value}")

    def __call__(self, batch: MetaBatch) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def after_meta_step(self, metrics: dict[str, float]) -> None:
        """Update internal state (e.g. a multiplier) from the metrics of the step just taken."""

    def state_dict(self) -> dict[str, float]:
        """State to checkpoint (beyond the parameters): empty unless the objective keeps some."""
        return {}

    def load_state_dict(self, state: dict[str, float]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """The objective's Optuna search space: parameter values drawn from `trial`."""
        return {"beta": trial.suggest_float("beta", 0.05, 0.3), "delta": trial.suggest_float("delta", 0.05, 0.3)}

    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """Parameter names and defaults (fields marked `state()` are internal state, not parameters)."""
        return {f.name: f.default for f in dataclasses.fields(cls) if not f.metadata.get("state")}


def state(default: float = 0.0) -> Any:
    """A dataclass field holding internal state (checkpointed, not a user parameter)."""
    return dataclasses.field(default=default, metadata={"state": True})
