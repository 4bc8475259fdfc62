"""A Gaussian bandit whose expected returns are exact: the family for testing gradient estimators.

The observation is a constant 1, the reward of action a is -||a - goal||^2 at every step.
For a Gaussian policy with mean mu and standard deviation sigma, the expected return is
H * -(||mu - goal||^2 + sum(sigma^2)), so the exact expected return before and after
an adaptation step is one forward pass away (`expected_return`).
"""

from __future__ import annotations

import numpy as np

from safemaml.envs.mujoco_batch import check_actions
from safemaml.tasks.base import TaskFamily


class BanditEnv:
    obs_dim = 1

    def __init__(self, num_envs: int, act_dim: int):
        self.num_envs, self.act_dim = num_envs, act_dim
        self.tasks = np.zeros((num_envs, act_dim))
        self.done = np.zeros(num_envs, dtype=bool)

    def set_tasks(self, tasks: np.ndarray) -> None:
        self.tasks = np.broadcast_to(np.asarray(tasks, dtype=np.float64), self.tasks.shape).copy()

    def _obs(self) -> np.ndarray:
        return np.ones((self.num_envs, 1))

    def reset(self, seed: int | None = None) -> np.ndarray:
        self.done[:] = False
        return self._obs()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        actions = check_actions(actions, self.num_envs, self.act_dim)
        reward = -np.square(actions - self.tasks).sum(axis=1)
        return self._obs(), reward, np.zeros(self.num_envs, dtype=bool)


class BanditFamily(TaskFamily):
    name = "bandit"
    description = "Gaussian bandit with exactly computable expected returns (for tests)"
    distribution = "goal ~ U[-1, 1]^2"
    domain = "goal in [-5, 5]^2"
    param_names = ("goal_x", "goal_y")
    horizon = 10
    obs_dim = 1
    act_dim = 2

    def sample(self, num_tasks: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=(num_tasks, 2))

    def eval_grid(self) -> np.ndarray:
        axis = np.linspace(-1.5, 1.5, 5)
        return np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)

    def _accepts(self, tasks: np.ndarray) -> np.ndarray:
        return (np.abs(tasks) <= 5.0).all(axis=1)

    def make_env(self, num_envs: int, nthread: int = 0, clip_actions: bool = True) -> BanditEnv:
        """A batch of bandits; actions are unbounded, so `clip_actions` has nothing to clip."""
        return BanditEnv(num_envs, self.act_dim)

    def expected_return(self, mean: np.ndarray, std: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        """Exact E[return] of a Gaussian policy N(mean, std^2) on each task: [..., A] -> [...]."""
        per_step = np.square(mean - tasks).sum(axis=-1) + np.square(std).sum(axis=-1)
        return -self.horizon * per_step
