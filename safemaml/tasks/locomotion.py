"""HalfCheetah and Ant with goal velocity or goal direction (Finn et al. 2017; the paper's tasks).

Dynamics, observations, resets and terminations are Gymnasium's v5; only the reward and the
task distribution change. The rewards are those of the paper's code (pytorch-maml-rl for
HalfCheetah, cbfinn/maml_rl for Ant); docs/tasks.md lists every difference from that code and
from Gymnasium v5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from safemaml.envs.mujoco_batch import ANT, HALF_CHEETAH, MujocoBatchEnv, Robot, load_model, observation_size
from safemaml.tasks.base import TaskFamily


@dataclass(frozen=True)
class RewardWeights:
    ctrl: float  # weight of ||a||^2
    contact: float  # weight of ||clip(cfrc_ext, -1, 1)||^2
    survive: float  # constant per-step bonus


CHEETAH_WEIGHTS = RewardWeights(ctrl=0.05, contact=0.0, survive=0.0)
ANT_VEL_WEIGHTS = RewardWeights(ctrl=0.005, contact=5e-4, survive=1.05)  # the +1.0 is ant-vel's only
ANT_DIR_WEIGHTS = RewardWeights(ctrl=0.005, contact=5e-4, survive=0.05)


def velocity_reward(goal, x_velocity, actions, contact_sq, w: RewardWeights):
    """-|v_x - v_goal| - costs + survive."""
    costs = w.ctrl * np.square(actions).sum(axis=-1) + w.contact * contact_sq
    return -np.abs(x_velocity - goal) - costs + w.survive


def direction_reward(direction, x_velocity, actions, contact_sq, w: RewardWeights):
    """d * v_x - costs + survive."""
    costs = w.ctrl * np.square(actions).sum(axis=-1) + w.contact * contact_sq
    return direction * x_velocity - costs + w.survive


class LocomotionFamily(TaskFamily):
    """One robot, one kind of goal (velocity or direction); the task is a scalar."""

    horizon = 200

    def __init__(self, name: str, robot: Robot, weights: RewardWeights, goal: str,
                 train_range: tuple[float, float] | None, grid: np.ndarray, description: str):
        self.name, self.robot, self.weights, self.goal = name, robot, weights, goal
        self.train_range, self._grid, self.description = train_range, grid, description
        model = load_model(robot)
        self.obs_dim, self.act_dim = observation_size(robot, model), model.nu
        if goal == "velocity":
            self.param_names = ("goal_velocity",)
            assert train_range is not None, "a velocity family needs its training range"
            lo, hi = train_range
            self.distribution = f"goal_velocity ~ U[{lo:g}, {hi:g}]"
            self.domain = "goal_velocity in [-10, 10]"
        else:
            self.param_names = ("direction",)
            self.distribution = "direction in {-1, +1}, equiprobable"
            self.domain = "direction in {-1, +1}"
        if robot.healthy_z is not None:
            self.distribution += "; ends when unhealthy"

    def reward(self, tasks: np.ndarray, x_velocity, actions, contact_sq) -> np.ndarray:
        fn = velocity_reward if self.goal == "velocity" else direction_reward
        return fn(np.asarray(tasks)[..., 0], x_velocity, actions, contact_sq, self.weights)

    def sample(self, num_tasks: int, rng: np.random.Generator) -> np.ndarray:
        if self.goal == "velocity":
            assert self.train_range is not None
            lo, hi = self.train_range
            return rng.uniform(lo, hi, size=(num_tasks, 1))
        return rng.choice([-1.0, 1.0], size=(num_tasks, 1))

    def eval_grid(self) -> np.ndarray:
        return self._grid.reshape(-1, 1).copy()

    def _accepts(self, tasks: np.ndarray) -> np.ndarray:
        t = tasks[:, 0]
        if self.goal == "velocity":
            return np.abs(t) <= 10.0
        return np.abs(t) == 1.0

    def make_env(self, num_envs: int, nthread: int = 0, clip_actions: bool = True) -> MujocoBatchEnv:
        return MujocoBatchEnv(self.robot, self.reward, num_envs, self.num_params, nthread=nthread,
                              clip_actions=clip_actions)


def _velocity_grid(stop: float) -> np.ndarray:
    return np.round(np.arange(0.0, stop + 1e-9, 0.1), 10)


def make_locomotion_families() -> list[LocomotionFamily]:
    directions = np.array([-1.0, 1.0])
    return [
        LocomotionFamily("halfcheetah-vel", HALF_CHEETAH, CHEETAH_WEIGHTS, "velocity", (0.0, 2.0),
                         _velocity_grid(3.0), "HalfCheetah-v5 running at a goal velocity"),
        LocomotionFamily("halfcheetah-dir", HALF_CHEETAH, CHEETAH_WEIGHTS, "direction", None,
                         directions, "HalfCheetah-v5 running forward or backward"),
        LocomotionFamily("ant-vel", ANT, ANT_VEL_WEIGHTS, "velocity", (0.0, 3.0),
                         _velocity_grid(4.0), "Ant-v5 walking at a goal velocity along x"),
        LocomotionFamily("ant-dir", ANT, ANT_DIR_WEIGHTS, "direction", None,
                         directions, "Ant-v5 walking forward or backward along x"),
    ]
