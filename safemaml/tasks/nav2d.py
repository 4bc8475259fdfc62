"""2D point navigation (Finn et al. 2017): a cheap family for tests and quick studies."""

from __future__ import annotations

import numpy as np

from safemaml.envs.mujoco_batch import check_actions
from safemaml.tasks.base import TaskFamily


class Nav2DEnv:
    """Points starting at the origin, moving by clip(a, -0.1, 0.1), rewarded -||s - goal||.

    As in the paper's code, an episode ends (after its reward) when the point is within
    `goal_tolerance` of the goal in both coordinates; a finished point stays frozen.
    """

    obs_dim = 2
    act_dim = 2
    max_step = 0.1
    goal_tolerance = 0.01

    def __init__(self, num_envs: int):
        self.num_envs = num_envs
        self.tasks = np.zeros((num_envs, 2))
        self.state = np.zeros((num_envs, 2))
        self.done = np.zeros(num_envs, dtype=bool)

    def set_tasks(self, tasks: np.ndarray) -> None:
        self.tasks = np.broadcast_to(np.asarray(tasks, dtype=np.float64), self.tasks.shape).copy()

    def reset(self, seed: int | None = None) -> np.ndarray:
        self.state[:] = 0.0
        self.done[:] = False
        return self.state.copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        actions = check_actions(actions, self.num_envs, self.act_dim)
        active = ~self.done
        self.state[active] += np.clip(actions[active], -self.max_step, self.max_step)
        offset = self.state - self.tasks
        reward = np.where(active, -np.linalg.norm(offset, axis=1), 0.0)
        terminated = active & (np.abs(offset) < self.goal_tolerance).all(axis=1)
        self.done |= terminated
        return self.state.copy(), reward, terminated


class Nav2DFamily(TaskFamily):
    name = "nav2d"
    description = "2D point reaching a goal position"
    distribution = "goal ~ U[-0.5, 0.5]^2; ends within 0.01 of the goal"
    domain = "goal in [-2, 2]^2"
    param_names = ("goal_x", "goal_y")
    horizon = 100
    obs_dim = 2
    act_dim = 2

    def sample(self, num_tasks: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-0.5, 0.5, size=(num_tasks, 2))

    def eval_grid(self) -> np.ndarray:
        axis = np.linspace(-0.75, 0.75, 7)
        return np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)

    def _accepts(self, tasks: np.ndarray) -> np.ndarray:
        return (np.abs(tasks) <= 2.0).all(axis=1)

    def make_env(self, num_envs: int, nthread: int = 0, clip_actions: bool = True) -> Nav2DEnv:
        """A batch of points; the step is always clipped to +-0.1 (the task's own bound)."""
        return Nav2DEnv(num_envs)
