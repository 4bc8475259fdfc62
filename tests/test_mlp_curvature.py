"""The hand-written curvature products (safemaml/mlp_curvature.py, meta.curvature = "analytic") against
autograd: the full TRPO product against double backward through the adaptation, each piece against the
Hessian of its own loss, the activations' derivatives against torch.func."""

import math

import pytest
import torch
from test_metaopt import _meta_data, _slice

from objectives import make_objective
from safemaml.engine.adapt import inner_loss
from safemaml.engine.curvature import make_fvp
from safemaml.engine.metaopt import autograd_fvp
from safemaml.engine.metastep import meta_loss
from safemaml.engine.mlp_curvature import DERIVATIVES, inner_hessian, record
from safemaml.engine.policy import ACTIVATIONS, PolicySpec
from safemaml.errors import SafeMamlError


def _vector(theta, seed):
    return torch.randn(sum(p.numel() for p in theta.values()), generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def _double_backward_product(learner, cfg, data, v):
    theta = {k: p.detach().requires_grad_(True) for k, p in learner.params.items()}
    _, kl, _ = meta_loss(learner.spec, cfg.adapt, make_objective("maml"), theta, data)
    return autograd_fvp(theta, kl)(v)


def _floor_one_std(params):
    params["log_std"][1] = math.log(0.01)  # below min_std = 0.05: the floor binds on that coordinate


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("first_order", [False, True])
def test_analytic_equals_double_backward_through_the_adaptation(activation, first_order):
    learner, cfg, data = _meta_data(first_order, **{"policy.activation": activation})
    v = _vector(learner.params, 3)
    expected = _double_backward_product(learner, cfg, data, v)
    assert expected.norm() > 0
    got = make_fvp("analytic", learner.spec, cfg.adapt, learner.params, data)(v)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("overrides, edit", [({"policy.learn_std": False}, None),
                                             ({"policy.min_std": 0.05}, _floor_one_std)])
def test_analytic_handles_a_fixed_or_floored_std(overrides, edit):
    learner, cfg, data = _meta_data(edit=edit, **overrides)
    v = _vector(learner.params, 4)
    expected = _double_backward_product(learner, cfg, data, v)
    got = make_fvp("analytic", learner.spec, cfg.adapt, learner.params, data)(v)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)
    std = got[-learner.spec.act_dim:]
    assert (std == 0).all() if edit is None else (std[1] == 0 and std[0] != 0)


