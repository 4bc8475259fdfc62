import gymnasium as gym
import numpy as np
import pytest
import torch

from safemaml.engine.policy import PolicySpec, log_prob, mean_action
from safemaml.engine.rollout import Sampler
from safemaml.tasks import get_family


def _sampler(name, K=3, n=2, horizon=None):
    family = get_family(name)
    spec = PolicySpec(family.obs_dim, family.act_dim)
    return family, spec, Sampler(family, spec, K, n, horizon=horizon)


def test_collector_replays_exactly_in_gymnasium():
    """Every trajectory the collector records is what Gymnasium's HalfCheetah-v5 does with its actions."""
    family, spec, sampler = _sampler("halfcheetah-vel", K=2, n=2, horizon=50)
    tasks = np.array([[0.5], [1.5]])
    traj = sampler.sample(spec.init(0), tasks, seed=7)
    assert traj.obs.shape == (2, 2, 50, 17) and traj.actions.shape == (2, 2, 50, 6)
    for k in range(2):
        for j in range(2):
            env = gym.make("HalfCheetah-v5")
            obs, _ = env.reset(seed=7 + k * 2 + j)
            for t in range(50):
                np.testing.assert_allclose(traj.obs[k, j, t].numpy(), obs, atol=1e-5)
                action = traj.actions[k, j, t].double().numpy()
                obs, _, _, _, info = env.step(action)
                # the paper's reward, on the action clipped to [-1, 1] (docs/tasks.md)
                expected = -abs(info["x_velocity"] - tasks[k, 0]) - 0.05 * np.square(np.clip(action, -1, 1)).sum()
                assert traj.rewards[k, j, t].item() == pytest.approx(float(expected), abs=1e-4)


def test_sampling_is_deterministic_in_the_seed():
    family, spec, sampler = _sampler("halfcheetah-dir", horizon=30)
    params, tasks = spec.init(1), np.array([[1.0], [-1.0], [1.0]])
    a, b = sampler.sample(params, tasks, seed=3), sampler.sample(params, tasks, seed=3)
    c = sampler.sample(params, tasks, seed=4)
    assert torch.equal(a.rewards, b.rewards) and torch.equal(a.actions, b.actions)
    assert not torch.equal(a.actions, c.actions)


def test_per_task_parameters_drive_their_own_tasks():
    """With params stacked per task, task k's actions are mean_k(s) + std_k * eps from the seeded stream."""
    family, spec, sampler = _sampler("nav2d", K=3, n=4, horizon=20)
    per_task = {k: torch.stack([spec.init(s)[k] for s in (1, 2, 3)]) for k in spec.init(0)}
    per_task["log_std"] = torch.tensor([[0.0, 0.0], [-1.0, -1.0], [0.5, -0.5]])
    traj = sampler.sample(per_task, family.sample(3, np.random.default_rng(0)), seed=9)
    gen = torch.Generator().manual_seed(9)
    for t in range(20):
        eps = torch.randn(3, 4, 2, generator=gen)
        for k in range(3):
            single = {name: v[k] for name, v in per_task.items()}
            mean = mean_action(spec, single, traj.obs[k, :, t])
            expected = mean + torch.exp(single["log_std"]) * eps[k]
            torch.testing.assert_close(traj.actions[k, :, t], expected, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(traj.log_probs[k, :, t],
                                       log_prob(spec, single, traj.obs[k, :, t], traj.actions[k, :, t]))


def test_ant_done_masks_end_trajectories():
    family, spec, sampler = _sampler("ant-vel", K=2, n=3, horizon=200)
    params = spec.init(0)
    params["log_std"] = torch.full((8,), 1.5)  # wild actions: some ants flip and end early
    traj = sampler.sample(params, np.array([[1.0], [2.0]]), seed=0)
    lengths = traj.mask.sum(-1)
    assert (lengths >= 1).all() and (lengths <= 200).all()
    # masks are a prefix of ones, and nothing is earned after the end
    first_zero = (traj.mask == 0).float().cumsum(-1) > 0
    assert (traj.mask[first_zero] == 0).all() and (traj.rewards[first_zero] == 0).all()
    assert lengths.min() < 200
