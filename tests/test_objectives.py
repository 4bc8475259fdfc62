"""The objective contract, for every registered objective, plus plug-ins and multiplier dynamics."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import optuna
import pytest
import torch

from objectives import available, make_objective
from objectives.base import Objective, register
from objectives.maml import Maml
from safemaml.engine.metabatch import MetaBatch
from safemaml.errors import SafeMamlError

BUILT_IN = {"maml", "lagrangian", "cvar", "quantile"}


def _batch(K=5, n=6, m=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    post_ll = torch.randn(K, m, generator=g, dtype=torch.float64) + theta.sum()
    pre_ll = torch.randn(K, n, generator=g, dtype=torch.float64) + theta[0]
    batch = MetaBatch(pre_returns=torch.randn(K, n, generator=g, dtype=torch.float64) * 5,
                      post_returns=torch.randn(K, m, generator=g, dtype=torch.float64) * 5,
                      surrogates=(theta ** 2).sum() * torch.ones(K, dtype=torch.float64),
                      pre_loglik=pre_ll, pre_loglik_old=pre_ll.detach(),
                      post_loglik=post_ll, post_loglik_old=post_ll.detach(), tasks=torch.zeros(K, 1))
    return theta, batch


def test_built_ins_are_registered():
    assert BUILT_IN <= set(available())


@pytest.mark.parametrize("name", sorted(available()))
def test_objective_contract(name, tmp_path):
    cls = available()[name]
    assert cls.name == name and cls.description and {"beta", "delta"} <= set(cls.parameters())
    objective = make_objective(name, beta=0.2, delta=0.3)
    theta, batch = _batch()
    loss, metrics = objective(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    (grad,) = torch.autograd.grad(loss, theta)
    assert torch.isfinite(grad).all()
    assert all(isinstance(v, float) for v in metrics.values())
    objective.after_meta_step({"violation_rate": 0.5, **metrics})
    restored = make_objective(name, beta=0.2, delta=0.3)
    restored.load_state_dict(objective.state_dict())
    # a restored objective behaves as the original: same loss and gradient on a new batch
    theta2, batch2 = _batch(seed=1)
    (loss_a, _), (loss_b, _) = objective(batch2), restored(batch2)
    assert torch.equal(loss_a, loss_b)
    # its search space, drawn by a real Optuna trial on an SQLite storage, builds a valid objective
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name=name)
    params = cls.search_space(study.ask())
    assert set(params) <= set(cls.parameters())
    # beta, delta do not change MAML's training: maml (and a test objective built on it) searches nothing
    assert {"beta", "delta"} <= set(params) or issubclass(cls, Maml)
    make_objective(name, **params)


@pytest.mark.parametrize("params,message", [({"beta": 0.0}, "beta"), ({"delta": 1.0}, "delta"),
                                            ({"eta": -1.0}, "eta"), ({"nope": 1}, "no parameter"),
                                            ({"aim": "sideways"}, "aim must be tail or neutral")])
def test_bad_parameters_are_errors(params, message):
    with pytest.raises(SafeMamlError, match=message):
        make_objective("cvar", **params)


def test_unknown_objective_and_duplicate_names():
    with pytest.raises(SafeMamlError, match="unknown objective"):
        make_objective("cvar2")
    with pytest.raises(SafeMamlError, match="duplicate objective name 'cvar'"):
        @register
        @dataclasses.dataclass
        class Another(available()["maml"]):
            name = "cvar"


@pytest.mark.parametrize("update", ["dual", "pid"])
def test_multiplier_rises_while_violated_and_returns_to_zero(update):
    obj = make_objective("lagrangian", delta=0.1, update=update, lambda_lr=0.5, kp=0.5, ki=0.5)
    trace = []
    for violation in [0.6] * 5 + [0.0] * 40:
        obj.after_meta_step({"violation_rate": violation})
        trace.append(obj.lam.value)
    rising, falling = trace[:5], trace[5:]
    assert all(b > a for a, b in zip(rising, rising[1:])) and rising[0] > 0
    assert all(b <= a for a, b in zip(falling, falling[1:]))
    assert falling[-1] == 0.0


def _plugin(tmp_path, entry="half-maml"):
    """A throw-away distribution in tmp_path whose entry point `entry` registers the objective half-maml."""
    (tmp_path / "myobjective.py").write_text(textwrap.dedent('''
        import dataclasses
        from objectives.base import Objective

        @dataclasses.dataclass
        class HalfMaml(Objective):
            name = "half-maml"
            description = "half of MAML's loss (a plug-in for tests)"
            weight: float = 0.5

            def __call__(self, batch):
                return self.weight * batch.surrogates.mean(), {}
    '''))
    dist = tmp_path / "myobjective-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myobjective\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[safemaml.objectives]\n{entry} = myobjective:HalfMaml\n")


def test_plugin_is_loaded_once_in_process(tmp_path, monkeypatch):
    """The entry point is read from sys.path when the registry is first used, and only then."""
    import objectives.base as base

    _plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(base, "_loaded", False)
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    registry = available()
    assert registry["half-maml"].__module__ == "myobjective" and base._loaded is True
    assert make_objective("half-maml", weight=0.25).weight == 0.25
    base._REGISTRY.pop("half-maml")
    assert "half-maml" not in available()  # loaded once: the entry points are not read again


def test_a_plugin_taking_a_built_in_name_is_refused(tmp_path, monkeypatch):
    import objectives.base as base

    _plugin(tmp_path, entry="cvar")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(base, "_loaded", False)
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    with pytest.raises(SafeMamlError, match=r"^duplicate objective name 'cvar' from entry point myobjective:HalfMaml$"):
        available()


def test_plugin_installed_through_the_entry_point(tmp_path):
    """A throw-away distribution on sys.path registers an objective via `safemaml.objectives`."""
    _plugin(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    listing = subprocess.run([sys.executable, "-m", "safemaml", "objectives"], capture_output=True, text=True, env=env)
    assert listing.returncode == 0, listing.stderr
    assert "half-maml: half of MAML's loss" in listing.stdout and "weight=0.5" in listing.stdout
    check = subprocess.run([sys.executable, "-c", textwrap.dedent('''
        import torch
        from objectives import make_objective
        from safemaml.engine.metabatch import MetaBatch
        obj = make_objective("half-maml", weight=0.25)
        z = torch.zeros(2, 3)
        b = MetaBatch(z, z, torch.tensor([4.0, 8.0]), z, z, z, z, torch.zeros(2, 1))
        print(obj(b)[0].item())
    ''')], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stderr
    assert float(check.stdout) == 1.5


@pytest.mark.parametrize("name", ["lagrangian", "cvar", "quantile"])
def test_pre_update_gradient_only_when_asked(name):
    """pre_update_grad = false (the default) keeps the penalty off pi_theta's own trajectories."""
    params = {"multiplier": 5.0} if name == "lagrangian" else {}
    grads = {}
    for flag in (False, True):
        theta, batch = _batch(seed=4)
        # make the penalty active: adaptation makes every task worse
        batch = dataclasses.replace(batch, post_returns=batch.post_returns - 50.0)
        pre_only = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        batch.pre_loglik = batch.pre_loglik + pre_only[1] * torch.arange(batch.pre_loglik.shape[1])
        loss, _ = make_objective(name, pre_update_grad=flag, **params)(batch)
        (grad,) = torch.autograd.grad(loss, pre_only, allow_unused=True)
        grads[flag] = 0.0 if grad is None else grad[1].item()
    assert grads[False] == 0.0 and grads[True] != 0.0


