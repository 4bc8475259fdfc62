"""Bad settings of the engine's building blocks: each is a SafeMamlError whose one line names the
setting, the rule and the value given; each boundary value that is allowed is accepted."""

import re

import pytest

from objectives import make_objective
from safemaml.config import AdaptConfig, MetaOptConfig
from safemaml.engine.policy import PolicySpec
from safemaml.errors import SafeMamlError

BAD = [
    (lambda: AdaptConfig(vectorize="gpu"), "adapt.vectorize must be auto, vmap or loop, got 'gpu'"),
    (lambda: MetaOptConfig(name="sgd"), "unknown meta-optimizer 'sgd'; known: trpo, adam"),
    (lambda: MetaOptConfig(max_kl=0.0), "meta.max_kl must be > 0, got 0.0"),
    (lambda: MetaOptConfig(lr=-1.0), "meta.lr must be > 0, got -1.0"),
    (lambda: MetaOptConfig(ls_backtrack_ratio=0.0), "meta.ls_backtrack_ratio must be > 0, got 0.0"),
    (lambda: MetaOptConfig(fvp_subsample=0.0), "meta.fvp_subsample must be in (0, 1], got 0.0"),
    (lambda: MetaOptConfig(fvp_subsample=1.5), "meta.fvp_subsample must be in (0, 1], got 1.5"),
    (lambda: MetaOptConfig(cg_damping=-1e-3), "meta.cg_damping must be >= 0, cg_iters and ls_max_steps >= 1"),
    (lambda: MetaOptConfig(cg_iters=0), "meta.cg_damping must be >= 0, cg_iters and ls_max_steps >= 1"),
    (lambda: MetaOptConfig(ls_max_steps=0), "meta.cg_damping must be >= 0, cg_iters and ls_max_steps >= 1"),
    (lambda: PolicySpec(2, 2, activation="gelu"), "unknown activation 'gelu'; known: relu, tanh"),
    (lambda: PolicySpec(2, 2, init_std=0.0), "init_std must be > 0 and hidden sizes >= 1"),
    (lambda: PolicySpec(2, 2, hidden=(4, 0)), "init_std must be > 0 and hidden sizes >= 1"),
    (lambda: PolicySpec(2, 2, init_std=0.5, min_std=0.6), "min_std must be in (0, init_std], got 0.6"),
    (lambda: PolicySpec(2, 2, min_std=0.0), "min_std must be in (0, init_std], got 0.0"),
    (lambda: make_objective("maml", beta=1.0), "beta must be in (0, 1), got 1.0"),
    (lambda: make_objective("maml", delta=0.0), "delta must be in (0, 1), got 0.0"),
    (lambda: make_objective("lagrangian", update="pi"), "lagrangian: update must be dual or pid, got 'pi'"),
    (lambda: make_objective("lagrangian", kd=-1.0), "lagrangian: kd must be >= 0, got -1.0"),
    (lambda: make_objective("lagrangian", tau_h=0.0), "lagrangian: tau_h must be > 0, got 0.0"),
    (lambda: make_objective("quantile", bandwidth=0.0), "quantile: bandwidth must be > 0, got 0.0"),
    (lambda: make_objective("cvar", return_scale=-1.0), "return_scale must be >= 0, got -1.0"),
    (lambda: make_objective("cvar", eta=True), "objective 'cvar': eta must be a float, got True"),
    (lambda: make_objective("lagrangian", update=1.0), "objective 'lagrangian': update must be a str, got 1.0"),
]


@pytest.mark.parametrize("make,message", BAD)
def test_bad_settings_name_the_rule_and_the_value(make, message):
    with pytest.raises(SafeMamlError, match=f"^{re.escape(message)}$"):
        make()


def test_boundary_values_that_are_allowed():
    MetaOptConfig(fvp_subsample=1.0, cg_damping=0.0, cg_iters=1, ls_max_steps=1)
    PolicySpec(2, 2, hidden=(1,), init_std=0.5, min_std=0.5)
    PolicySpec(2, 2, hidden=())
    make_objective("lagrangian", kd=0.0, kp=0.0, ki=0.0, lambda_lr=0.0, multiplier=0.0)
    make_objective("cvar", eta=0.0, margin=0.0, return_scale=0.0)
    assert make_objective("cvar", eta=2).eta == 2.0  # an int is accepted for a float
    for vectorize in ("auto", "vmap", "loop"):
        AdaptConfig(vectorize=vectorize)
