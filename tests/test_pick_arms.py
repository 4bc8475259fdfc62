"""safemaml study pick (safemaml.studies.pick): the rule that turns tuning studies into a comparison's arms, on a real study."""

import csv

import numpy as np
import pytest
import tomllib
from helpers import tiny_config  # noqa: E402

from safemaml.cli.main import main  # noqa: E402
from safemaml.runs.compare import arm_configs, load_arms  # noqa: E402
from safemaml.studies import pick as pick_arms
from safemaml.tasks import get_family  # noqa: E402


def _t(number, post, v_hat, objective="cvar", std=0.5, **params):
    return {"number": number, "params": params, "objective": objective, "post": post, "v_hat": v_hat, "std": std}


def test_the_lowest_violation_rate_at_or_above_the_median_post_update_return():
    trials = [_t(0, -10.0, 0.30), _t(1, -20.0, 0.00), _t(2, -12.0, 0.10), _t(3, -11.0, 0.10), _t(4, -30.0, 0.05)]
    # median post-update return -12: trials 1 and 4 (V̂ 0, 0.05) sandbag below it; 2 and 3 tie on V̂, 3 is better
    assert pick_arms.pick_constrained(trials)["number"] == 3
    assert pick_arms.pick_maml(trials)["number"] == 0


def test_non_finite_trials_are_ignored_and_none_left_is_an_error():
    nan = float("nan")
    assert pick_arms.pick_constrained([_t(0, nan, 0.0), _t(1, -5.0, 0.2)])["number"] == 1
    with pytest.raises(pick_arms.SafeMamlError):
        pick_arms.pick_constrained([_t(0, nan, 0.0)])


def test_arms_file_has_the_controls_and_loads_as_a_valid_comparison(tmp_path):
    cvar = _t(3, -11.0, 0.1, "cvar", 0.42, eta=2.0, margin=0.1, beta=0.2)
    quantile = _t(5, -9.0, 0.2, "quantile", 0.7, eta=0.5, bandwidth=1.0)
    maml = _t(1, -8.0, 0.3, "maml", 0.9, **{"adapt.fast_lr": 0.2})
    path = tmp_path / "arms.toml"
    path.write_text(pick_arms.to_toml(pick_arms.arms([cvar, quantile], maml), ["a", "b"]))
    table = tomllib.loads(path.read_text())["arms"]
    assert list(table) == ["maml", "maml-alpha", "maml-std", "cvar", "quantile", "cvar-neutral"]
    assert table["maml-alpha"] == {"objective": {"name": "maml"}, "adapt": {"fast_lr": 0.2}}
    assert table["maml-std"]["policy"] == {"learn_std": False, "init_std": 0.42}  # the lowest-V̂ arm's std
    assert table["cvar-neutral"]["objective"] == {"name": "cvar", "eta": 2.0, "margin": 0.1, "beta": 0.2,
                                                  "aim": "neutral"}
    configs = arm_configs(tiny_config(), load_arms(path))
    assert configs["cvar"].objective["eta"] == 2.0 and configs["maml-alpha"].adapt.fast_lr == 0.2


def test_reads_a_real_study(tmp_path, capsys):
    study = tmp_path / "study-cvar"
    common = ["--tasks", "nav2d", "--iterations", "1", "--set", "meta_batch_size=2", "--set", "fast_batch_size=2",
              "--set", "post_batch_size=2", "--set", "policy.hidden=[8,8]", "--trajectories", "2", "--repeats", "2",
              "--sample", "3", "--task-seed", "7", "--seeds", "1", "--sampler-seed", "0", "--quiet"]
    assert main(["study", "run", str(study), "--objective", "cvar", "--trials", "3", *common]) == 0
    # --task-seed: the study tunes on other tasks than compare's (task seed 0) evaluates on
    expected = get_family("nav2d").sample(3, np.random.default_rng(7))
    evaluated = sorted(study.glob("runs/trial-*/seed-*/eval/tasks.csv"))
    assert len(evaluated) == 3
    for tasks_csv in evaluated:
        with tasks_csv.open() as f:
            got = np.array([[float(r["goal_x"]), float(r["goal_y"])] for r in csv.DictReader(f)])
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    trials = pick_arms.read_trials(study)
    assert len(trials) == 3 and all(t["objective"] == "cvar" and "eta" in t["params"] for t in trials)
    out = tmp_path / "arms.toml"
    assert main(["study", "pick", "--studies", str(study), "--out", str(out)]) == 0
    chosen = pick_arms.pick_constrained(trials)
    assert tomllib.loads(out.read_text())["arms"]["cvar"]["objective"]["eta"] == chosen["params"]["eta"]
    before = out.read_bytes()
    assert main(["study", "pick", "--studies", str(study), "--out", str(out)]) == 2  # picked once, never replaced
    assert main(["study", "pick", "--studies", str(tmp_path / "nothing"), "--out", str(tmp_path / "b.toml")]) == 2
    assert main(["study", "pick", "--rule", "best", "--studies", str(study), "--out", str(tmp_path / "b.toml")]) == 2
    assert out.read_bytes() == before and not (tmp_path / "b.toml").exists()