def test_register_adds_a_new_objective_and_refuses_a_nameless_one():
    import objectives.base as base

    @dataclasses.dataclass
    class Tail(available()["maml"]):
        name = "test-tail"

    try:
        assert register(Tail) is Tail and register(Tail) is Tail  # registering the same class twice is harmless
        assert available()["test-tail"] is Tail and isinstance(make_objective("test-tail"), Tail)
    finally:
        base._REGISTRY.pop("test-tail", None)

    @dataclasses.dataclass
    class Nameless(Objective):
        pass

    with pytest.raises(SafeMamlError, match="objective .*Nameless has no name"):
        register(Nameless)
    assert all(cls is not Nameless for cls in available().values())


def test_the_contract_is_abstract_and_a_plugin_without_a_loss_is_refused():
    """Objective.__call__ is abstract: the base cannot be built, and registering a class that does not
    implement it is a one-line error at registration, not a TypeError when a run starts."""
    with pytest.raises(TypeError, match="abstract"):
        Objective()

    @dataclasses.dataclass
    class NoLoss(Objective):
        name = "test-no-loss"
        description = "forgot __call__"

    with pytest.raises(SafeMamlError, match=r"^objective 'test-no-loss' \(.*NoLoss\) does not implement __call__$"):
        register(NoLoss)
    assert "test-no-loss" not in available()


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_load_state_dict_refuses_unknown_and_missing_keys(name):
    """A checkpoint written by another objective (or a typo in a hand-made state) is refused in one line,
    and nothing of it is set."""
    objective = make_objective(name)
    good = objective.state_dict()
    with pytest.raises(SafeMamlError) as info:
        objective.load_state_dict({**good, "bogus": 1.0})
    assert str(info.value).startswith(f"objective {name}: checkpointed state has unknown key(s) bogus")
    assert "\n" not in str(info.value) and not hasattr(objective, "bogus")
    assert objective.state_dict() == good
    for key in good:  # every key the objective keeps is needed
        with pytest.raises(SafeMamlError, match=f"missing key\\(s\\) {key}"):
            objective.load_state_dict({k: v for k, v in good.items() if k != key})


