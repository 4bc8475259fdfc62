"""Define-by-run search spaces: an objective's `search_space(trial)` may draw a mode first and then only the
parameters that act in it (lagrangian: `update`, then `lambda_lr` under dual ascent or the PID gains under pid),
so that no trial samples a parameter without effect in its mode.

A study needs the space in two forms: flat, every parameter any trial may draw with its distribution (to check
--search and --fix, the corners of the space and --enqueue before any training; `declared`), and as a trial draws
it (`draw`): the objective's own code asks for the parameters, in its order, and the study answers each from its
distribution (which --search may have narrowed or widened) or, for a parameter it does not search, with the base
config's value, undrawn. Branches are on categorical choices only: `declared` runs the objective's code once per
combination of the choices it meets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import Trial

from safemaml.errors import SafeMamlError

SearchSpace = Callable[[Any], Mapping[str, Any]]
MAX_BRANCHES = 64  # combinations of categorical choices a declared space may have


class SpaceRecorder:
    """Stands in for an Optuna trial to read the distributions a search_space declares along one branch.

    The k-th categorical it meets returns its choice number path[k] (the first choice past the path); a name in
    `fixed` returns its fixed value and is not recorded (a --fix: it is not searched)."""

    def __init__(self, path: Sequence[int] = (), fixed: Mapping[str, Any] | None = None) -> None:
        self.path, self.fixed = tuple(path), dict(fixed or {})
        self.space: dict[str, BaseDistribution] = {}
        self.categoricals: list[CategoricalDistribution] = []  # the free ones met, in order

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        if name in self.fixed:
            return self.fixed[name]
        self.space[name] = FloatDistribution(low, high, step=step, log=log)
        return low

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        if name in self.fixed:
            return self.fixed[name]
        self.space[name] = IntDistribution(low, high, step=step, log=log)
        return low

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if name in self.fixed:
            return self.fixed[name]
        dist = CategoricalDistribution(list(choices))
        self.space[name] = dist
        k = len(self.categoricals)
        self.categoricals.append(dist)
        return dist.choices[self.path[k] if k < len(self.path) else 0]


def branches(search_space: SearchSpace, fixed: Mapping[str, Any] | None = None) -> list[dict[str, BaseDistribution]]:
    """The space of every branch: search_space run once per combination of the categorical choices it meets
    (depth first), each parameter fixed in `fixed` taking that value instead of being drawn."""
    found: list[dict[str, BaseDistribution]] = []
    paths: list[tuple[int, ...]] = [()]
    while paths:
        path = paths.pop()
        recorder = SpaceRecorder(path, fixed)
        search_space(recorder)
        found.append(recorder.space)
        for k in range(len(path), len(recorder.categoricals)):  # branch on each choice met past the path
            prefix = path + (0,) * (k - len(path))
            paths += [prefix + (i,) for i in range(1, len(recorder.categoricals[k].choices))]
        if len(found) + len(paths) > MAX_BRANCHES:
            raise SafeMamlError(f"search space with more than {MAX_BRANCHES} branches of categorical choices")
    return found


def declared(search_space: SearchSpace, fixed: Mapping[str, Any] | None = None) -> dict[str, BaseDistribution]:
    """Every parameter some branch draws, with its distribution (in the order first met). A parameter drawn
    from different distributions in different branches is an error (Optuna requires one per study)."""
    union: dict[str, BaseDistribution] = {}
    for space in branches(search_space, fixed):
        for name, dist in space.items():
            if union.setdefault(name, dist) != dist:
                raise SafeMamlError(f"search space: {name} is drawn from {union[name]} in one branch and from "
                                    f"{dist} in another")
    return union


def _suggest(trial: Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    raise SafeMamlError(f"search space: {name} has an unsupported distribution {dist}")


class _StudyTrial:
    """The trial an objective's search_space sees inside a study: each name it asks for is drawn from the study's
    distribution for it, or, if the study does not search it, answered with `values[name]` (undrawn)."""

    def __init__(self, trial: Trial, distributions: Mapping[str, BaseDistribution], values: Mapping[str, Any]):
        self.trial, self.distributions, self.values = trial, distributions, values
        self.asked: dict[str, Any] = {}

    def _ask(self, name: str) -> Any:
        if name in self.distributions:
            value = _suggest(self.trial, name, self.distributions[name])
        elif name in self.values:
            value = self.values[name]
        else:
            raise SafeMamlError(f"search space asks for {name!r}, which the study neither searches nor fixes")
        self.asked[name] = value
        return value

    def suggest_float(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._ask(name)

    def suggest_int(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._ask(name)

    def suggest_categorical(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._ask(name)


def draw(trial: Trial, distributions: Mapping[str, BaseDistribution], search_space: SearchSpace,
         values: Mapping[str, Any]) -> dict[str, Any]:
    """One trial's parameters: those search_space asks for in this trial's branch that the study searches, then
    the study's other searched names that search_space declares in no branch (added with --search, e.g.
    `multiplier` or `adapt.fast_lr`). A name declared only in other branches is not drawn: it has no effect here.
    (A retried trial gets its original's values, hence its branch, from Optuna.)"""
    study_trial = _StudyTrial(trial, distributions, values)
    search_space(study_trial)
    params = {name: value for name, value in study_trial.asked.items() if name in distributions}
    elsewhere = declared(search_space)
    for name, dist in distributions.items():
        if name not in params and name not in elsewhere:
            params[name] = _suggest(trial, name, dist)
    return params


def reachable(search_space: SearchSpace, space: Mapping[str, BaseDistribution], fixed: Mapping[str, Any],
              searched: Sequence[str] = ()) -> dict[str, BaseDistribution]:
    """`space` without the parameters search_space declares only in branches that `fixed` rules out (e.g.
    lambda_lr once update is fixed to pid): no trial would draw them. One of them given to --search is an error."""
    everywhere = declared(search_space)
    here = declared(search_space, fixed)
    dead = [name for name in space if name in everywhere and name not in here]
    for name in dead:
        if name in searched:
            given = ", ".join(f"{k}={v}" for k, v in fixed.items())
            raise SafeMamlError(f"--search {name}: no trial draws it with --fix {given} (it has no effect there)")
    return {name: dist for name, dist in space.items() if name not in dead}
