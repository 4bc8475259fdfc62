"""Objectives with state: the multiplier's update rules pinned by hand-computed sequences, state that
survives a checkpoint, every objective through a TRPO step, an Adam step, and a resumed run."""

import csv
import dataclasses
import shutil

import numpy as np
import pytest
import torch
from helpers import tiny_config

from objectives import make_objective
from safemaml.config import MetaOptConfig
from safemaml.engine.metabatch import MetaBatch
from safemaml.engine.metaopt import MetaOptimizer, trpo_step
from safemaml.engine.metastep import MetaData, adapted, meta_loss
from safemaml.runs.train import new_learner, train


def _multipliers(obj, violations):
    out = []
    for v in violations:
        obj.after_meta_step({"violation_rate": v})
        out.append(obj.lam.value)
    return out


def _pid(**gains):
    params = {"kp": 0.0, "ki": 0.0, "kd": 0.0, **gains}
    return make_objective("lagrangian", delta=0.1, update="pid", **params)


def test_pid_proportional_term():
    # errors 0.4, 0.2, -0.05: lambda = max(kp * error, 0)
    assert _multipliers(_pid(kp=2.0), [0.5, 0.3, 0.05]) == pytest.approx([0.8, 0.4, 0.0])


def test_pid_integral_term_with_anti_windup():
    # errors 0.2, -0.1, -0.1, -0.1, 0.1; the integral is clipped at 0 (0.2, 0.1, 0, 0, 0.1), so a new
    # violation acts at once instead of first paying back the windup (without it: 0.2, 0.1, 0, 0, 0)
    assert _multipliers(_pid(ki=1.0), [0.3, 0.0, 0.0, 0.0, 0.2]) == pytest.approx([0.2, 0.1, 0.0, 0.0, 0.1])


def test_pid_derivative_acts_on_rising_violations_only():
    # previous starts at 0: rises 0.5, 0 (a fall), 0.2
    assert _multipliers(_pid(kd=3.0), [0.5, 0.2, 0.4]) == pytest.approx([1.5, 0.0, 0.6])


def test_pid_sum_of_terms_and_lambda_max():
    # kp e + ki I + kd rise for V = 0.3 then 0.6: 0.2 + 0.2 + 0.3 = 0.7, then 0.5 + 0.7 + 0.3 = 1.5 -> 1.2
    obj = make_objective("lagrangian", delta=0.1, update="pid", kp=1.0, ki=1.0, kd=1.0, lambda_max=1.2)
    assert _multipliers(obj, [0.3, 0.6]) == pytest.approx([0.7, 1.2])


def test_dual_ascent_steps_and_clips():
    obj = make_objective("lagrangian", delta=0.1, update="dual", lambda_lr=0.5, multiplier=0.2, lambda_max=0.45)
    # 0.2 + 0.5 * 0.4 = 0.4; + 0.5 * 0.4 = 0.6 -> 0.45; then - 0.05 each: 0.4, 0.35
    assert _multipliers(obj, [0.5, 0.5, 0.0, 0.0]) == pytest.approx([0.4, 0.45, 0.4, 0.35])
    assert _multipliers(obj, [0.0] * 10)[-1] == 0.0  # projected onto lambda >= 0


@pytest.mark.parametrize("update", ["dual", "pid"])
def test_multiplier_state_survives_a_checkpoint(update):
    """A restored objective continues exactly as the original: integral and previous included."""
    params = dict(delta=0.1, update=update, lambda_lr=0.7, kp=0.5, ki=0.8, kd=2.0, multiplier=0.3)
    original = make_objective("lagrangian", **params)
    _multipliers(original, [0.6, 0.4])
    restored = make_objective("lagrangian", **params)
    restored.load_state_dict(original.state_dict())
    later = [0.2, 0.5, 0.05]
    assert _multipliers(restored, later) == _multipliers(original, later)


# ---- every objective through the meta-optimisers, on real nav2d data ---------------------------

OBJECTIVES = [("maml", {}), ("lagrangian", {"multiplier": 5.0}), ("lagrangian", {"multiplier": 5.0, "update": "pid"}),
              ("cvar", {"margin": 5.0}), ("quantile", {"margin": 5.0})]  # margins keep the penalties active


