"""maml: the paper's baseline, the mean outer surrogate over tasks (Eq. 4)."""

from __future__ import annotations

import dataclasses

from torch import Tensor

from objectives.base import Objective, register
from safemaml.engine.metabatch import MetaBatch


@register
@dataclasses.dataclass
class Maml(Objective):
    name = "maml"
    description = "MAML's meta-objective: the mean post-adaptation surrogate; beta, delta only in metrics"

    @staticmethod
    def search_space(trial) -> dict:
        """Nothing: beta and delta do not change MAML's training, and searching them only adds noise
        dimensions (and spurious importances). Search MAML's own settings with --search adapt.fast_lr=..."""
        return {}

    def __call__(self, batch: MetaBatch) -> tuple[Tensor, dict[str, float]]:
        loss = batch.surrogates.mean()
        return loss, {"surrogate": float(loss.detach())}
