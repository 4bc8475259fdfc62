"""Early-terminated trajectories through returns, adaptation, the meta-loss and the Fisher product,
against per-trajectory references that only ever read the steps taken.

Real nav2d trajectories are cut at random lengths, and every entry after a trajectory's end is
filled with finite garbage: a computation that reads a step not taken, or averages over all H
steps instead of the steps taken, disagrees with the reference.
"""

import dataclasses

import numpy as np
import pytest
import torch
from helpers import pre_batch

from safemaml.config import AdaptConfig
from safemaml.engine.adapt import adapt_loop, adapt_vmap, inner_loss
from safemaml.engine.fisher import maml_fvp
from safemaml.engine.metaopt import autograd_fvp
from safemaml.engine.metastep import MetaData, meta_loss
from safemaml.engine.policy import kl_divergence, log_prob
from safemaml.engine.returns import advantages, discounted_returns, gae
from safemaml.engine.rollout import Trajectories

GAMMA, LAM, LR = 0.9, 0.8, 0.1


def _cut(traj: Trajectories, seed: int) -> Trajectories:
    """Trajectory (k, j) ends after L_kj steps (one per task runs the full horizon); garbage after."""
    K, n, H = traj.rewards.shape
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, H, size=(K, n))
    lengths[:, 0] = H
    mask = torch.tensor(np.arange(H)[None, None, :] < lengths[..., None], dtype=traj.rewards.dtype)
    g = torch.Generator().manual_seed(seed)

    def garbage(x: torch.Tensor) -> torch.Tensor:
        m = mask.view(*mask.shape, *([1] * (x.dim() - 3)))
        return x * m + (1 - m) * (3 + 2 * torch.rand(x.shape, generator=g, dtype=x.dtype))

    return dataclasses.replace(traj, obs=garbage(traj.obs), actions=garbage(traj.actions),
                               rewards=garbage(traj.rewards), log_probs=garbage(traj.log_probs), mask=mask)


@pytest.fixture(scope="module")
def data():
    spec, params, pre, _ = pre_batch(K=3, n=5, seed=0)
    _, _, post, _ = pre_batch(K=3, n=4, seed=1)
    return spec, params, _cut(pre, 10), _cut(post, 11)


def _lengths(mask):
    return mask.sum(-1).long()