@pytest.fixture(scope="module")
def meta_data():
    cfg = tiny_config()
    learner = new_learner(cfg)
    learner.params = {k: v.double() for k, v in learner.params.items()}
    tasks = learner.pre_sampler.family.sample(cfg.meta_batch_size, np.random.default_rng(0))

    def double(traj):
        return dataclasses.replace(traj, **{f: getattr(traj, f).double() for f in
                                            ("obs", "actions", "rewards", "mask", "log_probs")})

    pre = double(learner.pre_sampler.sample(learner.params, tasks, seed=1))
    pre_adv = learner.advantages(pre)
    fast = {k: v.detach() for k, v in adapted(learner.spec, cfg.adapt, learner.params, pre, pre_adv).items()}
    post = double(learner.post_sampler.sample(fast, tasks, seed=2))
    return learner, cfg, MetaData(pre, post, pre_adv, learner.advantages(post), fast)


def _evaluator(learner, cfg, data, objective):
    def evaluate(theta):
        loss, kl, _ = meta_loss(learner.spec, cfg.adapt, objective, theta, data)
        return loss, kl
    return evaluate


@pytest.mark.parametrize("name,params", OBJECTIVES)
def test_every_objective_takes_a_trpo_and_an_adam_step(meta_data, name, params):
    learner, cfg, data = meta_data
    objective = make_objective(name, **params)
    evaluate = _evaluator(learner, cfg, data, objective)
    maml_loss = _evaluator(learner, cfg, data, make_objective("maml"))(learner.params)[0].item()
    start_loss = evaluate(learner.params)[0].item()
    # value 0 at the sampling parameters: a penalty adds nothing to the loss there, only to its gradient
    assert start_loss == pytest.approx(maml_loss, abs=1e-9)

    new, info = trpo_step(learner.params, evaluate, MetaOptConfig(max_kl=0.01))
    assert info["accepted"] == 1.0
    with torch.no_grad():
        loss, kl = evaluate(new)
    assert loss.item() < start_loss and 0 < kl.item() <= 0.01

    adam = MetaOptimizer(MetaOptConfig(name="adam", lr=1e-4))
    new, _ = adam.step(learner.params, evaluate)
    with torch.no_grad():
        assert evaluate(new)[0].item() < start_loss
    assert adam.state_dict()["steps"] == 1 and adam.state_dict()["adam_state"]


def test_active_penalties_change_the_meta_gradient(meta_data):
    learner, cfg, data = meta_data
    theta = {k: v.detach().requires_grad_(True) for k, v in learner.params.items()}

    def grad(objective):
        loss, _, _ = meta_loss(learner.spec, cfg.adapt, objective, theta, data)
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(theta.values()))])

    base = grad(make_objective("maml"))
    for name, params in OBJECTIVES[1:]:
        assert (grad(make_objective(name, **params)) - base).norm() > 1e-3 * base.norm(), name


# ---- every objective through a checkpoint and a resume --------------------------------------


def _rows(run):
    with (run / "metrics.csv").open() as f:
        return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in csv.DictReader(f)]


@pytest.mark.parametrize("name,params", [("lagrangian", {"multiplier": 1.0, "delta": 0.5}),
                                         ("lagrangian", {"update": "pid", "delta": 0.05, "kd": 1.0}),
                                         ("cvar", {"margin": 1.0}), ("quantile", {"margin": 1.0})])
def test_every_objective_resumes_from_a_checkpoint_as_if_uninterrupted(tmp_path, name, params):
    """Three iterations straight; then the run is set back to its checkpoint after iteration 2 and
    resumed: the third iteration, objective state included, must be reproduced exactly."""
    cfg = tiny_config(iterations=3, checkpoint_every=2, **{"objective.name": name,
                                                            **{f"objective.{k}": v for k, v in params.items()}})
    train(cfg, tmp_path / "full", quiet=True)
    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    shutil.copy(tmp_path / "resumed" / "checkpoints" / "iter_00002.pt", tmp_path / "resumed" / "last.pt")
    train(cfg, tmp_path / "resumed", resume=True, quiet=True)
    full, resumed = _rows(tmp_path / "full"), _rows(tmp_path / "resumed")
    assert len(full) == 3 and full == resumed
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert a["objective"] == b["objective"]
    assert all(torch.equal(a["params"][k], b["params"][k]) for k in a["params"])
    if name == "lagrangian":  # the state moved, so restoring it mattered
        first = torch.load(tmp_path / "full" / "checkpoints" / "iter_00002.pt", weights_only=True)["objective"]
        assert first != make_objective(name, **params).state_dict()


