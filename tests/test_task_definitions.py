"""Each family's task distribution, evaluation grid and accepted domain against docs/tasks.md, and the bandit's
rewards through the real sampler against the formula -||a - goal||^2."""

import numpy as np
import pytest
import torch

from safemaml.cli.main import main
from safemaml.engine.policy import PolicySpec
from safemaml.engine.rollout import Sampler
from safemaml.errors import SafeMamlError
from safemaml.tasks import get_family

# from the tables of docs/tasks.md: (low, high) of a uniform p(T) per coordinate, or the set of directions
DISTRIBUTION = {"halfcheetah-vel": (0.0, 2.0), "ant-vel": (0.0, 3.0), "nav2d": (-0.5, 0.5), "bandit": (-1.0, 1.0),
                "halfcheetah-dir": {-1.0, 1.0}, "ant-dir": {-1.0, 1.0}}
AXIS = {"halfcheetah-vel": np.arange(31) / 10, "ant-vel": np.arange(41) / 10, "halfcheetah-dir": [-1.0, 1.0],
        "ant-dir": [-1.0, 1.0], "nav2d": [-0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75],
        "bandit": [-1.5, -0.75, 0.0, 0.75, 1.5]}
DOMAIN = {"halfcheetah-vel": 10.0, "ant-vel": 10.0, "nav2d": 2.0, "bandit": 5.0}  # abs(parameter) <= bound


@pytest.mark.parametrize("name", sorted(DISTRIBUTION))
def test_task_distribution(name):
    family = get_family(name)
    tasks = family.sample(20000, np.random.default_rng(0))
    assert tasks.shape == (20000, family.num_params)
    law = DISTRIBUTION[name]
    if isinstance(law, set):
        assert set(np.unique(tasks)) == law and abs((tasks == 1.0).mean() - 0.5) < 0.02
    else:
        low, high = law
        assert low <= tasks.min() < low + 0.01 and high - 0.01 < tasks.max() <= high
        assert np.allclose(tasks.mean(0), (low + high) / 2, atol=0.02 * (high - low))
        assert np.allclose(tasks.std(0), (high - low) / np.sqrt(12), rtol=0.02)


@pytest.mark.parametrize("name", sorted(AXIS))
def test_default_evaluation_grid(name):
    family = get_family(name)
    axis = np.asarray(AXIS[name], dtype=float)
    expected = (axis[:, None] if family.num_params == 1 else
                np.array([[x, y] for x in axis for y in axis]))  # first coordinate outer
    np.testing.assert_allclose(family.eval_grid(), expected, atol=1e-12)


@pytest.mark.parametrize("name", sorted(DOMAIN))
def test_accepted_domain_includes_its_bound(name):
    family, bound = get_family(name), DOMAIN[name]
    edge = np.full((1, family.num_params), bound)
    family.validate(edge)
    family.validate(-edge)
    with pytest.raises(SafeMamlError, match="outside the accepted domain"):
        family.validate(edge * 1.001)
    if family.num_params == 2:  # every coordinate is checked, not only the first row or the whole array
        with pytest.raises(SafeMamlError, match=rf"task \[0.0, {bound * 1.001}\] is outside the accepted domain"):
            family.validate(np.array([[0.0, 0.0], [0.0, bound * 1.001]]))


@pytest.mark.parametrize("name", ["halfcheetah-dir", "ant-dir"])
def test_directions_accept_only_plus_and_minus_one(name):
    family = get_family(name)
    family.validate(np.array([[1.0], [-1.0]]))
    with pytest.raises(SafeMamlError):
        family.validate(np.array([[0.5]]))


def test_tasks_command_lists_every_family(capsys):
    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["family", "tasks", "horizon", "obs", "act", "description"]
    for name in DISTRIBUTION:
        family = get_family(name)
        row = next(line for line in lines if line.startswith(name + " "))
        assert family.distribution in row and family.description in row
        assert f" {family.horizon} " in row and f" {family.obs_dim} " in row and f" {family.act_dim} " in row


def test_bandit_rewards_through_the_sampler():
    family = get_family("bandit")
    spec = PolicySpec(family.obs_dim, family.act_dim, hidden=(4,))
    tasks = np.array([[0.3, -0.7], [1.0, 0.2]])
    traj = Sampler(family, spec, 2, 3).sample(spec.init(0), tasks, seed=5)
    goals = torch.tensor(tasks, dtype=traj.actions.dtype)[:, None, None, :]
    expected = -((traj.actions - goals) ** 2).sum(-1)
    torch.testing.assert_close(traj.rewards, expected)
    assert bool((traj.mask == 1).all()) and traj.rewards.shape == (2, 3, family.horizon)
    assert bool((traj.obs == 1).all())
    mean, std, goal = np.array([0.5, 0.0]), np.array([0.3, 0.2]), np.array([[0.3, -0.7], [1.0, 0.2]])
    expected = -family.horizon * (np.square(mean - goal).sum(-1) + 0.13)
    np.testing.assert_allclose(family.expected_return(mean, std, goal), expected)
    per_task_std = np.array([[0.3, 0.2], [0.1, 0.1]])  # one policy per task
    np.testing.assert_allclose(family.expected_return(mean, per_task_std, goal),
                               -family.horizon * (np.square(mean - goal).sum(-1) + np.array([0.13, 0.02])))