def test_returns_and_gae_per_trajectory(data):
    _, _, pre, _ = data
    K, n, H = pre.rewards.shape
    values = torch.randn(K, n, H, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    G = discounted_returns(pre.rewards, pre.mask, GAMMA)
    A = gae(pre.rewards, values, pre.mask, GAMMA, LAM)
    for k in range(K):
        for j in range(n):
            L = int(_lengths(pre.mask)[k, j])
            r, v = pre.rewards[k, j, :L].tolist(), values[k, j, :L].tolist() + [0.0]
            ret, adv, running_g, running_a = [0.0] * L, [0.0] * L, 0.0, 0.0
            for t in reversed(range(L)):
                running_g = r[t] + GAMMA * running_g
                running_a = (r[t] + GAMMA * v[t + 1] - v[t]) + GAMMA * LAM * running_a
                ret[t], adv[t] = running_g, running_a
            torch.testing.assert_close(G[k, j], torch.tensor(ret + [0.0] * (H - L), dtype=torch.float64))
            torch.testing.assert_close(A[k, j], torch.tensor(adv + [0.0] * (H - L), dtype=torch.float64))
    torch.testing.assert_close(pre.returns, torch.tensor(
        [[sum(pre.rewards[k, j, :int(_lengths(pre.mask)[k, j])].tolist()) for j in range(n)] for k in range(K)],
        dtype=torch.float64))


def test_advantages_read_only_the_steps_taken(data):
    """Normalised over each task's steps taken, and equal to the advantages of the same steps with
    the garbage replaced by zeros (what a terminated environment records)."""
    _, _, pre, _ = data
    adv = advantages(pre.obs, pre.rewards, pre.mask, GAMMA, LAM)
    m = pre.mask[..., None]
    clean = advantages(pre.obs * m, pre.rewards * pre.mask, pre.mask, GAMMA, LAM)
    torch.testing.assert_close(adv, clean)
    for k in range(pre.rewards.shape[0]):
        taken = adv[k][pre.mask[k].bool()]
        assert taken.mean().abs() < 1e-9 and taken.std(unbiased=False) == pytest.approx(1.0, abs=1e-6)
    assert (adv * (1 - pre.mask)).abs().max() == 0


def _ref_inner_loss(spec, params, obs, actions, adv, mask):
    """One task: -mean over the steps taken of log pi(a|s) A, on the flat list of those steps."""
    taken = mask.bool()
    return -(log_prob(spec, params, obs[taken], actions[taken]) * adv[taken]).mean()


def _ref_adapt(spec, params, pre, adv, task):
    loss = _ref_inner_loss(spec, params, pre.obs[task], pre.actions[task], adv[task], pre.mask[task])
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    return {k: v - LR * g for (k, v), g in zip(params.items(), grads)}


def _adv(traj):
    return advantages(traj.obs, traj.rewards, traj.mask, GAMMA, LAM)


@pytest.mark.parametrize("adapt_fn", [adapt_loop, adapt_vmap])
def test_inner_loss_and_adaptation_per_trajectory(data, adapt_fn):
    spec, params, pre, _ = data
    adv = _adv(pre)
    theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    for k in range(pre.rewards.shape[0]):
        torch.testing.assert_close(inner_loss(spec, theta, pre.obs[k], pre.actions[k], adv[k], pre.mask[k]),
                                   _ref_inner_loss(spec, theta, pre.obs[k], pre.actions[k], adv[k], pre.mask[k]))
    fast = adapt_fn(spec, AdaptConfig(fast_lr=LR), theta, pre.obs, pre.actions, adv, pre.mask)
    for k in range(pre.rewards.shape[0]):
        ref = _ref_adapt(spec, theta, pre, adv, k)
        for name in ref:
            torch.testing.assert_close(fast[name][k], ref[name])
        # second order: the meta-gradient of a function of theta'_T agrees as well
        probe = sum((v ** 2).sum() for v in ref.values())
        ours = sum((fast[name][k] ** 2).sum() for name in ref)
        for a, b in zip(torch.autograd.grad(ours, list(theta.values()), retain_graph=True),
                        torch.autograd.grad(probe, list(theta.values()), retain_graph=True)):
            torch.testing.assert_close(a, b)


def _ref_meta(spec, theta, data):
    """Per task: surrogate, KL and per-trajectory log-likelihoods over the steps taken only."""
    pre, post, pre_adv, post_adv = data.pre, data.post, data.pre_adv, data.post_adv
    surrogates, kls, post_ll, pre_ll = [], [], [], []
    for k in range(post.rewards.shape[0]):
        new = _ref_adapt(spec, theta, pre, pre_adv, k)
        taken = post.mask[k].bool()
        logp = log_prob(spec, new, post.obs[k][taken], post.actions[k][taken])
        ratio = torch.exp(logp - post.log_probs[k][taken])
        surrogates.append(-(ratio * post_adv[k][taken]).mean())
        old = {name: v[k] for name, v in data.sampling_params.items()}
        kls.append(kl_divergence(spec, old, new, post.obs[k][taken]).mean())
        post_ll.append(torch.stack([log_prob(spec, new, post.obs[k, j][post.mask[k, j].bool()],
                                             post.actions[k, j][post.mask[k, j].bool()]).sum()
                                    for j in range(post.rewards.shape[1])]))
        pre_ll.append(torch.stack([log_prob(spec, theta, pre.obs[k, j][pre.mask[k, j].bool()],
                                            pre.actions[k, j][pre.mask[k, j].bool()]).sum()
                                   for j in range(pre.rewards.shape[1])]))
    return torch.stack(surrogates), torch.stack(kls).mean(), torch.stack(post_ll), torch.stack(pre_ll)


class _Capture:
    """An objective that keeps the MetaBatch it was handed and returns MAML's loss."""

    def __call__(self, batch):
        self.batch = batch
        return batch.surrogates.mean(), {}


def _meta_data(spec, params, pre, post):
    pre_adv = _adv(pre)
    cfg = AdaptConfig(fast_lr=LR)
    fast = {k: v.detach() for k, v in adapt_loop(spec, cfg, params, pre.obs, pre.actions, pre_adv, pre.mask).items()}
    return cfg, MetaData(pre, post, pre_adv, _adv(post), fast)


def _meta_loss_against_reference(spec, cfg, params, md):
    """meta_loss at theta = params, its MetaBatch checked against the per-trajectory reference."""
    theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    capture = _Capture()
    loss, kl, _ = meta_loss(spec, cfg, capture, theta, md)
    surrogates, ref_kl, post_ll, pre_ll = _ref_meta(spec, theta, md)
    torch.testing.assert_close(capture.batch.surrogates, surrogates)
    torch.testing.assert_close(kl, ref_kl)
    torch.testing.assert_close(capture.batch.post_loglik, post_ll)
    return theta, loss, capture.batch, surrogates, ref_kl, pre_ll


def test_meta_loss_and_fisher_product_per_trajectory(data):
    spec, params, pre, post = data
    cfg, md = _meta_data(spec, params, pre, post)
    theta, loss, batch, surrogates, ref_kl, pre_ll = _meta_loss_against_reference(spec, cfg, params, md)
    torch.testing.assert_close(batch.pre_loglik, pre_ll)
    torch.testing.assert_close(batch.post_returns, (post.rewards * post.mask).sum(-1))
    for a, b in zip(torch.autograd.grad(loss, list(theta.values()), retain_graph=True),
                    torch.autograd.grad(surrogates.mean(), list(theta.values()), retain_graph=True)):
        torch.testing.assert_close(a, b)
    # the structured Fisher product against double backward through the per-trajectory reference KL
    reference = autograd_fvp(theta, ref_kl)
    v = torch.randn(sum(p.numel() for p in theta.values()), generator=torch.Generator().manual_seed(5),
                    dtype=torch.float64)
    expected = reference(v)
    assert expected.norm() > 0
    torch.testing.assert_close(maml_fvp(spec, cfg, theta, md)(v), expected, atol=1e-9, rtol=1e-7)


def test_real_nav2d_terminations_through_the_meta_loss_and_fisher_product():
    """Post-update trajectories that really end at the goal (nav2d's termination, at different steps
    per task), sampled by per-task policies a = goal - s with tiny noise, through the same references."""
    from safemaml.engine.policy import PolicySpec
    from safemaml.engine.rollout import Sampler
    from safemaml.tasks import get_family

    spec, params, pre, _ = pre_batch(K=3, n=5, seed=0)
    family = get_family("nav2d")
    goals = np.array([[0.25, 0.0], [-0.42, 0.33], [0.6, -0.61]])
    linear = PolicySpec(2, 2, hidden=())
    steer = {"w0": -torch.eye(2).expand(3, 2, 2), "b0": torch.tensor(goals, dtype=torch.float32),
             "log_std": torch.full((3, 2), float(np.log(1e-3)))}
    real = Sampler(family, linear, 3, 4, horizon=30).sample(steer, goals, seed=5)
    lengths = real.mask.sum(-1)
    assert (lengths < 30).all() and len(set(lengths[:, 0].tolist())) == 3  # every one ended, at its own step
    # the recorded log-probabilities are constants of the meta-loss; -2 per step keeps the importance
    # ratios O(1) (the steering policy's own, ~ +12, would make every ratio vanish)
    post = dataclasses.replace(real, obs=real.obs.double(), actions=real.actions.double(),
                               rewards=real.rewards.double(), mask=real.mask.double(),
                               log_probs=torch.full_like(real.rewards.double(), -2.0), tasks=torch.tensor(goals))
    cfg, md = _meta_data(spec, params, _cut(pre, 10), post)
    theta, _, _, _, ref_kl, _ = _meta_loss_against_reference(spec, cfg, params, md)
    v = torch.randn(sum(p.numel() for p in theta.values()), generator=torch.Generator().manual_seed(6),
                    dtype=torch.float64)
    torch.testing.assert_close(maml_fvp(spec, cfg, theta, md)(v), autograd_fvp(theta, ref_kl)(v),
                               atol=1e-9, rtol=1e-7)
