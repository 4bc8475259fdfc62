"""The paper's code conventions: clipped actions in the control cost, nav2d ending at the goal,
a floor on the policy's std, and resampling before every inner step."""

import dataclasses
import math

import numpy as np
import torch

from safemaml.config import AdaptConfig
from safemaml.engine.adapt import adapt_loop, adapt_vmap
from safemaml.engine.metastep import inner_loop
from safemaml.engine.policy import PolicySpec, log_prob
from safemaml.engine.returns import advantages
from safemaml.engine.rollout import Sampler
from safemaml.tasks import get_family
from tests.helpers import tiny_config


def test_control_cost_is_paid_on_clipped_actions_by_default():
    """Same dynamics either way; the reward differs by exactly 0.05 (||a||^2 - ||clip(a)||^2)."""
    family = get_family("halfcheetah-vel")
    actions = np.random.default_rng(0).uniform(-2, 2, size=(2, 6))
    rewards, states = {}, {}
    for clip in (True, False):
        env = family.make_env(2, clip_actions=clip)
        env.set_tasks(np.array([[1.0], [1.0]]))
        env.reset(seed=3)
        _, rewards[clip], _ = env.step(actions)
        states[clip] = env.qpos.copy()
    np.testing.assert_array_equal(states[True], states[False])
    gap = 0.05 * (np.square(actions).sum(1) - np.square(np.clip(actions, -1, 1)).sum(1))
    np.testing.assert_allclose(rewards[True] - rewards[False], gap, rtol=1e-12)


def test_nav2d_episode_ends_within_tolerance_of_the_goal_in_both_coordinates():
    env = get_family("nav2d").make_env(3)
    env.set_tasks(np.array([[0.095, 0.0], [0.095, 0.05], [0.3, 0.3]]))
    env.reset()
    obs, reward, term = env.step(np.array([[0.1, 0.0], [0.1, 0.0], [0.1, 0.1]]))
    # env 0 is within 0.01 in x and y; env 1 only in x; env 2 in neither
    assert term.tolist() == [True, False, False]
    np.testing.assert_allclose(reward, [-0.005, -math.hypot(0.005, 0.05), -math.hypot(0.2, 0.2)])
    obs, reward, term = env.step(np.array([[0.1, 0.1], [0.0, 0.05], [0.1, 0.1]]))
    assert reward[0] == 0.0 and term[0] == False  # noqa: E712  (finished: frozen, no reward)
    np.testing.assert_allclose(obs[0], [0.1, 0.0])
    assert term.tolist() == [False, True, False]


def test_nav2d_finished_trajectories_are_masked_in_sampling():
    family = get_family("nav2d")
    spec = PolicySpec(2, 2, hidden=(8,))
    params = spec.init(0)
    params["w1"] = torch.zeros_like(params["w1"])
    params["b1"] = torch.tensor([0.1, 0.0])  # mean action (0.1, 0): reaches (0.3, 0) at step 3
    params["log_std"] = torch.full((2,), math.log(1e-8))
    traj = Sampler(family, spec, 1, 2, horizon=10).sample(params, np.array([[0.3, 0.0]]), seed=0)
    assert traj.mask[0, 0].tolist() == [1.0] * 3 + [0.0] * 7
    np.testing.assert_allclose(traj.returns[0].numpy(), -(0.2 + 0.1 + 0.0), atol=1e-5)


def test_std_floor_matches_a_normal_with_the_floor():
    spec = PolicySpec(3, 2, hidden=(4,), min_std=0.05)
    params = spec.init(1)
    params["log_std"] = torch.tensor([math.log(1e-4), math.log(0.5)])
    obs, actions = torch.randn(7, 3), torch.randn(7, 2)
    mean = torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(obs, params["w0"], params["b0"])),
                                      params["w1"], params["b1"])
    ref = torch.distributions.Normal(mean, torch.tensor([0.05, 0.5])).log_prob(actions).sum(-1)
    torch.testing.assert_close(log_prob(spec, params, obs, actions), ref)


def test_resampling_inner_loop_equals_a_hand_written_reference():
    """adapt.resample: step 1 on the pre-update data, then sample with theta_1 and step again."""
    cfg = tiny_config()
    family = get_family("nav2d")
    spec = PolicySpec(2, 2, hidden=(16, 16))
    theta = spec.init(0)
    one = AdaptConfig(fast_lr=0.1, num_steps=1, vectorize="loop")
    two = dataclasses.replace(one, num_steps=2, resample=True)
    sampler = Sampler(family, spec, 3, 4, horizon=30)
    tasks = family.sample(3, np.random.default_rng(1))

    def adv(t):
        return advantages(t.obs, t.rewards, t.mask, cfg.gamma, cfg.gae_lambda)

    got = inner_loop(spec, two, theta, sampler, tasks, lambda s: 100 + s, adv)
    pre = sampler.sample(theta, tasks, seed=100)
    theta1 = adapt_loop(spec, one, theta, pre.obs, pre.actions, adv(pre), pre.mask)
    again = sampler.sample(theta1, tasks, seed=102)
    theta2 = adapt_loop(spec, one, theta1, again.obs, again.actions, adv(again), again.mask)
    assert len(got.resampled) == 1
    torch.testing.assert_close(got.resampled[0][0].obs, again.obs)
    for k in theta2:
        torch.testing.assert_close(got.fast[k], theta2[k])
    vmapped = adapt_vmap(spec, one, theta1, again.obs, again.actions, adv(again), again.mask)
    for k in theta2:
        torch.testing.assert_close(vmapped[k], theta2[k], rtol=1e-5, atol=1e-6)