def test_nav2d_ends_strictly_within_the_tolerance_and_stays_ended():
    """docs/tasks.md: an episode ends after the step that brings abs(s - goal) < 0.01 in both coordinates;
    a finished point is frozen, earns 0 and stays finished."""
    env = get_family("nav2d").make_env(2)
    env.set_tasks(np.array([[0.01, 0.0], [0.5, 0.5]]))
    env.reset()
    _, reward, ended = env.step(np.zeros((2, 2)))  # task 0: exactly 0.01 away, not within
    assert not ended.any() and reward[0] == pytest.approx(-0.01)
    _, _, ended = env.step(np.array([[0.005, 0.0], [0.1, 0.1]]))
    assert ended.tolist() == [True, False]
    state, reward, ended = env.step(np.array([[0.1, 0.1], [0.1, 0.1]]))
    assert not ended.any() and reward[0] == 0.0 and state[0].tolist() == [0.005, 0.0]
    state, reward, _ = env.step(np.array([[-0.1, 0.0], [0.1, 0.1]]))
    assert reward[0] == 0.0 and state[0].tolist() == [0.005, 0.0]  # still frozen two steps later


@pytest.mark.parametrize("name", ["halfcheetah-vel", "ant-dir"])
def test_physics_does_not_depend_on_the_thread_count(name):
    family = get_family(name)
    runs = []
    for nthread in (1, 2):
        env = family.make_env(4, nthread=nthread)
        env.set_tasks(family.sample(4, np.random.default_rng(0)))
        obs = [env.reset(seed=3)]
        rng = np.random.default_rng(1)
        for _ in range(15):
            o, r, d = env.step(rng.normal(size=(4, family.act_dim)))
            obs += [o, r, d]
        runs.append(obs)
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


def test_validate_returns_float64_rows_of_the_familys_parameters():
    nav, cheetah = get_family("nav2d"), get_family("halfcheetah-vel")
    for family, given, shape in ((nav, [0.1, 0.2], (1, 2)), (nav, [[1, 2], [0, 0]], (2, 2)),
                                 (cheetah, [1, 2, 3], (3, 1)), (cheetah, 2, (1, 1))):
        out = family.validate(given)
        assert out.shape == shape and out.dtype == np.float64
        np.testing.assert_array_equal(out, np.asarray(given, dtype=float).reshape(shape))
    with pytest.raises(SafeMamlError, match=r"tasks must have shape \[K, 2\]"):
        nav.validate([0.1, 0.2, 0.3])


# what `safemaml tasks` and the error messages say, written out by hand (observation sizes: Gymnasium v5's)
ROWS = {
    "halfcheetah-vel": ("goal_velocity ~ U[0, 2]", 200, 17, 6, "HalfCheetah-v5 running at a goal velocity",
                        ("goal_velocity",), "goal_velocity in [-10, 10]"),
    "halfcheetah-dir": ("direction in {-1, +1}, equiprobable", 200, 17, 6, "HalfCheetah-v5 running forward or backward",
                        ("direction",), "direction in {-1, +1}"),
    "ant-vel": ("goal_velocity ~ U[0, 3]; ends when unhealthy", 200, 105, 8, "Ant-v5 walking at a goal velocity along x",
                ("goal_velocity",), "goal_velocity in [-10, 10]"),
    "ant-dir": ("direction in {-1, +1}, equiprobable; ends when unhealthy", 200, 105, 8,
                "Ant-v5 walking forward or backward along x", ("direction",), "direction in {-1, +1}"),
    "nav2d": ("goal ~ U[-0.5, 0.5]^2; ends within 0.01 of the goal", 100, 2, 2, "2D point reaching a goal position",
              ("goal_x", "goal_y"), "goal in [-2, 2]^2"),
    "bandit": ("goal ~ U[-1, 1]^2", 10, 1, 2, "Gaussian bandit with exactly computable expected returns (for tests)",
               ("goal_x", "goal_y"), "goal in [-5, 5]^2"),
}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_family_descriptions_and_messages(name):
    family = get_family(name)
    tasks, horizon, obs, act, description, params, domain = ROWS[name]
    assert family.summary() == {"family": name, "tasks": tasks, "horizon": horizon, "obs": obs, "act": act,
                                "description": description}
    assert family.param_names == params and family.domain == domain
    with pytest.raises(SafeMamlError, match=rf"tasks must have shape \[K, {len(params)}\] \({', '.join(params)}\), "
                                            r"got \(2, 3\)"):
        family.validate(np.zeros((2, 3)))
    with pytest.raises(SafeMamlError, match=f"outside the accepted domain {domain}".replace("[", r"\[")
                       .replace("]", r"\]").replace("{", r"\{").replace("+", r"\+").replace("^", r"\^")):
        family.validate(np.full((1, len(params)), 11.0))
    with pytest.raises(SafeMamlError, match=r"task \[nan(, nan)?\] is outside"):  # the bad row is named
        family.validate(np.concatenate([family.eval_grid()[:1], np.full((1, len(params)), np.nan)]))


def test_unknown_family_names_the_closest_and_all():
    with pytest.raises(SafeMamlError, match=r"^unknown task family 'nav2' \(did you mean nav2d\?\); known: "
                                            r"halfcheetah-vel, halfcheetah-dir, ant-vel, ant-dir, nav2d, bandit$"):
        get_family("nav2")
    with pytest.raises(SafeMamlError, match=r"^unknown task family 'zzz'; known: halfcheetah-vel, "):
        get_family("zzz")