def test_state_fields_start_at_zero_and_are_not_parameters():
    """`state()` marks a field as state: it starts at its default (0 unless given), the CLI and studies cannot set
    it (not a parameter), and the base class's state_dict/load_state_dict carry it (as a float)."""
    from objectives.base import state

    @dataclasses.dataclass
    class Counter(Maml):
        name = "test-counter"
        steps: float = state()
        level: float = state(2.5)

        def after_meta_step(self, metrics):
            self.steps += 1

    assert Counter.parameters() == {"beta": 0.1, "delta": 0.1}
    counter = Counter()
    assert counter.state_dict() == {"steps": 0.0, "level": 2.5}
    counter.after_meta_step({})
    restored = Counter()
    restored.load_state_dict(counter.state_dict())
    assert restored.steps == 1.0 and isinstance(restored.steps, float) and restored.level == 2.5


def test_the_multiplier_state_is_not_a_parameter():
    """lambda_0 (`multiplier`) is a parameter; the running lambda and the PID's integral and previous violation
    are the multiplier component's state: the CLI and studies cannot set them, and they travel in state_dict
    (under keys that are not the parameters' names)."""
    lagrangian = make_objective("lagrangian", update="pid", multiplier=0.3)
    params = available()["lagrangian"].parameters()
    assert "multiplier" in params and not {"lam", "integral", "previous", "value"} & set(params)
    for name in ("integral", "previous", "lam"):
        with pytest.raises(SafeMamlError, match="no parameter"):
            make_objective("lagrangian", **{name: 1.0})
    assert lagrangian.state_dict() == {"lambda.value": 0.3, "lambda.integral": 0.3, "lambda.previous": 0.0}
    lagrangian.after_meta_step({"violation_rate": 0.5})
    assert lagrangian.multiplier == 0.3 and lagrangian.lam.initial == 0.3  # lambda_0 stays what was given
    assert make_objective("lagrangian", update="dual").state_dict() == {"lambda.value": 0.0}


@pytest.mark.parametrize("name,param,value,message", [
    *[("lagrangian", p, -0.1, f"{p} must be >= 0") for p in ("multiplier", "lambda_lr", "kp", "ki", "kd")],
    *[("lagrangian", p, 0.0, f"{p} must be > 0") for p in ("lambda_max", "tau", "tau_h")],
    *[("cvar", p, -0.1, f"{p} must be >= 0") for p in ("eta", "margin")],
    *[("quantile", p, -0.1, f"{p} must be >= 0") for p in ("eta", "margin")],
    *[("quantile", p, 0.0, f"{p} must be > 0") for p in ("bandwidth", "temperature")],
])
def test_each_parameter_is_range_checked(name, param, value, message):
    with pytest.raises(SafeMamlError, match=message):
        make_objective(name, **{param: value})


def test_lagrangian_reports_its_metrics_under_their_documented_names():
    theta, batch = _batch()
    objective = make_objective("lagrangian", multiplier=0.7)
    _, metrics = objective(batch)
    assert set(metrics) == {"surrogate", "smoothed_violation", "multiplier", "scale"}
    assert metrics["multiplier"] == 0.7 and metrics["surrogate"] == pytest.approx(batch.surrogates.mean().item())
    assert 0.0 <= metrics["smoothed_violation"] <= 1.0 and metrics["scale"] > 0



def test_error_messages_list_names_with_commas():
    with pytest.raises(SafeMamlError, match=r"unknown objective 'x'; known: cvar, lagrangian, maml, quantile"):
        make_objective("x")
    with pytest.raises(SafeMamlError, match=r"has no parameter\(s\) a, b; it has: beta, delta$"):
        make_objective("maml", a=1, b=2)