def test_a_resume_from_a_checkpoint_with_unknown_objective_state_is_refused(tmp_path):
    """last.pt whose objective state has a key the run's objective does not know: one line naming the file and
    the key, and the run folder is left as it was."""
    from safemaml.errors import SafeMamlError

    cfg = tiny_config(iterations=1, **{"objective.name": "lagrangian"})
    train(cfg, tmp_path / "run", quiet=True)
    last = tmp_path / "run" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["objective"]["bogus"] = 1.0
    torch.save(ckpt, last)
    before = last.read_bytes(), (tmp_path / "run" / "metrics.csv").read_bytes()
    with pytest.raises(SafeMamlError) as info:
        train(tiny_config(iterations=2, **{"objective.name": "lagrangian"}), tmp_path / "run", resume=True,
              quiet=True)
    message = str(info.value)
    assert message.startswith(f"{last}: objective lagrangian: checkpointed state has unknown key(s) bogus")
    assert "\n" not in message
    assert (last.read_bytes(), (tmp_path / "run" / "metrics.csv").read_bytes()) == before


@pytest.mark.parametrize("name", ["lagrangian", "cvar", "quantile"])
def test_return_scale_fixed_or_automatic(name):
    """A fixed return_scale is used as given; 0 means the MAD of all pairs (numpy's, computed here)."""
    g = torch.Generator().manual_seed(0)
    K, n, m = 3, 5, 4
    pre, post = torch.randn(K, n, generator=g, dtype=torch.float64), torch.randn(K, m, generator=g, dtype=torch.float64)
    ll = torch.zeros(K, m, dtype=torch.float64)
    batch = MetaBatch(pre_returns=pre * 10, post_returns=post * 10, surrogates=torch.zeros(K, dtype=torch.float64),
                      pre_loglik=torch.zeros(K, n), pre_loglik_old=torch.zeros(K, n), post_loglik=ll,
                      post_loglik_old=ll, tasks=torch.zeros(K, 1))
    pairs = (pre[:, :, None] - post[:, None, :]).numpy().ravel() * 10
    def lower_median(x):  # torch.median of an even count: the lower of the two middle values
        return np.sort(x)[(len(x) - 1) // 2]

    mad = lower_median(np.abs(pairs - lower_median(pairs)))
    assert make_objective(name, return_scale=2.5)(batch)[1]["scale"] == 2.5
    assert make_objective(name)(batch)[1]["scale"] == pytest.approx(mad)


def test_score_surrogate_is_the_leave_one_out_weighted_log_likelihood_change():
    """sum_Tj w~_Tj (log p' - log p'_old) over post- and (when given) pre-update trajectories, w~ the
    leave-one-out centred weights written out here; value and gradient."""
    from objectives.penalty import score_surrogate

    g = torch.Generator().manual_seed(2)
    theta = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    post_ll, pre_ll = torch.randn(2, 3, generator=g, dtype=torch.float64), torch.randn(2, 4, generator=g,
                                                                                      dtype=torch.float64)
    batch = MetaBatch(pre_returns=torch.zeros(2, 4), post_returns=torch.zeros(2, 3), surrogates=torch.zeros(2),
                      pre_loglik=pre_ll * theta[0], pre_loglik_old=pre_ll, post_loglik=post_ll * theta[1],
                      post_loglik_old=post_ll, tasks=torch.zeros(2, 1))
    w_post, w_pre = torch.randn(2, 3, generator=g, dtype=torch.float64), torch.randn(2, 4, generator=g,
                                                                                    dtype=torch.float64)

    def centred(w):
        m = w.shape[1]
        return torch.stack([torch.stack([w[t, j] - (w[t].sum() - w[t, j]) / (m - 1) for j in range(m)])
                            for t in range(w.shape[0])])

    expected = ((centred(w_post) * (post_ll * theta[1] - post_ll)).sum()
                + (centred(w_pre) * (pre_ll * theta[0] - pre_ll)).sum())
    got = score_surrogate(batch, w_post, w_pre)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(torch.autograd.grad(got, theta, retain_graph=True)[0],
                               torch.autograd.grad(expected, theta, retain_graph=True)[0])
    assert torch.autograd.grad(score_surrogate(batch, w_post), theta)[0][0] == 0  # no pre weights: no pre term


def test_maml_loss_is_the_mean_surrogate():
    s = torch.tensor([0.5, -1.5, 4.0], dtype=torch.float64)
    z = torch.zeros(3, 2)
    loss, metrics = make_objective("maml")(MetaBatch(z, z, s, z, z, z, z, torch.zeros(3, 1)))
    assert loss.item() == 1.0 and metrics == {"surrogate": 1.0}
