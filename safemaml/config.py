"""Typed run configuration, loadable from TOML (experiments/*.toml) and overridable by flags.

A config file has top-level run settings and the tables [policy], [adapt], [meta] and
[objective] (the objective's name and parameters). Unknown keys are errors, not ignored.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safemaml.adapt import AdaptConfig
from safemaml.errors import SafeMamlError
from safemaml.metaopt import MetaOptConfig


@dataclass(frozen=True)
class PolicyConfig:
    hidden: tuple[int, ...] = (100, 100)
    activation: str = "relu"
    init_std: float = 1.0
    min_std: float = 1e-6  # floor on the policy's standard deviation (the paper's code)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run; the defaults are the paper's halfcheetah-vel setting."""

    tasks: str = "halfcheetah-vel"
    iterations: int = 500
    seed: int = 0
    device: str = "cpu"
    meta_batch_size: int = 40  # tasks per meta-batch (K)
    fast_batch_size: int = 20  # pre-update trajectories per task (n)
    post_batch_size: int = 20  # post-update trajectories per task (m)
    gamma: float = 0.99
    gae_lambda: float = 1.0
    checkpoint_every: int = 10
    clip_actions: bool = True  # clip actions to the action bounds before the environment (the paper's rewards)
    init: str = ""  # start theta from this checkpoint (or run directory's last.pt) instead of a fresh policy
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    meta: MetaOptConfig = field(default_factory=MetaOptConfig)
    objective: dict[str, Any] = field(default_factory=lambda: {"name": "maml"})

    def __post_init__(self) -> None:
        for name in ("iterations", "meta_batch_size", "fast_batch_size", "post_batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise SafeMamlError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise SafeMamlError("gamma and gae_lambda must be in [0, 1]")
        if self.adapt.fast_lr < 0 or self.adapt.num_steps < 1:
            raise SafeMamlError("adapt.fast_lr must be >= 0 and adapt.num_steps >= 1")

    @property
    def objective_name(self) -> str:
        return str(self.objective.get("name", "maml"))

    @property
    def objective_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.objective.items() if k != "name"}


SECTIONS = {"policy": PolicyConfig, "adapt": AdaptConfig, "meta": MetaOptConfig}


def _build(cls, values: dict[str, Any], where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise SafeMamlError(f"unknown setting(s) {', '.join(sorted(unknown))} in {where}; "
                            f"known: {', '.join(known)}")
    kwargs = {}
    for key, value in values.items():
        default = known[key].default
        if isinstance(default, tuple):
            value = tuple(value)
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise SafeMamlError(f"{where}.{key} must be true or false, got {value!r}")
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif default is not dataclasses.MISSING and not isinstance(value, type(default)):
            raise SafeMamlError(f"{where}.{key} must be a {type(default).__name__}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    data = dict(data)
    sections = {name: _build(cls, data.pop(name, {}), name) for name, cls in SECTIONS.items()}
    objective = dict(data.pop("objective", {}))
    objective.setdefault("name", "maml")
    cfg = _build(TrainConfig, data, where)
    return dataclasses.replace(cfg, objective=objective, **sections)


def load(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise SafeMamlError(f"config file {str(path)!r} not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SafeMamlError(f"{path}: invalid TOML: {exc}") from None
    return from_dict(data, where=path.name)


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def override(cfg: TrainConfig, settings: dict[str, Any]) -> TrainConfig:
    """Apply dotted overrides such as {"adapt.fast_lr": 0.05, "iterations": 3, "objective.beta": 0.1}."""
    data = to_dict(cfg)
    for key, value in settings.items():
        section, _, name = key.rpartition(".")
        target = data[section] if section else data
        if section and section not in data:
            raise SafeMamlError(f"unknown config section {section!r}")
        target[name] = value
    return from_dict(data, where="overrides")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise SafeMamlError(f"cannot write {value!r} to TOML")


def dumps(cfg: TrainConfig) -> str:
    """The resolved config as TOML (round-trips through `from_dict`)."""
    data = to_dict(cfg)
    tables = {k: data.pop(k) for k in (*SECTIONS, "objective")}
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items()]
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"
