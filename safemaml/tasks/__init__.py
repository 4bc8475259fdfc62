"""Task families by name: `get_family("halfcheetah-vel")`, `FAMILY_NAMES`."""

from __future__ import annotations

import difflib

from safemaml.errors import SafeMamlError
from safemaml.tasks.bandit import BanditFamily
from safemaml.tasks.base import BatchEnv, TaskFamily
from safemaml.tasks.locomotion import make_locomotion_families
from safemaml.tasks.nav2d import Nav2DFamily

FAMILY_NAMES = ("halfcheetah-vel", "halfcheetah-dir", "ant-vel", "ant-dir", "nav2d", "bandit")


def _families() -> dict[str, TaskFamily]:
    """Built on every call (about 10 ms): no process-wide state, and mutation tests reach the constructors."""
    families = [*make_locomotion_families(), Nav2DFamily(), BanditFamily()]
    return {f.name: f for f in families}


def get_family(name: str) -> TaskFamily:
    """The family called `name`, or a SafeMamlError that lists the known ones."""
    families = _families()
    if name not in families:
        close = difflib.get_close_matches(name, FAMILY_NAMES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise SafeMamlError(f"unknown task family {name!r}{hint}; known: {', '.join(FAMILY_NAMES)}")
    return families[name]


def all_families() -> list[TaskFamily]:
    return [get_family(n) for n in FAMILY_NAMES]


__all__ = ["BatchEnv", "TaskFamily", "FAMILY_NAMES", "get_family", "all_families"]
