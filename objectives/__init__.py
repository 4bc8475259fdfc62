"""The pluggable objective layer: `make_objective(name, **params)`, `available()`, `@register`."""

from objectives import cvar, lagrangian, maml, quantile  # noqa: E402,F401  (the built-ins register themselves)
from objectives.base import ENTRY_POINT_GROUP, Objective, available, make_objective, register

__all__ = ["ENTRY_POINT_GROUP", "Objective", "available", "make_objective", "register"]
