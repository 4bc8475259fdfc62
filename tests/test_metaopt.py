import numpy as np
import torch
from helpers import tiny_config

from objectives import make_objective
from safemaml.config import MetaOptConfig
from safemaml.engine.fisher import maml_fvp
from safemaml.engine.metaopt import autograd_fvp, conjugate_gradient, trpo_step
from safemaml.engine.metastep import MetaData, adapted, meta_loss
from safemaml.runs.train import new_learner


def test_conjugate_gradient_solves_spd_system():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = a @ a.T + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: A @ v, b, iters=20)
    torch.testing.assert_close(A @ x, b)


def _meta_data(first_order=False, edit=None, **overrides):
    """A real nav2d meta-batch in float64; `edit(params)` changes the initial parameters in place."""
    cfg = tiny_config(**{"adapt.first_order": first_order, **overrides})
    learner = new_learner(cfg)
    learner.params = {k: v.double() for k, v in learner.params.items()}
    if edit is not None:
        edit(learner.params)
    family = learner.pre_sampler.family
    tasks = family.sample(cfg.meta_batch_size, np.random.default_rng(0))
    pre = learner.pre_sampler.sample(learner.params, tasks, seed=1)
    pre = _double(pre)
    pre_adv = learner.advantages(pre)
    fast = {k: v.detach() for k, v in adapted(learner.spec, cfg.adapt, learner.params, pre, pre_adv).items()}
    post = _double(learner.post_sampler.sample(fast, tasks, seed=2))
    return learner, cfg, MetaData(pre, post, pre_adv, learner.advantages(post), fast)


def _double(traj):
    for f in ("obs", "actions", "rewards", "mask", "log_probs"):
        setattr(traj, f, getattr(traj, f).double())
    return traj


def test_structured_fvp_equals_autograd_double_backward():
    for first_order in (False, True):
        learner, cfg, data = _meta_data(first_order)
        theta = {k: v.detach().requires_grad_(True) for k, v in learner.params.items()}
        _, kl, _ = meta_loss(learner.spec, cfg.adapt, make_objective("maml"), theta, data)
        reference, fast = autograd_fvp(theta, kl), maml_fvp(learner.spec, cfg.adapt, theta, data)
        v = torch.randn(sum(p.numel() for p in theta.values()), generator=torch.Generator().manual_seed(3),
                        dtype=torch.float64)
        expected = reference(v)
        assert expected.norm() > 0
        torch.testing.assert_close(fast(v), expected, atol=1e-9, rtol=1e-7)


def test_trpo_step_improves_the_surrogate_within_the_trust_region():
    learner, cfg, data = _meta_data()
    objective = make_objective("maml")

    def evaluate(theta):
        loss, kl, _ = meta_loss(learner.spec, cfg.adapt, objective, theta, data)
        return loss, kl

    opt = MetaOptConfig(max_kl=0.01)
    new, info = trpo_step(learner.params, evaluate, opt)
    assert info["accepted"] == 1.0
    with torch.no_grad():
        loss, kl = evaluate(new)
    assert loss.item() < info["loss_before"] and 0 < kl.item() <= opt.max_kl


def test_fvp_subsample_uses_the_first_trajectories_of_each_task():
    import dataclasses as dc

    learner, cfg, data = _meta_data()
    theta = {k: v.detach().requires_grad_(True) for k, v in learner.params.items()}
    half = dc.replace(data, pre=_slice(data.pre, 2), post=_slice(data.post, 2), pre_adv=data.pre_adv[:, :2])
    v = torch.randn(sum(p.numel() for p in theta.values()), generator=torch.Generator().manual_seed(4),
                    dtype=torch.float64)
    sub = maml_fvp(learner.spec, cfg.adapt, theta, data, subsample=0.5)(v)
    torch.testing.assert_close(sub, maml_fvp(learner.spec, cfg.adapt, theta, half)(v))
    assert not torch.allclose(sub, maml_fvp(learner.spec, cfg.adapt, theta, data)(v))


def _slice(traj, count):
    import dataclasses as dc

    return dc.replace(traj, **{f: getattr(traj, f)[:, :count] for f in ("obs", "actions", "rewards", "mask",
                                                                         "log_probs")})
