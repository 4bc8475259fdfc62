"""Conditional search spaces in studies (safemaml/studies/space.py): trials of a real Optuna study draw each mode's
parameters only in that mode; --fix and --search respect the conditions; a study made before the spaces were
conditional (HalfCheetahVel's lagrangian study, a real study.db) continues without drawing noise dimensions."""

import shutil
from pathlib import Path

import optuna
import pytest
from helpers import tiny_config

from objectives import make_objective
from safemaml.config import EvalRequest
from safemaml.errors import SafeMamlError
from safemaml.studies.study import load_or_create, make_settings, open_storage, suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)
ALWAYS = {"update", "beta", "delta", "tau"}
BY_MODE = {"dual": {"lambda_lr"}, "pid": {"kp", "ki"}}
OLD_STUDY = Path(__file__).parents[1] / "experiments/results/comparison-halfcheetah-vel/study-lagrangian/study.db"


def _settings(search=(), fix=()):
    return make_settings(tiny_config(), "lagrangian", list(search), list(fix), seeds=1,
                         evaluation=EvalRequest(sample=4))


def _draws(settings, tmp_path, n=16):
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study, _ = load_or_create(storage, "s", settings, sampler_seed=0)
    out = []
    for _ in range(n):
        trial = study.ask()
        params = suggest(trial, settings)
        assert params == trial.params  # what Optuna records is what the trial trains with
        make_objective("lagrangian", **params)
        out.append(params)
    return out


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_lagrangian_study_draws_each_modes_parameters_only_in_that_mode(tmp_path):
    """The stored space holds every branch (and --search's multiplier, which acts in both modes); each trial
    draws the update rule, the parameters of every mode, its own mode's and the added name, nothing else."""
    settings = _settings(search=["multiplier=0.1:30:log"])
    assert set(settings.distributions) == ALWAYS | BY_MODE["dual"] | BY_MODE["pid"] | {"multiplier"}
    draws = _draws(settings, tmp_path)
    for params in draws:
        assert set(params) == ALWAYS | BY_MODE[params["update"]] | {"multiplier"}, params
    assert {p["update"] for p in draws} == {"dual", "pid"}


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_fixing_the_mode_leaves_the_other_modes_parameters_out(tmp_path):
    settings = _settings(fix=["update=pid"])
    assert set(settings.distributions) == ALWAYS - {"update"} | BY_MODE["pid"]
    assert settings.base.objective_params["update"] == "pid"
    for params in _draws(settings, tmp_path, n=4):
        assert set(params) == ALWAYS - {"update"} | BY_MODE["pid"]
    with pytest.raises(SafeMamlError, match=r"^--search lambda_lr: no trial draws it with --fix update=pid"):
        _settings(search=["lambda_lr=0.1:1"], fix=["update=pid"])
    narrowed = _settings(search=["lambda_lr=0.1:1"])  # a range changed, its condition kept
    assert narrowed.distributions["lambda_lr"] == optuna.distributions.FloatDistribution(0.1, 1.0)
    (tmp_path / "narrowed").mkdir()
    for params in _draws(narrowed, tmp_path / "narrowed", n=8):
        assert ("lambda_lr" in params) == (params["update"] == "dual")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_study_made_before_continues_without_noise_dimensions(tmp_path):
    """HalfCheetahVel's lagrangian study (7 trials, 6 of them PID, every one drew lambda_lr) stored a flat space
    without the PID gains. Continued, its new trials draw lambda_lr under dual ascent only, and not the gains,
    which it does not search (they keep their config values)."""
    shutil.copy(OLD_STUDY, tmp_path / "study.db")
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study, settings = load_or_create(storage, "study-lagrangian", None, sampler_seed=0)
    old = study.get_trials(deepcopy=False)
    assert all("lambda_lr" in t.params for t in old) and sum(t.params["update"] == "pid" for t in old) == 6
    assert set(settings.distributions) == {"beta", "delta", "lambda_lr", "multiplier", "tau", "update"}
    modes = set()
    for _ in range(12):
        trial = study.ask()
        params = suggest(trial, settings)
        modes.add(params["update"])
        expected = {"beta", "delta", "tau", "update", "multiplier"} | ({"lambda_lr"} if params["update"] == "dual"
                                                                        else set())
        assert set(params) == expected == set(trial.params), params
    assert modes == {"dual", "pid"}


def test_importances_of_a_conditional_study_cover_the_parameters_every_trial_has(tmp_path):
    """PED-ANOVA (optuna.importance's default) over trials that drew different parameters: `study show` gets an
    importance for every parameter (a conditional one's from the trials that drew it), and the one that drives the
    value comes first."""
    import numpy as np

    from safemaml.studies.report import importances

    settings = _settings()
    space = settings.distributions
    study = optuna.create_study(directions=["maximize", "minimize"])
    rng = np.random.default_rng(0)
    for k in range(50):
        mode = "dual" if k % 2 else "pid"
        params = {"update": mode, "beta": float(rng.uniform(0.05, 0.3)), "delta": float(rng.uniform(0.05, 0.3)),
                  "tau": 0.1, **{p: float(rng.uniform(0.01, 10.0)) for p in BY_MODE[mode]}}
        study.add_trial(optuna.trial.create_trial(params=params, distributions={p: space[p] for p in params},
                                                  values=[-10.0 * params["beta"], params["delta"]]))
    imp = importances(study, settings)
    assert set(imp["post_return"]) == ALWAYS | BY_MODE["dual"] | BY_MODE["pid"]
    assert max(imp["post_return"], key=imp["post_return"].get) == "beta"
