import pytest
import torch
from helpers import pre_batch

from safemaml.config import AdaptConfig
from safemaml.engine.adapt import adapt_loop, adapt_vmap, inner_loss
from safemaml.engine.policy import log_prob
from safemaml.errors import SafeMamlError


def _post_loss(spec, fast, traj):
    K, n, H = traj.rewards.shape
    logp = log_prob(spec, fast, traj.obs.view(K, n * H, -1), traj.actions.view(K, n * H, -1))
    return -(logp.view(K, n, H) * traj.rewards * traj.mask).sum() / traj.mask.sum()


@pytest.mark.parametrize("cfg", [AdaptConfig(), AdaptConfig(num_steps=2, fast_lr=0.05), AdaptConfig(first_order=True)])
def test_vmap_equals_per_task_loop(cfg):
    spec, params, traj, adv = pre_batch()
    results = []
    for fn in (adapt_vmap, adapt_loop):
        theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        fast = fn(spec, cfg, theta, traj.obs, traj.actions, adv, traj.mask)
        grads = torch.autograd.grad(_post_loss(spec, fast, traj), list(theta.values()))
        results.append((fast, grads))
    (fa, ga), (fb, gb) = results
    for k in fa:
        torch.testing.assert_close(fa[k], fb[k], atol=1e-6, rtol=0)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_inner_step_lowers_the_inner_loss():
    spec, params, traj, adv = pre_batch()
    fast = adapt_vmap(spec, AdaptConfig(fast_lr=0.01), params, traj.obs, traj.actions, adv, traj.mask)
    for k in range(traj.obs.shape[0]):
        before = inner_loss(spec, params, traj.obs[k], traj.actions[k], adv[k], traj.mask[k])
        after = inner_loss(spec, {n: v[k] for n, v in fast.items()}, traj.obs[k], traj.actions[k], adv[k], traj.mask[k])
        assert after < before


def test_meta_gradient_is_connected_and_second_order():
    spec, params, traj, adv = pre_batch()
    grads = {}
    for first_order in (False, True):
        theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        fast = adapt_vmap(spec, AdaptConfig(first_order=first_order), theta, traj.obs, traj.actions, adv, traj.mask)
        grads[first_order] = torch.autograd.grad(_post_loss(spec, fast, traj), list(theta.values()))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads[False])
    # the second-order terms matter: first-order MAML gives a different meta-gradient
    assert max((a - b).abs().max().item() for a, b in zip(grads[False], grads[True])) > 1e-6


def test_adaptation_moves_each_task_differently():
    spec, params, traj, adv = pre_batch(K=3)
    fast = adapt_vmap(spec, AdaptConfig(), params, traj.obs, traj.actions, adv, traj.mask)
    assert fast["w0"].shape == (3, *params["w0"].shape)
    assert not torch.allclose(fast["w2"][0], fast["w2"][1])


@pytest.mark.parametrize("alpha", [0.0, -0.1])
def test_the_inner_step_size_must_be_positive(alpha):
    with pytest.raises(SafeMamlError, match=f"adapt.fast_lr must be > 0, got {alpha}"):
        AdaptConfig(fast_lr=alpha)