def test_analytic_subsample_is_the_exact_product_on_the_subsample():
    learner, cfg, data = _meta_data()
    v = _vector(learner.params, 5)
    half = type(data)(_slice(data.pre, 2), _slice(data.post, 2), data.pre_adv[:, :2], data.post_adv[:, :2],
                      data.sampling_params)
    sub = make_fvp("analytic", learner.spec, cfg.adapt, learner.params, data, subsample=0.5)(v)
    # the structured product (itself tested against double backward) on the first half of the trajectories;
    # double backward does not apply there: half the data re-adapts away from the policies that sampled it
    expected = make_fvp("exact", learner.spec, cfg.adapt, learner.params, half)(v)
    torch.testing.assert_close(sub, expected, atol=1e-10, rtol=1e-8)
    assert not torch.allclose(sub, make_fvp("exact", learner.spec, cfg.adapt, learner.params, data)(v))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_inner_hessian_is_the_hessian_of_each_tasks_inner_loss(activation):
    """Per task and per-task directions: H_T u_T against double backward of that task's loss alone."""
    learner, cfg, data = _meta_data(**{"policy.activation": activation})
    spec, theta, pre = learner.spec, learner.params, data.pre
    K, n, H = pre.rewards.shape
    tape = record(spec, theta, pre.obs.reshape(K, n * H, -1))
    product = inner_hessian(tape, pre.actions.reshape(K, n * H, -1), data.pre_adv.reshape(K, -1),
                            pre.mask.reshape(K, -1))
    g = torch.Generator().manual_seed(6)
    u = {k: torch.randn(K, *p.shape, generator=g, dtype=torch.float64) for k, p in theta.items()}
    got = product(u)
    for task in range(K):
        leaves = {k: p.detach().requires_grad_(True) for k, p in theta.items()}
        loss = inner_loss(spec, leaves, pre.obs[task], pre.actions[task], data.pre_adv[task], pre.mask[task])
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True)
        dot = sum((gr * u[k][task]).sum() for gr, k in zip(grads, leaves))
        for k, expected in zip(leaves, torch.autograd.grad(dot, list(leaves.values()))):
            torch.testing.assert_close(got[k][task], expected, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_has_its_value_slope_and_bend(name):
    z = torch.linspace(-3, 3, 61, dtype=torch.float64) + 0.025  # avoids relu's kink at 0
    value, slope, bend = DERIVATIVES[name](z)
    first = torch.func.vmap(torch.func.grad(ACTIVATIONS[name]))(z)
    second = torch.func.vmap(torch.func.grad(torch.func.grad(ACTIVATIONS[name])))(z)
    torch.testing.assert_close(value, ACTIVATIONS[name](z))
    torch.testing.assert_close(slope, first)
    torch.testing.assert_close(torch.zeros_like(z) if bend is None else bend, second)


def test_an_activation_without_derivatives_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(ACTIVATIONS, "softplus", torch.nn.functional.softplus)
    spec = PolicySpec(2, 2, hidden=(4,), activation="softplus")
    with pytest.raises(SafeMamlError, match="no derivatives for activation 'softplus'.*meta.curvature = 'exact'"):
        record(spec, spec.init(0), torch.zeros(1, 3, 2))


def _synthetic(hidden, activation, seed=0):
    """Random float64 meta-batch of K = 3 tasks: episodes that end at random steps, one task with no step
    at all before adaptation, and the adapted policies that sampled the post-update data."""
    from safemaml.config import AdaptConfig
    from safemaml.engine.adapt import adapt_loop
    from safemaml.engine.metastep import MetaData
    from safemaml.engine.rollout import Trajectories

    g = torch.Generator().manual_seed(seed)
    K, n, H, O, A = 3, 4, 6, 5, 2
    spec = PolicySpec(O, A, hidden=hidden, activation=activation, init_std=0.7)
    theta = {k: v.double() + 0.1 * torch.randn(v.shape, generator=g, dtype=torch.float64)
             for k, v in spec.init(seed).items()}

    def phase():
        ends = torch.randint(1, H + 1, (K, n, 1), generator=g)
        mask = (torch.arange(H).expand(K, n, H) < ends).double()
        return Trajectories(torch.randn(K, n, H, O, generator=g, dtype=torch.float64),
                            torch.randn(K, n, H, A, generator=g, dtype=torch.float64),
                            torch.randn(K, n, H, generator=g, dtype=torch.float64), mask,
                            torch.zeros(K, n, H, dtype=torch.float64), torch.zeros(K, 1, dtype=torch.float64))

    pre, post = phase(), phase()
    pre.mask[1] = 0.0  # a task without a single step before adaptation
    adv = torch.randn(K, n, H, generator=g, dtype=torch.float64)
    cfg = AdaptConfig(fast_lr=0.3, vectorize="loop")
    fast = adapt_loop(spec, cfg, theta, pre.obs, pre.actions, adv, pre.mask)
    return spec, cfg, theta, MetaData(pre, post, adv, adv, fast)


@pytest.mark.parametrize("hidden, activation", [((), "relu"), ((5,), "tanh"), ((4, 3, 5), "relu"),
                                                ((4, 3, 5), "tanh")])
def test_analytic_at_any_depth_with_ragged_and_empty_episodes(hidden, activation):
    """Reference: the mean KL of the adapted policies written with adapt_loop and kl_divergence, Hessian by
    double backward; independent of safemaml/fisher.py."""
    from safemaml.engine.adapt import adapt_loop
    from safemaml.engine.policy import kl_divergence

    spec, cfg, theta, data = _synthetic(hidden, activation)
    leaves = {k: v.detach().requires_grad_(True) for k, v in theta.items()}
    adapted = adapt_loop(spec, cfg, leaves, data.pre.obs, data.pre.actions, data.pre_adv, data.pre.mask)
    K, m, H = data.post.rewards.shape
    per_step = kl_divergence(spec, data.sampling_params, adapted, data.post.obs.view(K, m * H, -1)).view(K, m, H)
    kl = ((per_step * data.post.mask).sum((1, 2)) / data.post.mask.sum((1, 2)).clamp_min(1.0)).mean()
    v = _vector(theta, 8)
    expected = autograd_fvp(leaves, kl)(v)
    got = make_fvp("analytic", spec, cfg, theta, data)(v)
    assert expected.norm() > 0
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=1e-8)
