"""The cheaper TRPO curvatures (safemaml/curvature.py) against slow references: autograd double
backward through the adaptation, and the KL of torch.distributions differentiated twice."""

import dataclasses

import pytest
import torch
from test_metaopt import _meta_data, _slice

from objectives import make_objective
from safemaml.config import MetaOptConfig
from safemaml.engine.curvature import gaussian_kl_fisher, make_fvp
from safemaml.engine.metaopt import autograd_fvp, trpo_step
from safemaml.engine.metastep import adapted, meta_loss
from safemaml.engine.policy import mean_action
from safemaml.errors import SafeMamlError


def _vector(theta, seed):
    return torch.randn(sum(p.numel() for p in theta.values()), generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


@pytest.mark.parametrize("first_order", [False, True])
def test_gauss_newton_equals_autograd_double_backward(first_order):
    learner, cfg, data = _meta_data(first_order)
    theta = {k: v.detach().requires_grad_(True) for k, v in learner.params.items()}
    _, kl, _ = meta_loss(learner.spec, cfg.adapt, make_objective("maml"), theta, data)
    v = _vector(theta, 3)
    expected = autograd_fvp(theta, kl)(v)
    assert expected.norm() > 0
    fast = make_fvp("gauss-newton", learner.spec, cfg.adapt, theta, data)(v)
    torch.testing.assert_close(fast, expected, atol=1e-9, rtol=1e-7)


def test_gauss_newton_subsample_equals_the_exact_product_on_the_subsample():
    learner, cfg, data = _meta_data()
    theta = {k: v.detach().requires_grad_(True) for k, v in learner.params.items()}
    v = _vector(theta, 4)
    half = dataclasses.replace(data, pre=_slice(data.pre, 2), post=_slice(data.post, 2), pre_adv=data.pre_adv[:, :2])
    sub = make_fvp("gauss-newton", learner.spec, cfg.adapt, theta, data, subsample=0.5)(v)
    torch.testing.assert_close(sub, make_fvp("exact", learner.spec, cfg.adapt, theta, half)(v), atol=1e-9, rtol=1e-7)
    assert not torch.allclose(sub, make_fvp("exact", learner.spec, cfg.adapt, theta, data)(v))


def _distribution_kl_hvp(spec, old, obs, mask, u):
    """Reference: the mean over tasks of the masked mean of torch.distributions' KL, Hessian in the
    adapted parameters by double backward."""
    new = {k: v.detach().clone().requires_grad_(True) for k, v in old.items()}

    def normal(p):
        mean = mean_action(spec, p, obs)
        std = torch.exp(spec.log_std(p)).unsqueeze(1).expand_as(mean)
        return torch.distributions.Normal(mean, std)

    per_step = torch.distributions.kl_divergence(normal({k: v.detach() for k, v in old.items()}), normal(new)).sum(-1)
    kl = ((per_step * mask).sum(1) / mask.sum(1).clamp_min(1.0)).mean()
    grads = torch.autograd.grad(kl, list(new.values()), create_graph=True)
    dot = sum((g * u[k]).sum() for g, k in zip(grads, new))
    return dict(zip(new, torch.autograd.grad(dot, list(new.values()))))


def test_gaussian_fisher_equals_the_hessian_of_torch_distributions_kl():
    learner, cfg, data = _meta_data()
    spec = dataclasses.replace(learner.spec, min_std=0.05)
    old = dict(data.sampling_params)
    old["log_std"] = old["log_std"].clone()
    old["log_std"][0, 0] = -5.0  # below log(min_std): that coordinate has no curvature
    K, m, H = data.post.rewards.shape
    obs, mask = data.post.obs.view(K, m * H, -1), data.post.mask.view(K, m * H)
    g = torch.Generator().manual_seed(5)
    u = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in old.items()}
    expected = _distribution_kl_hvp(spec, old, obs, mask, u)
    got = gaussian_kl_fisher(spec, old, obs, mask)(u)
    assert expected["log_std"][0, 0] == 0 and expected["log_std"][1, 0] != 0
    for k in old:
        torch.testing.assert_close(got[k], expected[k], atol=1e-10, rtol=1e-7)


