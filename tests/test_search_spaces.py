"""Each objective's Optuna search space, drawn by a real trial: the names Optuna records are the
objective's parameters, every bound is a valid value, and ranges of a decade or more are sampled log-uniformly."""

import optuna
import pytest

from objectives import available, make_objective


@pytest.mark.parametrize("name", sorted(available()))
def test_search_space_is_valid_at_its_bounds(name):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    drawn = available()[name].search_space(trial)
    assert drawn == trial.params  # Optuna records each value under the objective's own parameter name
    assert set(drawn) <= set(available()[name].parameters())
    for param, dist in trial.distributions.items():
        if isinstance(dist, optuna.distributions.FloatDistribution):
            assert dist.low < dist.high
            for bound in (dist.low, dist.high):
                make_objective(name, **{param: bound})  # raises on an invalid value
            if dist.low > 0 and dist.high / dist.low >= 10:
                assert dist.log, f"{name}.{param} spans a decade or more: sample it log-uniformly"
        else:
            for choice in dist.choices:
                make_objective(name, **{param: choice})


def _documented_spaces() -> dict[str, dict[str, optuna.distributions.BaseDistribution]]:
    """The search-space table of docs/studies.md, read as Optuna distributions per objective."""
    from pathlib import Path

    spaces: dict[str, dict] = {}
    text = (Path(__file__).parents[1] / "docs" / "studies.md").read_text()
    for line in text.split("| --- | --- | --- | --- |")[1].split("\n\n")[0].strip().splitlines():
        who, params, values, sampled = (cell.strip() for cell in line.strip("|").split("|"))
        if sampled == "categorical":
            dist = optuna.distributions.CategoricalDistribution([v.strip() for v in values.split(",")])
        else:
            low, high = (float(v) for v in values.split("–"))
            dist = optuna.distributions.FloatDistribution(low, high, log=sampled == "log-uniform")
        names = [n for n in available() if n != "maml"] if who == "every one but maml" else [who]
        for name in names:
            for param in params.replace("`", "").split(","):
                spaces.setdefault(name, {})[param.strip()] = dist
    return spaces


def test_search_spaces_are_the_documented_ones():
    documented = _documented_spaces()
    for name, cls in available().items():
        if not cls.__module__.startswith("objectives."):
            continue  # the table is about the shipped objectives, not those a test registers
        trial = optuna.create_study().ask()
        cls.search_space(trial)
        assert trial.distributions == documented.get(name, {}), name
