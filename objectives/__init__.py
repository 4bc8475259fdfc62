"""The pluggable objective layer: `make_objective(name, **params)`, `available()`, `@register`."""

from objectives.base import ENTRY_POINT_GROUP, Objective, available, make_objective, register

__all__ = ["ENTRY_POINT_GROUP", "Objective", "available", "make_objective", "register"]
