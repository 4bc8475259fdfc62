"""The exact bandit statistics (safemaml.engine.bandit_exact) against the training code and the sampled pipeline.

References: the inner step of safemaml.engine.adapt.adapt_loop on rewards from the real BanditEnv; the
advantages of safemaml.engine.returns; and before/after returns sampled through the Sampler and the
training inner loop (safemaml.runs.evaluate.sample_before_after), compared within stated Monte-Carlo error.
"""

import math

import numpy as np
import torch

from safemaml.config import AdaptConfig, PolicyConfig, TrainConfig
from safemaml.engine.adapt import adapt_loop
from safemaml.engine.bandit_exact import (
    DTYPE,
    InnerStep,
    adapt_rounds,
    advantage_matrix,
    gaussian,
    inner_statistics,
    midpoint_grid,
    task_statistics,
)
from safemaml.engine.policy import PolicySpec, mean_action
from safemaml.engine.returns import advantages
from safemaml.runs.evaluate import sample_before_after
from safemaml.tasks import get_family

FAMILY = get_family("bandit")
H = FAMILY.horizon


def shifted_policy(spec: PolicySpec, seed: int, mean, std) -> dict:
    """A random MLP whose output at the bandit's observation is `mean`, with std `std` (float64)."""
    params = {k: v.to(DTYPE) for k, v in spec.init(seed).items()}
    out = mean_action(spec, params, torch.ones(1, dtype=DTYPE))
    last = f"b{spec.num_layers - 1}"
    params[last] = params[last] + torch.tensor(mean, dtype=DTYPE) - out
    params["log_std"] = torch.log(torch.as_tensor(std, dtype=DTYPE)).expand(spec.act_dim).clone()
    return params


def test_adapt_rounds_is_the_training_inner_step():
    spec = PolicySpec(1, 2, hidden=(16, 16), min_std=0.2)
    inner = InnerStep(AdaptConfig(fast_lr=0.1), 0.99, 1.0, num_traj=5, horizon=H)
    for std in ((0.4, 0.3), (0.1999, 0.5)):  # the second sits below min_std in x: floored, and frozen in x
        params = shifted_policy(spec, 3, [0.2, -0.1], 1.0)
        params["log_std"] = torch.log(torch.tensor(std, dtype=DTYPE))
        goals = torch.tensor([[0.0, 0.0], [0.7, -0.9], [-1.0, 0.4]], dtype=DTYPE)
        eps = torch.randn(3, 5, H, 2, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
        mu, log_std = gaussian(spec, params)
        actions = mu + torch.exp(log_std) * eps
        env = FAMILY.make_env(3 * 5 * H)
        env.set_tasks(goals.numpy().repeat(5 * H, 0))
        rewards = torch.as_tensor(env.step(actions.reshape(-1, 2).numpy())[1]).view(3, 5, H)
        ones = torch.ones(3, 5, H, dtype=DTYPE)
        adv = advantages(ones[..., None], rewards, ones, 0.99, 1.0)
        ref = adapt_loop(spec, inner.adapt, params, ones[..., None], actions, adv, ones)
        ref_mu = mean_action(spec, ref, torch.ones(3, 1, dtype=DTYPE))
        for matrix in (None, advantage_matrix(inner)):
            new_mu, new_log_std = adapt_rounds(spec, inner, params, goals, eps, matrix)
            assert torch.allclose(new_mu, ref_mu, atol=1e-10), (new_mu, ref_mu)
            assert torch.allclose(new_log_std, spec.log_std(ref), atol=1e-12)


def test_advantage_matrix_gives_the_training_advantages():
    inner = InnerStep(AdaptConfig(), 0.95, 0.9, num_traj=4, horizon=H)
    eps = torch.randn(6, 4, H, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    mu, log_std = torch.tensor([0.3, -0.2], dtype=DTYPE), torch.log(torch.tensor([0.5, 0.7], dtype=DTYPE))
    goals = torch.rand(6, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(2))
    slow = inner_statistics(inner, mu, log_std, goals, eps)
    fast = inner_statistics(inner, mu, log_std, goals, eps, advantage_matrix(inner))
    for a, b in zip(slow, fast):
        assert torch.allclose(a, b, atol=1e-10)


def pipeline_comparison(perturb=None, sample_seed=7, exact_seed=0):
    """Closed forms against the sampled pipeline: (max |post mean - exact| / 4.5 se, max |p sampled - p| /
    (4 (se + exact se) + 0.01), exact p_T of the goal at the mean, of the far goal). `perturb` (margin
    measurements, tools/measure_margins.py): multiply the parameters by (1 + 1e-6 N), N seeded by it."""
    cfg = TrainConfig(tasks="bandit", fast_batch_size=10, policy=PolicyConfig(hidden=(16, 16)))
    spec = PolicySpec(1, 2, hidden=(16, 16))
    params = shifted_policy(spec, 0, [0.1, -0.2], 0.3)
    if perturb is not None:
        gen = torch.Generator().manual_seed(perturb)
        params = {k: v * (1 + 1e-6 * torch.randn(v.shape, generator=gen, dtype=v.dtype)) for k, v in params.items()}
    goals = np.array([[0.1, -0.2], [0.4, 0.0], [-0.9, 0.8]])
    inner = InnerStep(cfg.adapt, cfg.gamma, cfg.gae_lambda, cfg.fast_batch_size, H)
    exact = task_statistics(spec, inner, params, goals, rounds=2000, post_draws=4, pre_pool=20000, seed=exact_seed)
    R, n = 200, cfg.fast_batch_size
    pre, _, post = sample_before_after(FAMILY, cfg, {k: v.float() for k, v in params.items()}, goals, n, R,
                                       sample_seed, "cpu")
    post_mean, post_se = post.mean((1, 2)), post.mean(2).std(1) / math.sqrt(R)
    expected_post = exact.post_return  # E_D[J(theta')] = E[G_post]
    post_ratio = (np.abs(post_mean - expected_post) / (4.5 * post_se)).max()  # 2000 exact rounds add ~1/3 se
    pool = pre.reshape(len(goals), -1)  # pre-update returns of all rounds: independent of a round but for 1/R
    wins = (pool[:, None, None, :] <= post[:, :, :, None]).mean(-1)  # [G, R, n]
    per_round = wins.mean(2)
    p_sampled, p_se = per_round.mean(1), per_round.std(1) / math.sqrt(R)
    p_ratio = (np.abs(p_sampled - exact.p) / (4 * (p_se + exact.p_se) + 0.01)).max()
    return float(post_ratio), float(p_ratio), float(exact.p[0]), float(exact.p[2])


def test_exact_statistics_match_the_sampled_pipeline():
    """E[J(theta')] and p_T from closed forms agree with returns sampled through the Sampler, the
    training advantages and inner loop, within 4.5 standard errors (4 plus 0.01 for p_T)."""
    post_ratio, p_ratio, p_at_mean, p_far = pipeline_comparison()
    assert post_ratio <= 1 and p_ratio <= 1, (post_ratio, p_ratio)
    assert p_at_mean < 0.9 < p_far  # the goal at the pre-update mean violates, the far one does not


def test_midpoint_grid_integrates_over_the_task_square():
    grid = midpoint_grid(8)
    assert grid.shape == (64, 2) and np.allclose(grid.mean(0), 0.0)
    assert np.isclose((np.linalg.norm(grid, axis=1) < 0.5).mean() * 4, math.pi / 4, atol=0.1)  # the disc's area
