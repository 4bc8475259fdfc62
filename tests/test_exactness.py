"""The batched engine against Gymnasium's own HalfCheetah-v5 / Ant-v5, step for step."""

import gymnasium as gym
import numpy as np
import pytest

import safemaml  # noqa: F401  (registers the ids)
from safemaml.tasks import get_family

ATOL = 1e-9
CASES = [("halfcheetah-vel", "HalfCheetah-v5", 0.7), ("halfcheetah-dir", "HalfCheetah-v5", -1.0),
         ("ant-vel", "Ant-v5", 1.3), ("ant-dir", "Ant-v5", 1.0)]


def _actions(steps, n, act_dim, seed=0):
    """Actions partly outside the bounds [-1, 1]: MuJoCo clamps them, the families clip them first."""
    return np.random.default_rng(seed).uniform(-1.5, 1.5, size=(steps, n, act_dim))


@pytest.mark.parametrize("family_name,gym_id,task", CASES)
def test_batch_engine_equals_sync_vector_env(family_name, gym_id, task):
    """N batched envs reset with seed s == SyncVectorEnv of N Gymnasium envs reset with seed s."""
    family, n, seed = get_family(family_name), 4, 11
    ref = gym.vector.SyncVectorEnv([lambda: gym.make(gym_id) for _ in range(n)])
    eng = family.make_env(n)
    eng.set_tasks(np.full((n, 1), task))
    obs_ref, _ = ref.reset(seed=seed)
    obs = eng.reset(seed=seed)
    np.testing.assert_allclose(obs, obs_ref, atol=ATOL, rtol=0)
    alive = np.ones(n, bool)
    steps = 0
    for action in _actions(200, n, family.act_dim):
        obs_ref, _, term_ref, _, info = ref.step(action)
        obs, reward, term = eng.step(action)
        for i in np.flatnonzero(alive):
            sub = ref.envs[i].unwrapped
            np.testing.assert_allclose(obs[i], obs_ref[i], atol=ATOL, rtol=0)
            np.testing.assert_allclose(eng.qpos[i], sub.data.qpos, atol=ATOL, rtol=0)
            np.testing.assert_allclose(eng.qvel[i], sub.data.qvel, atol=ATOL, rtol=0)
            contact = float(np.sum(np.square(sub.contact_forces))) if hasattr(sub, "contact_forces") else 0.0
            x_vel = info["x_velocity"][i]
            clipped = np.clip(action[i:i + 1], -1, 1)
            expected = family.reward(np.array([[task]]), np.array([x_vel]), clipped, np.array([contact]))
            np.testing.assert_allclose(reward[i], expected[0], atol=ATOL, rtol=0)
            assert term[i] == term_ref[i]
        alive &= ~term_ref
        steps += 1
        if not alive.any():
            break
    assert steps >= 10


@pytest.mark.parametrize("family_name,gym_id,task", CASES)
def test_registered_single_env_equals_gymnasium(family_name, gym_id, task):
    """gymnasium.make("safemaml/...") is Gymnasium's env with the family's reward."""
    family = get_family(family_name)
    env_id = {"halfcheetah-vel": "safemaml/HalfCheetahVel-v0", "halfcheetah-dir": "safemaml/HalfCheetahDir-v0",
              "ant-vel": "safemaml/AntVel-v0", "ant-dir": "safemaml/AntDir-v0"}[family_name]
    kwarg = family.param_names[0]
    ours = gym.make(env_id, **{kwarg: task})
    ref = gym.make(gym_id)
    o1, _ = ours.reset(seed=5)
    o2, _ = ref.reset(seed=5)
    np.testing.assert_allclose(o1, o2, atol=ATOL, rtol=0)
    for action in _actions(200, 1, family.act_dim, seed=1)[:, 0]:
        o1, r1, t1, tr1, _ = ours.step(action)
        o2, _, t2, tr2, info = ref.step(action)
        np.testing.assert_allclose(o1, o2, atol=ATOL, rtol=0)
        contact = float(np.sum(np.square(ref.unwrapped.contact_forces))) if "Ant" in gym_id else 0.0
        clipped = np.clip(action[None], -1, 1)
        expected = family.reward(np.array([[task]]), np.array([info["x_velocity"]]), clipped, np.array([contact]))
        assert r1 == pytest.approx(expected[0], abs=ATOL)
        assert t1 == t2  # (HalfCheetah-v5 truncates at 1000 steps, the families at 200)
        if t1:
            break


@pytest.mark.parametrize("family_name,gym_id,task", [CASES[0], CASES[2]])
def test_make_vec_entry_point_equals_sync(family_name, gym_id, task):
    """make_vec(vector_entry_point) returns the batched engine, equal to make_vec(sync), autoreset included."""
    env_id = {"halfcheetah-vel": "safemaml/HalfCheetahVel-v0", "ant-vel": "safemaml/AntVel-v0"}[family_name]
    n = 3
    fast = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", goal_velocity=task)
    slow = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", goal_velocity=task)
    assert type(fast.unwrapped).__name__ == "LocomotionVectorEnv"
    o1, _ = fast.reset(seed=3)
    o2, _ = slow.reset(seed=3)
    np.testing.assert_allclose(o1, o2, atol=ATOL, rtol=0)
    episode_ends = 0
    for action in _actions(210, n, fast.single_action_space.shape[0], seed=2):
        r = [fast.step(action), slow.step(action)]
        for a, b in zip(r[0][:4], r[1][:4]):
            np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)
        episode_ends += int(r[1][2].sum() + r[1][3].sum())
    assert episode_ends >= n  # every env ended an episode (truncation at 200) and was autoreset
