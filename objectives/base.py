"""The objective contract and its registry.

An objective turns a MetaBatch into a scalar loss to minimise (and metrics); it may keep
state, such as a Lagrange multiplier, that moves after each meta-step. Objectives register
by name with `@register`, or from another package through the entry-point group
`safemaml.objectives`. Duplicate names are an error.
"""

from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from typing import Any

from safemaml.engine.objective import Objective, state  # noqa: F401  (the contract, re-exported)
from safemaml.errors import SafeMamlError

ENTRY_POINT_GROUP = "safemaml.objectives"
_REGISTRY: dict[str, type[Objective]] = {}
_loaded = False


def register(cls: type[Objective]) -> type[Objective]:
    """Class decorator: make `cls` available under `cls.name`."""
    name = getattr(cls, "name", None)
    if not name:
        raise SafeMamlError(f"objective {cls.__qualname__} has no name")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise SafeMamlError(f"objective {name!r} ({cls.__qualname__}) does not implement {missing}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise SafeMamlError(f"duplicate objective name {name!r} ({_REGISTRY[name].__module__} and {cls.__module__})")
    _REGISTRY[name] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if _REGISTRY.get(ep.name) is not cls:
            if ep.name in _REGISTRY:
                raise SafeMamlError(f"duplicate objective name {ep.name!r} from entry point {ep.value}")
            register(cls)


def available() -> dict[str, type[Objective]]:
    _load()
    return dict(sorted(_REGISTRY.items()))


def make_objective(name: str, **params: Any) -> Objective:
    """Instantiate the objective `name`; unknown names and parameters are one-line errors."""
    registry = available()
    if name not in registry:
        raise SafeMamlError(f"unknown objective {name!r}; known: {', '.join(registry)}")
    cls = registry[name]
    unknown = set(params) - set(cls.parameters())
    if unknown:
        raise SafeMamlError(f"objective {name!r} has no parameter(s) {', '.join(sorted(unknown))}; "
                            f"it has: {', '.join(cls.parameters())}")
    defaults = cls.parameters()
    for key, value in params.items():
        default = defaults[key]
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            params[key] = float(value)
        elif not isinstance(value, type(default)) or isinstance(value, bool) != isinstance(default, bool):
            raise SafeMamlError(f"objective {name!r}: {key} must be a {type(default).__name__}, got {value!r}")
    return cls(**params)
