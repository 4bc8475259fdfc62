"""Gymnasium faces of the locomotion families.

`HalfCheetahVelEnv` & co. are Gymnasium's own v5 environments with the family's reward;
`LocomotionVectorEnv` is the batched engine behind `gymnasium.make_vec(...,
vectorization_mode="vector_entry_point")`, with Gymnasium's next-step autoreset.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.vector import AutoresetMode, VectorEnv

from safemaml.envs.mujoco_batch import quiet_mujoco
from safemaml.errors import SafeMamlError

TASK_KWARG = {"velocity": "goal_velocity", "direction": "direction"}


def _family(name: str):
    from safemaml.tasks import get_family  # late: tasks import envs

    return get_family(name)


class _TaskReward:
    """Mixin: a Gymnasium locomotion env whose reward is the family's, the task a make kwarg."""

    family_name: str
    task_kwarg: str
    action_space: Any  # provided by the Gymnasium env this is mixed into

    def __init__(self, clip_actions: bool = True, **kwargs: Any):
        task = kwargs.pop(self.task_kwarg, 1.0)
        self.clip_actions = clip_actions
        with quiet_mujoco():
            super().__init__(**kwargs)
        self.family = _family(self.family_name)
        self.task = self.family.validate(task)[0]

    def step(self, action):
        if self.clip_actions:  # as the batch engine: the cost is paid on what the motors receive
            action = np.clip(action, self.action_space.low, self.action_space.high)
        obs, _, terminated, truncated, info = super().step(action)  # type: ignore[misc]  # the env's step (mixin)
        contact_sq = float(np.sum(np.square(self.contact_forces))) if hasattr(self, "contact_forces") else 0.0
        reward = float(self.family.reward(self.task, info["x_velocity"], np.asarray(action), contact_sq))
        return obs, reward, terminated, truncated, info


class HalfCheetahVelEnv(_TaskReward, HalfCheetahEnv):
    family_name, task_kwarg = "halfcheetah-vel", "goal_velocity"


class HalfCheetahDirEnv(_TaskReward, HalfCheetahEnv):
    family_name, task_kwarg = "halfcheetah-dir", "direction"


class AntVelEnv(_TaskReward, AntEnv):
    family_name, task_kwarg = "ant-vel", "goal_velocity"


class AntDirEnv(_TaskReward, AntEnv):
    family_name, task_kwarg = "ant-dir", "direction"


class LocomotionVectorEnv(VectorEnv):
    """N environments of one locomotion family in one MujocoBatchEnv.

    The task kwarg may be a scalar (all environments) or one value per environment.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, family: str, num_envs: int, max_episode_steps: int = 200, clip_actions: bool = True,
                 **task: Any):
        self.family = _family(family)
        kwarg = TASK_KWARG[self.family.goal]
        unknown = set(task) - {kwarg}
        if unknown:
            raise SafeMamlError(f"{family}: unknown argument(s) {sorted(unknown)}; the task is {kwarg}=")
        value = np.broadcast_to(task.get(kwarg, 1.0), (num_envs,))
        self.engine = self.family.make_env(num_envs, clip_actions=clip_actions)
        self.engine.set_tasks(self.family.validate(value.reshape(-1, 1)))
        self.num_envs, self.max_episode_steps = num_envs, max_episode_steps
        high = np.inf * np.ones(self.engine.obs_dim)
        self.single_observation_space = gym.spaces.Box(-high, high, dtype=np.float64)
        ctrl_range = self.engine.model.actuator_ctrlrange
        self.single_action_space = gym.spaces.Box(ctrl_range[:, 0].astype(np.float32),
                                                  ctrl_range[:, 1].astype(np.float32), dtype=np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._elapsed = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs = self.engine.reset(seed=seed)
        self._elapsed[:] = 0
        self._autoreset[:] = False
        return obs, {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float64)
        resetting = np.flatnonzero(self._autoreset)
        self.engine.done[resetting] = True  # hold them still during this step
        obs, reward, terminated = self.engine.step(actions)
        self._elapsed += 1
        if resetting.size:
            obs = self.engine.reset(ids=resetting)
            self._elapsed[resetting] = 0
        truncated = self._elapsed >= self.max_episode_steps  # as TimeLimit: even when terminated
        self._autoreset = terminated | truncated
        self.engine.done[:] = False  # the vector env restarts finished episodes itself
        return obs, reward, terminated, truncated, {}




GYM_IDS: dict[str, Any] = {  # id -> env class (a _TaskReward mixed into a Gymnasium MujocoEnv)
    "safemaml/HalfCheetahVel-v0": HalfCheetahVelEnv,
    "safemaml/HalfCheetahDir-v0": HalfCheetahDirEnv,
    "safemaml/AntVel-v0": AntVelEnv,
    "safemaml/AntDir-v0": AntDirEnv,
}


def register_envs() -> None:
    """Register the ids above with Gymnasium (idempotent)."""
    for env_id, env_cls in GYM_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=env_cls, max_episode_steps=200,
                         vector_entry_point=functools.partial(LocomotionVectorEnv, env_cls.family_name))
