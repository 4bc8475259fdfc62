"""Each objective's Optuna search space, drawn by real trials in every branch: the names Optuna records are the
objective's parameters, every bound is a valid value, ranges of a decade or more are sampled log-uniformly, the
spaces and their conditions are the documented ones, and each parameter drawn in a mode changes training there."""

import itertools
from pathlib import Path

import optuna
import pytest
import torch
from helpers import tiny_config

from objectives import available, make_objective
from safemaml.engine.learner import meta_step
from safemaml.runs.train import new_learner

optuna.logging.set_verbosity(optuna.logging.WARNING)
Condition = tuple[str, str] | None  # (categorical parameter, value) under which a parameter is drawn


def _documented() -> dict[str, dict[str, tuple[optuna.distributions.BaseDistribution, Condition]]]:
    """The search-space table of docs/studies.md: per objective, parameter -> (distribution, condition)."""
    spaces: dict[str, dict] = {}
    text = (Path(__file__).parents[1] / "docs" / "studies.md").read_text()
    for line in text.split("| --- | --- | --- | --- | --- |")[1].split("\n\n")[0].strip().splitlines():
        who, params, values, sampled, when = (cell.strip() for cell in line.strip("|").split("|"))
        if sampled == "categorical":
            dist = optuna.distributions.CategoricalDistribution([v.strip() for v in values.split(",")])
        else:
            low, high = (float(v) for v in values.split("–"))
            dist = optuna.distributions.FloatDistribution(low, high, log=sampled == "log-uniform")
        condition = None if when.startswith("always") else tuple(c.strip(" `") for c in when.split("="))
        names = [n for n in available() if n != "maml"] if who == "every one but maml" else [who]
        for name in names:
            for param in params.replace("`", "").split(","):
                spaces.setdefault(name, {})[param.strip()] = (dist, condition)
    return spaces


def _modes(name: str) -> list[dict[str, str]]:
    """The documented branches of `name`: one dict of categorical values per combination of the conditions."""
    conditions = {c for _, c in _documented().get(name, {}).values() if c is not None}
    by_param: dict[str, list[str]] = {}
    for param, value in sorted(conditions):
        by_param.setdefault(param, []).append(value)
    return [dict(zip(by_param, combo, strict=True)) for combo in itertools.product(*by_param.values())]


def _trial(cls, mode: dict[str, str]):
    """A real Optuna trial (RandomSampler) with the mode's categorical values enqueued, after search_space ran."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(mode)
    trial = study.ask()
    return trial, cls.search_space(trial)


SHIPPED = sorted(n for n, cls in available().items() if cls.__module__.startswith("objectives."))
BRANCHES = [(name, mode) for name in SHIPPED for mode in _modes(name)]


@pytest.mark.parametrize("name,mode", BRANCHES)
def test_search_space_is_valid_at_its_bounds(name, mode):
    trial, drawn = _trial(available()[name], mode)
    assert drawn == trial.params  # Optuna records each value under the objective's own parameter name
    assert set(drawn) <= set(available()[name].parameters())
    for param, dist in trial.distributions.items():
        if isinstance(dist, optuna.distributions.FloatDistribution):
            assert dist.low < dist.high
            for bound in (dist.low, dist.high):
                make_objective(name, **{**mode, param: bound})  # raises on an invalid value
            if dist.low > 0 and dist.high / dist.low >= 10:
                assert dist.log, f"{name}.{param} spans a decade or more: sample it log-uniformly"
        else:
            for choice in dist.choices:
                make_objective(name, **{param: choice})


@pytest.mark.parametrize("name,mode", BRANCHES)
def test_search_spaces_are_the_documented_ones(name, mode):
    """In each documented branch, a real trial draws exactly the parameters the table lists for it."""
    trial, _ = _trial(available()[name], mode)
    expected = {param: dist for param, (dist, condition) in _documented().get(name, {}).items()
                if condition is None or mode.get(condition[0]) == condition[1]}
    assert trial.distributions == expected, (name, mode)


def test_the_study_declares_every_branch():
    """safemaml.studies.study.declared_space (what --search, --fix, the corners and --enqueue are checked
    against) holds every parameter of every branch."""
    from safemaml.studies.study import declared_space

    for name in SHIPPED:
        assert declared_space(name) == {p: d for p, (d, _) in _documented().get(name, {}).items()}, name


# ---- each parameter drawn in a mode changes training in it (and those of the other mode do not) ----------------

# Base points where each parameter can act within 2 meta-steps of nav2d's tiny config, with K = 8 tasks (with
# fewer, the CVaR over tasks puts all its weight on the worst task at every delta <= 1/K, so cvar's delta would act
# only at larger K, as in real runs). The lagrangian starts at lambda_0 = 1: at 0 its penalty would first act at
# the second step. cvar's margin only switches its penalty on while the constraint holds (C < 0): there, a policy
# whose adaptation helps every task (init_std 0.3, fast_lr 0.5) and tails as wide as beta = delta = 0.95 give
# C/s = -0.08 at the first step with s fixed at 1000, so margin 0 leaves the penalty off and 0.5 turns it on.
BASE: dict[str, dict] = {"lagrangian": {"multiplier": 1.0}}
AT: dict[tuple[str, str], tuple[dict, dict]] = {
    ("cvar", "margin"): ({"beta": 0.95, "delta": 0.95, "return_scale": 1000.0},
                         {"policy.init_std": 0.3, "adapt.fast_lr": 0.5})}
TASKS = 8


def _trained(name: str, params: dict, settings: dict | None = None) -> list[torch.Tensor]:
    """The policy after 2 meta-steps of nav2d's tiny config (with `settings`) and the objective at `params`."""
    cfg = tiny_config(meta_batch_size=TASKS, **(settings or {}), **{"objective.name": name,
                                                                    **{f"objective.{k}": v for k, v in params.items()}})
    learner = new_learner(cfg)
    for iteration in range(2):
        meta_step(learner, iteration)
    return [v.detach().clone() for v in learner.params.values()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _ends(dist) -> list:
    return list(dist.choices) if isinstance(dist, optuna.distributions.CategoricalDistribution) else [dist.low,
                                                                                                     dist.high]


@pytest.mark.parametrize("name,mode", BRANCHES)
def test_each_parameter_drawn_in_a_mode_changes_training_there(name, mode):
    """For every parameter a trial of this branch draws: 2 meta-steps at either end of its range (each choice of
    a categorical) give different policies, the other parameters held at the branch's base point."""
    trial, _ = _trial(available()[name], mode)
    for param, dist in trial.distributions.items():
        params, settings = AT.get((name, param), ({}, {}))
        base = {**BASE.get(name, {}), **params, **mode}
        ends = _ends(dist)
        policies = [_trained(name, {**base, param: value}, settings) for value in ends]
        for (a, pa), (b, pb) in itertools.combinations(zip(ends, policies, strict=True), 2):
            assert not _same(pa, pb), f"{name} {mode}: {param} = {a} and {b} train alike"


@pytest.mark.parametrize("mode,others", [("pid", {"lambda_lr": 7.0}), ("dual", {"kp": 7.0, "ki": 0.1, "kd": 3.0})])
def test_the_other_modes_parameters_change_nothing(mode, others):
    """What the conditional space leaves out has no effect: lambda_lr under PID, the PID gains under dual ascent
    (so a trial that drew them would have searched a noise dimension)."""
    base = {**BASE["lagrangian"], "update": mode}
    assert _same(_trained("lagrangian", base), _trained("lagrangian", {**base, **others}))
