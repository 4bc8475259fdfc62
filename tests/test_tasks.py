import numpy as np
import pytest

from safemaml.errors import SafeMamlError
from safemaml.tasks import FAMILY_NAMES, all_families, get_family


def test_every_family_listed_with_consistent_sizes():
    assert [f.name for f in all_families()] == list(FAMILY_NAMES)
    for family in all_families():
        env = family.make_env(3)
        obs = env.reset(seed=0)
        assert obs.shape == (3, family.obs_dim)
        assert env.act_dim == family.act_dim
        grid = family.validate(family.eval_grid())
        assert grid.shape[1] == family.num_params and len(grid) >= 2


def test_ant_observation_has_gymnasium_size():
    assert get_family("ant-vel").obs_dim == 105
    assert get_family("halfcheetah-vel").obs_dim == 17


def test_sampling_is_seeded_and_in_distribution():
    fam = get_family("halfcheetah-vel")
    a = fam.sample(500, np.random.default_rng(1))
    b = fam.sample(500, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 2 and a.std() > 0.4
    d = get_family("ant-dir").sample(1000, np.random.default_rng(0))
    assert set(np.unique(d)) == {-1.0, 1.0} and abs(d.mean()) < 0.1


def test_eval_grid_extends_beyond_training_range():
    assert get_family("halfcheetah-vel").eval_grid().max() == pytest.approx(3.0)
    assert get_family("ant-vel").eval_grid().max() == pytest.approx(4.0)


@pytest.mark.parametrize("name,bad", [("halfcheetah-vel", 11.0), ("halfcheetah-vel", np.nan),
                                      ("ant-dir", 0.5), ("nav2d", [[3.0, 0.0]]), ("bandit", [[0, np.inf]])])
def test_out_of_domain_task_is_an_error(name, bad):
    with pytest.raises(SafeMamlError, match="outside the accepted domain"):
        get_family(name).validate(bad)


def test_wrong_task_shape_is_an_error():
    with pytest.raises(SafeMamlError, match="shape"):
        get_family("nav2d").validate(np.zeros((4, 3)))


def test_unknown_family_suggests_a_name():
    with pytest.raises(SafeMamlError, match="did you mean ant-vel"):
        get_family("ant-vell")


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_bad_actions_never_touch_the_batch(name):
    family = get_family(name)
    env = family.make_env(2)
    env.set_tasks(family.sample(2, np.random.default_rng(0)))
    obs = env.reset(seed=0)
    good = np.zeros((2, family.act_dim))
    with pytest.raises(SafeMamlError, match="shape"):
        env.step(np.zeros((2, family.act_dim + 1)))
    bad = good.copy()
    bad[1, 0] = np.nan
    with pytest.raises(SafeMamlError, match="non-finite action for environment 1"):
        env.step(bad)
    # the failed calls did not advance anything: stepping now equals a fresh env's first step
    ref = family.make_env(2)
    ref.set_tasks(env.tasks)
    np.testing.assert_array_equal(ref.reset(seed=0), obs)
    np.testing.assert_array_equal(env.step(good)[0], ref.step(good)[0])


def test_nav2d_dynamics_and_reward():
    env = get_family("nav2d").make_env(1)
    env.set_tasks([[0.3, -0.2]])
    env.reset()
    obs, reward, _ = env.step(np.array([[0.5, -0.05]]))  # x clipped to 0.1
    np.testing.assert_allclose(obs, [[0.1, -0.05]])
    np.testing.assert_allclose(reward, [-np.hypot(0.2, 0.15)])


def test_bandit_expected_return_matches_monte_carlo():
    fam = get_family("bandit")
    rng = np.random.default_rng(0)
    mean, std, goal = np.array([0.3, -0.4]), np.array([0.5, 0.2]), np.array([1.0, 0.5])
    actions = mean + std * rng.standard_normal((200_000, 2))
    mc = -fam.horizon * np.square(actions - goal).sum(1).mean()
    assert fam.expected_return(mean, std, goal) == pytest.approx(mc, rel=5e-3)


def test_ant_terminates_and_freezes_when_unhealthy():
    family = get_family("ant-vel")
    env = family.make_env(3)
    env.set_tasks(np.full((3, 1), 1.0))
    env.reset(seed=0)
    env.qpos[1, 2] = 1.5  # env 1 is lifted above the healthy range: it ends at its next step
    _, reward, term = env.step(np.zeros((3, 8)))
    assert term.tolist() == [False, True, False] and env.done.tolist() == [False, True, False]
    frozen = env.qpos[1].copy()
    _, reward, term = env.step(np.ones((3, 8)) * 0.5)
    assert reward[1] == 0.0 and not term[1]
    np.testing.assert_array_equal(env.qpos[1], frozen)
