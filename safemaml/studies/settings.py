"""A study's settings: what makes its trials comparable (the base config, the search space, the seeds, the
evaluation, the metric). Stored on the study as JSON and checked when it is continued (safemaml.studies.study).

Kept apart from the study's Optuna machinery so that the command line can build the study's flags from these
fields without importing Optuna for every command.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from safemaml import config as config_io
from safemaml.config import EvalRequest, TrainConfig, option
from safemaml.errors import SafeMamlError
from safemaml.measure import schema

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

# metric -> direction (safemaml.measure.schema's study targets); "pareto" means (post_return, violation_rate)
METRICS = {name: schema.METRICS[name].direction for name in schema.TARGETS}
METRIC_NAMES = {name: schema.METRICS[name].title for name in schema.TARGETS}
SEED_KEYS = schema.PER_SEED  # the trial attributes per seed ("KEY seed S") and their means ("KEY mean")
DEFAULT_SEEDS = 3  # training seeds per trial

# How every run of a study is evaluated unless the study says otherwise: one round (cheap; >= 29 to certify),
# and every trial measured against the same Eq. 6 target, not the tolerances its objective was trained with
# (which a study may search). The device is each worker's own (`study run --device`), not the study's.
STUDY_EVALUATION = EvalRequest(repeats=1, beta=0.1, delta=0.1)


@dataclass(frozen=True)
class StudySettings:
    """Everything that makes trials comparable; stored on the study, checked when it is continued."""

    config: dict[str, Any]  # the base TrainConfig (objective name and fixed parameters included)
    space: dict[str, str]  # parameter -> Optuna distribution as JSON
    seeds: tuple[int, ...]
    evaluation: EvalRequest  # resolved against STUDY_EVALUATION, at its device (not stored: each worker's)
    metric: str = option("pareto", "pareto: max post-update return, min V̂; or one of "
                                   f"{', '.join(schema.TARGETS)} (a single objective, prunable)")
    prune_every: int = option(0, "single metric: report every K iterations to Optuna's MedianPruner (0: never)",
                              metavar="K")

    @property
    def base(self) -> TrainConfig:
        return config_io.from_dict(self.config, where="study settings")

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        from optuna.distributions import json_to_distribution

        return {name: json_to_distribution(text) for name, text in self.space.items()}

    @property
    def metrics(self) -> list[str]:
        return ["post_return", "violation_rate"] if self.metric == "pareto" else [self.metric]

    def to_json(self) -> str:
        """The stored form: the evaluation without its device (as studies were stored before it had one)."""
        data = dataclasses.asdict(self)
        del data["evaluation"]["device"]
        return json.dumps(data, sort_keys=True, default=list)

    @classmethod
    def from_json(cls, text: str) -> StudySettings:
        """The stored settings; a one-line SafeMamlError where they are damaged (not what to_json writes)."""
        try:
            data = json.loads(text)
            return cls(config=data["config"], space=data["space"], seeds=tuple(data["seeds"]),
                       evaluation=dataclasses.replace(STUDY_EVALUATION, **data["evaluation"]), metric=data["metric"],
                       prune_every=data["prune_every"])
        except (ValueError, KeyError, TypeError):
            raise SafeMamlError("the study's stored safemaml settings are damaged (not what safemaml writes); "
                                "start the study again in another DIR") from None