def test_adapted_fisher_is_the_fisher_at_the_adapted_policies_summed_over_tasks():
    learner, cfg, data = _meta_data()
    theta = {k: v.detach().requires_grad_(True) for k, v in learner.params.items()}
    v = _vector(theta, 6)
    K, m, H = data.post.rewards.shape
    u = {k: p.view_as(theta[k]).unsqueeze(0).expand(K, *theta[k].shape)
         for k, p in zip(theta, torch.split(v, [p.numel() for p in theta.values()]))}
    per_task = _distribution_kl_hvp(learner.spec, data.sampling_params, data.post.obs.view(K, m * H, -1),
                                    data.post.mask.view(K, m * H), u)
    expected = torch.cat([per_task[k].sum(0).reshape(-1) for k in theta])
    got = make_fvp("adapted-fisher", learner.spec, cfg.adapt, theta, data)(v)
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=1e-7)
    exact = make_fvp("exact", learner.spec, cfg.adapt, theta, data)(v)
    assert not torch.allclose(got, exact)  # an approximation: J_T = I is dropped


def test_line_search_enforces_the_exact_kl_whatever_the_curvature():
    """A curvature 1000x too small proposes a step ~30x too long; the line search must still
    return a step whose exact KL is within the bound and whose exact loss improves."""
    learner, cfg, data = _meta_data()
    objective = make_objective("maml")

    def evaluate(theta):
        loss, kl, _ = meta_loss(learner.spec, cfg.adapt, objective, theta, data)
        return loss, kl

    def weak(theta):
        product = make_fvp("adapted-fisher", learner.spec, cfg.adapt, theta, data)
        return lambda v: 1e-3 * product(v)

    opt = MetaOptConfig(max_kl=0.01, ls_max_steps=40)
    new, info = trpo_step(learner.params, evaluate, opt, weak)
    assert info["accepted"] == 1.0 and info["ls_steps"] > 5
    with torch.no_grad():
        loss, kl = evaluate(new)
    assert loss.item() < info["loss_before"] and 0 < kl.item() <= opt.max_kl


def test_unknown_curvature_is_a_clear_error():
    with pytest.raises(SafeMamlError, match="meta.curvature"):
        MetaOptConfig(curvature="diagonal")


def test_meta_loss_reuses_the_sampling_means_without_going_stale():
    """meta_loss computes the sampling policies' means once per MetaData; at every theta its KL must
    still equal torch.distributions' KL between the sampling and the re-adapted policies."""
    learner, cfg, data = _meta_data()
    objective = make_objective("maml")
    K, m, H = data.post.rewards.shape
    obs, mask = data.post.obs.view(K, m * H, -1), data.post.mask
    g = torch.Generator().manual_seed(7)
    for scale in (0.0, 0.05, 0.2):
        theta = {k: v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in learner.params.items()}
        with torch.no_grad():
            _, kl, _ = meta_loss(learner.spec, cfg.adapt, objective, theta, data)
            new = adapted(learner.spec, cfg.adapt, theta, data.pre, data.pre_adv)
            old, new_mean = data.sampling_params, mean_action(learner.spec, new, obs)
            old_mean = mean_action(learner.spec, old, obs)
            std = lambda p, mu: torch.exp(learner.spec.log_std(p)).unsqueeze(1).expand_as(mu)  # noqa: E731
            per_step = torch.distributions.kl_divergence(torch.distributions.Normal(old_mean, std(old, old_mean)),
                                                         torch.distributions.Normal(new_mean, std(new, new_mean)))
            per_step = per_step.sum(-1)
        expected = ((per_step.view(K, m, H) * mask).sum((1, 2)) / mask.sum((1, 2))).mean()
        torch.testing.assert_close(kl, expected, atol=1e-12, rtol=1e-9)
        assert (kl > 1e-6) == (scale > 0)
