"""Every family's reward against the formula of docs/tasks.md's table, written out here.

The physical quantities (forward velocity, Ant's contact forces) come from Gymnasium's own
HalfCheetah-v5 / Ant-v5 stepped beside the batched engine; the weights, signs, survive bonuses and
the clipping of actions to [-1, 1] come from the table, never from safemaml's reward functions.
"""

import gymnasium as gym
import numpy as np
import pytest

from safemaml.tasks import get_family


def _ctrl(a):
    return np.square(np.clip(a, -1.0, 1.0)).sum()


# the table of docs/tasks.md: reward(task, v_x, action, ||clip(cfrc_ext)||^2)
TABLE = {
    "halfcheetah-vel": lambda v_goal, vx, a, c: -abs(vx - v_goal) - 0.05 * _ctrl(a),
    "halfcheetah-dir": lambda d, vx, a, c: d * vx - 0.05 * _ctrl(a),
    "ant-vel": lambda v_goal, vx, a, c: -abs(vx - v_goal) - 0.005 * _ctrl(a) - 5e-4 * c + 1.05,
    "ant-dir": lambda d, vx, a, c: d * vx - 0.005 * _ctrl(a) - 5e-4 * c + 0.05,
}
GYM_ID = {"halfcheetah-vel": "HalfCheetah-v5", "halfcheetah-dir": "HalfCheetah-v5", "ant-vel": "Ant-v5",
          "ant-dir": "Ant-v5"}
TASKS = {"halfcheetah-vel": [0.4, 1.7], "halfcheetah-dir": [-1.0, 1.0], "ant-vel": [0.3, 2.5],
         "ant-dir": [-1.0, 1.0]}


@pytest.mark.parametrize("name", list(TABLE))
def test_locomotion_reward_is_the_tables_formula(name):
    family, tasks = get_family(name), TASKS[name]
    n, seed = len(tasks), 7
    refs = [gym.make(GYM_ID[name]) for _ in range(n)]
    env = family.make_env(n)
    env.set_tasks(np.array(tasks)[:, None])
    env.reset(seed=seed)
    for i, ref in enumerate(refs):
        ref.reset(seed=seed + i)  # the batched engine seeds environment i with seed + i, as SyncVectorEnv
    rng = np.random.default_rng(0)
    checked, contacts = 0, []
    for _ in range(30):
        actions = rng.uniform(-1.6, 1.6, size=(n, family.act_dim))  # beyond the bounds: clipping matters
        _, reward, term = env.step(actions)
        for i, ref in enumerate(refs):
            _, _, ref_term, _, info = ref.step(actions[i])
            forces = np.clip(ref.unwrapped.data.cfrc_ext, -1.0, 1.0)  # the table: clipped to [-1, 1]
            contact = float(np.square(forces).sum()) if "ant" in name else 0.0
            contacts.append(contact)
            expected = TABLE[name](tasks[i], info["x_velocity"], actions[i], contact)
            assert reward[i] == pytest.approx(expected, abs=1e-9), (name, i)
            assert term[i] == ref_term
            checked += 1
        if term.any():
            break
    assert checked >= 10
    assert "ant" not in name or max(contacts) > 0.1  # the contact term was exercised


def test_bandit_reward_and_nav2d_reward_by_hand():
    bandit = get_family("bandit").make_env(2)
    bandit.set_tasks(np.array([[0.5, -1.0], [2.0, 0.0]]))
    bandit.reset()
    a = np.array([[1.5, 1.0], [-3.0, 0.25]])  # not clipped: the bandit's actions are unbounded
    _, reward, term = bandit.step(a)
    np.testing.assert_allclose(reward, [-(1.0 + 4.0), -(25.0 + 0.0625)])
    assert not term.any()
    nav = get_family("nav2d").make_env(1)
    nav.set_tasks(np.array([[-0.4, 0.2]]))
    nav.reset()
    _, reward, _ = nav.step(np.array([[-0.05, 0.3]]))  # y clipped to 0.1
    np.testing.assert_allclose(reward, [-np.hypot(-0.35, -0.1)])
