"""The multiplier components (objectives/multipliers.py): initial value apart from state, the update rules
against sequences written out here, and checkpoints written before the components existed (real files: a
HalfCheetahVel PID run and a nav2d dual-ascent run, copied from experiments/results into tests/data)."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_config

from objectives import make_objective
from objectives.multipliers import DualAscent, PIDLagrangian
from safemaml import config as config_io
from safemaml.engine.learner import meta_step
from safemaml.errors import SafeMamlError
from safemaml.runs.train import new_learner, train

OLD = Path(__file__).parent / "data" / "old-checkpoints"


def _trace(multiplier, measured, bound=0.1):
    return [multiplier.update(c, bound) for c in measured]


def test_initial_value_is_apart_from_the_state():
    """Updates move `value` (and the PID's integral and previous), never `initial`; a checkpoint holds the
    state alone, and a fresh component given the same parameters continues from it exactly."""
    for make in (lambda: DualAscent(0.4, 5.0, lr=0.5), lambda: PIDLagrangian(0.4, 5.0, kp=0.5, ki=0.8, kd=2.0)):
        original = make()
        _trace(original, [0.6, 0.3, 0.9])
        assert original.initial == 0.4 and original.value != 0.4
        assert "initial" not in original.state_dict()
        restored = make()
        restored.load_state_dict(original.state_dict())
        assert restored.value == original.value  # the lambda of the next meta-step, before any update
        later = [0.2, 0.5, 0.05, 0.7]
        assert _trace(restored, later) == _trace(original, later)


def test_dual_ascent_is_projected_gradient_ascent():
    # 1 + 2 (0.5 - 0.1) = 1.8; + 0.8 = 2.6 -> 2.5 (lambda_max); 2.5 - 2 * 0.1 = 2.3; then down to 0 and held there
    assert _trace(DualAscent(1.0, 2.5, lr=2.0), [0.5, 0.5, 0.0]) == pytest.approx([1.8, 2.5, 2.3])
    assert _trace(DualAscent(0.1, 2.5, lr=2.0), [0.0, 0.0]) == [0.0, 0.0]


def test_pid_continues_from_lambda_0():
    """I_0 = lambda_0 = 2, K_P = 0.5, K_I = 1, K_D = 1, d = 0.1, V-hat 0.5, 0.3, 0, 0 (errors 0.4, 0.2, -0.1, -0.1):
    I = 2.4, 2.6, 2.5, 2.4; rises 0.5, 0, 0, 0; lambda = 0.2 + 2.4 + 0.5, 0.1 + 2.6, -0.05 + 2.5, -0.05 + 2.4.
    (Started at I_0 = 0, lambda_0 would be forgotten after the first step: 1.1, 0.7, 0.45, 0.35.)"""
    pid = PIDLagrangian(2.0, 100.0, kp=0.5, ki=1.0, kd=1.0)
    assert pid.value == 2.0  # the lambda of the first meta-step
    assert _trace(pid, [0.5, 0.3, 0.0, 0.0]) == pytest.approx([3.1, 2.7, 2.45, 2.35])


@pytest.mark.parametrize("initial", [0.0, 0.6])
def test_pid_with_integral_gain_only_is_dual_ascent(initial):
    """K_P = K_D = 0: lambda_{t+1} = max(0, lambda_t + K_I e_t) from the same lambda_0, which is dual ascent with
    lr = K_I (while lambda stays below lambda_max, where dual ascent also clips)."""
    measured = [0.5, 0.4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.2]
    pid = PIDLagrangian(initial, 100.0, kp=0.0, ki=0.7, kd=0.0)
    assert _trace(pid, measured) == pytest.approx(_trace(DualAscent(initial, 100.0, lr=0.7), measured))


def test_lambda_0_acts_beyond_the_first_meta_step_of_a_pid_run():
    """Two nav2d runs, PID, lambda_0 = 0.5 and 2: the first meta-step's data are the same, so V-hat_0 is, and the
    lambda of the second step differs by exactly the difference of the lambda_0 (the integral stays positive)."""
    lambdas = {}
    for initial in (0.5, 2.0):
        cfg = tiny_config(**{"objective.name": "lagrangian", "objective.update": "pid",
                             "objective.multiplier": initial, "objective.delta": 0.05})
        learner = new_learner(cfg)
        rows = [meta_step(learner, i) for i in range(2)]
        assert rows[0]["violation_rate"] > 0.05  # a violation: the integral grows
        lambdas[initial] = [row["objective_multiplier"] for row in rows]
    assert lambdas[0.5][0] == 0.5 and lambdas[2.0][0] == 2.0
    np.testing.assert_allclose(lambdas[2.0][1] - lambdas[0.5][1], 1.5, rtol=1e-12)


@pytest.mark.parametrize("make,keys", [(lambda: DualAscent(), {"value"}),
                                       (lambda: PIDLagrangian(), {"value", "integral", "previous"})])
def test_state_with_other_keys_is_refused(make, keys):
    multiplier = make()
    assert set(multiplier.state_dict()) == keys
    with pytest.raises(SafeMamlError, match=r"unknown key\(s\) initial"):
        multiplier.load_state_dict({**multiplier.state_dict(), "initial": 3.0})


@pytest.mark.parametrize("kwargs,message", [({"initial": -0.1}, "initial must be in"),
                                            ({"initial": 3.0, "maximum": 2.0}, "initial must be in"),
                                            ({"maximum": 0.0}, "maximum must be > 0"), ({"ki": -1.0}, "ki must be")])
def test_bad_multipliers_are_one_line_errors(kwargs, message):
    with pytest.raises(SafeMamlError, match=message):
        PIDLagrangian(**kwargs)


def test_lambda_0_above_lambda_max_is_refused():
    message = r"^lagrangian: multiplier \(lambda_0\) must be <= lambda_max = 4.0, got 5.0$"
    with pytest.raises(SafeMamlError, match=message):
        make_objective("lagrangian", multiplier=5.0, lambda_max=4.0)


# ---- checkpoints written before the components (objective state under the keys multiplier/integral/previous) --


def _old(name):
    run = OLD / name
    cfg = config_io.load(run / "config.toml")
    return cfg, torch.load(run / "last.pt", weights_only=True)


@pytest.mark.parametrize("gains", [{}, {"ki": 0.5, "kd": 2.0}])
def test_an_old_pid_checkpoint_loads_and_continues_by_the_old_rule(gains):
    """HalfCheetahVel's comparison, lagrangian arm, seed 0 (PID, lambda_0 = 8.52, after 20 iterations): its
    lambda, integral (a sum of V-hat - delta, without K_I) and last V-hat map onto the component's state, and the
    next lambda is the one the old rule gives: clip(K_P e + K_I max(0, integral + e) + K_D max(0, V - V_prev)).
    With the run's gains (K_I = 1), and with others, under which the integral's units matter."""
    cfg, ckpt = _old("hcv-lagrangian-pid")
    old = ckpt["objective"]
    assert set(old) == {"multiplier", "integral", "previous"} and old["integral"] > 0
    params = {**cfg.objective_params, **gains}
    objective = make_objective(cfg.objective_name, **params)
    assert objective.update == "pid" and objective.multiplier == pytest.approx(8.5237, abs=1e-4)
    objective.load_state_dict(old)
    kp, ki, kd, delta = objective.kp, objective.ki, objective.kd, objective.delta
    assert objective.lam.value == old["multiplier"] and objective.lam.previous == old["previous"]
    assert objective.lam.integral == pytest.approx(ki * old["integral"])
    for violation in (0.4, 0.05):  # one step up, one down
        error = violation - delta
        integral = max(0.0, old["integral"] + error)
        expected = min(max(kp * error + ki * integral + kd * max(0.0, violation - old["previous"]), 0.0),
                       objective.lambda_max)
        restored = make_objective(cfg.objective_name, **params)
        restored.load_state_dict(old)
        restored.after_meta_step({"violation_rate": violation})
        assert restored.lam.value == pytest.approx(expected)
    objective.after_meta_step({"violation_rate": 0.4})  # the state written back is in the new keys
    assert set(objective.state_dict()) == {"lambda.value", "lambda.integral", "lambda.previous"}


def test_an_old_dual_checkpoint_resumes_a_run(tmp_path):
    """nav2d, lagrangian with dual ascent, 100 iterations, written before the components: `safemaml train
    --resume` runs iteration 100 with the lambda it had (7.15) and moves it by dual ascent on that iteration's
    V-hat; last.pt then holds the new keys."""
    run = tmp_path / "run"
    shutil.copytree(OLD / "nav2d-lagrangian-dual", run)
    cfg, ckpt = _old("nav2d-lagrangian-dual")
    assert ckpt["objective"]["multiplier"] == pytest.approx(7.15) and ckpt["iteration"] == 99
    train(config_io.override(cfg, {"iterations": 101}), run, resume=True, quiet=True)
    with (run / "metrics.csv").open() as f:
        row = list(csv.DictReader(f))[-1]
    assert float(row["iteration"]) == 100 and float(row["objective_multiplier"]) == pytest.approx(7.15)
    error = float(row["violation_rate"]) - cfg.objective_params["delta"]
    expected = min(max(7.15 + cfg.objective_params.get("lambda_lr", 1.0) * error, 0.0), 100.0)
    state = torch.load(run / "last.pt", weights_only=True)["objective"]
    assert state == {"lambda.value": pytest.approx(expected)}
