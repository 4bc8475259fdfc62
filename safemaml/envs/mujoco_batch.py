"""B MuJoCo simulations of one Gymnasium v5 robot, stepped together in C threads.

Reproduces Gymnasium's HalfCheetah-v5 / Ant-v5 bit for bit: the same model file, reset
noise drawn from a per-environment generator seeded as Gymnasium seeds it, `frame_skip`
calls to mj_step in one batched call, and `mj_rnePostConstraint` for the contact forces
that Ant observes. Only the reward is left to the task family (`reward_fn`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import mujoco
import mujoco.batch
import numpy as np

from safemaml.errors import SafeMamlError

GYM_ASSETS = os.path.join(os.path.dirname(str(__import__("gymnasium").__file__)), "envs", "mujoco", "assets")


def usable_cores() -> int:
    """The cores this process may run on: what a SLURM allocation, `taskset` or a worker's share
    (safemaml.studies.pool) grants, not the whole machine (os.cpu_count), so that the stepping threads do not
    oversubscribe it."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Robot:
    """What differs between Gymnasium's locomotion robots, as data."""

    name: str
    xml: str
    qpos_skip: int  # leading qpos entries excluded from the observation (x, or x and y)
    torso_body: int | None  # body whose xpos gives v_x (Ant); None: qpos[0] (HalfCheetah)
    contact_forces: bool  # observe clip(cfrc_ext[1:]) and pay a contact cost (Ant)
    healthy_z: tuple[float, float] | None  # episode ends when the torso leaves this range
    frame_skip: int = 5
    reset_noise: float = 0.1
    contact_clip: float = 1.0


HALF_CHEETAH = Robot("halfcheetah", "half_cheetah.xml", 1, None, False, None)
ANT = Robot("ant", "ant.xml", 2, 1, True, (0.2, 1.0))


@contextlib.contextmanager
def quiet_mujoco() -> Iterator[list[str]]:
    """Collect MuJoCo warnings instead of letting them land in ./MUJOCO_LOG.TXT."""
    messages: list[str] = []
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(messages.append)
    try:
        yield messages
    finally:
        mujoco.set_mju_user_warning(previous)


def load_model(robot: Robot) -> mujoco.MjModel:
    with quiet_mujoco():
        return mujoco.MjModel.from_xml_path(os.path.join(GYM_ASSETS, robot.xml))


def observation_size(robot: Robot, model: mujoco.MjModel) -> int:
    size = model.nq - robot.qpos_skip + model.nv
    return size + (model.nbody - 1) * 6 if robot.contact_forces else size


def gym_rng(seed: int | None) -> np.random.Generator:
    """The generator Gymnasium's `reset(seed=...)` builds (PCG64 on a SeedSequence)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))


# reward_fn(tasks [B, P], x_velocity [B], actions [B, A], contact_sq [B]) -> rewards [B]
RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class MujocoBatchEnv:
    """`num_envs` simulations with per-environment tasks, done masks and reset generators."""

    def __init__(self, robot: Robot, reward_fn: RewardFn, num_envs: int, num_params: int,
                 nthread: int = 0, clip_actions: bool = True):
        if num_envs < 1:
            raise SafeMamlError(f"num_envs must be >= 1, got {num_envs}")
        self.robot, self.reward_fn, self.num_envs = robot, reward_fn, num_envs
        self.clip_actions = clip_actions
        self.model = load_model(robot)
        self.batch = mujoco.batch.Batch(self.model, num_envs, nthread=nthread or usable_cores(),
                                        persistent=robot.contact_forces)
        self.qpos, self.qvel = self.batch.bind("qpos"), self.batch.bind("qvel")
        self.ctrl = self.batch.bind("ctrl")
        self.xpos = self.batch.bind("xpos") if robot.torso_body is not None else None
        self.cfrc_ext = np.zeros((num_envs, self.model.nbody, 6))
        self._scratch = mujoco.MjData(self.model) if robot.contact_forces else None
        self.init_qpos = self.model.qpos0.copy()
        self.init_qvel = np.zeros(self.model.nv)
        self.dt = self.model.opt.timestep * robot.frame_skip
        self.obs_dim = observation_size(robot, self.model)
        self.act_dim = self.model.nu
        self.ctrl_low, self.ctrl_high = self.model.actuator_ctrlrange[:, 0], self.model.actuator_ctrlrange[:, 1]
        self.tasks = np.zeros((num_envs, num_params))
        self.done = np.zeros(num_envs, dtype=bool)
        self.rngs = [gym_rng(None) for _ in range(num_envs)]

    def set_tasks(self, tasks: np.ndarray) -> None:
        self.tasks = np.broadcast_to(np.asarray(tasks, dtype=np.float64), self.tasks.shape).copy()

    def reset(self, seed: int | None = None, ids: np.ndarray | None = None) -> np.ndarray:
        """Reset environments `ids` (all by default); with `seed`, env i is reseeded `seed + i`.

        Environments without a new seed continue their own generator, as Gymnasium's do.
        """
        ids = np.arange(self.num_envs) if ids is None else np.asarray(ids)
        if seed is not None:
            for i in ids:
                self.rngs[i] = gym_rng(int(seed) + int(i))
        self.batch.reset(ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        noise, nq, nv = self.robot.reset_noise, self.model.nq, self.model.nv
        for i in ids:
            rng = self.rngs[i]
            self.qpos[i] = self.init_qpos + rng.uniform(-noise, noise, size=nq)
            self.qvel[i] = self.init_qvel + noise * rng.standard_normal(nv)
        self.batch.forward(ids)
        self.cfrc_ext[ids] = 0.0  # mj_forward does not compute contact forces
        self.done[ids] = False
        return self.observe()

    def observe(self) -> np.ndarray:
        parts = [self.qpos[:, self.robot.qpos_skip:], self.qvel]
        if self.robot.contact_forces:
            clipped = np.clip(self.cfrc_ext[:, 1:], -self.robot.contact_clip, self.robot.contact_clip)
            parts.append(clipped.reshape(self.num_envs, -1))
        return np.concatenate(parts, axis=1)

    def _x(self) -> np.ndarray:
        if self.xpos is None:
            return self.qpos[:, 0].copy()
        return self.xpos[:, self.robot.torso_body, 0].copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance the running environments one control step.

        Returns observations [B, obs_dim], rewards [B] (0 for finished environments) and the
        environments that terminated at this step [B]. With `clip_actions` (the paper's code, by
        default) the actions are clipped to the actuators' range before the environment, so the
        control cost is paid on what the motors receive; MuJoCo clamps `ctrl` to that range in
        any case, so the dynamics are the same either way.
        """
        actions = check_actions(actions, self.num_envs, self.act_dim)
        if self.clip_actions:
            actions = np.clip(actions, self.ctrl_low, self.ctrl_high)
        active = ~self.done
        ids = None if active.all() else np.flatnonzero(active)
        x_before = self._x()
        self.ctrl[:] = actions
        self.batch.step(ids, nstep=self.robot.frame_skip)
        if self.robot.contact_forces:
            self._contact_forces(np.flatnonzero(active))
        x_velocity = (self._x() - x_before) / self.dt
        contact_sq = self._contact_sq()
        reward = self.reward_fn(self.tasks, x_velocity, actions, contact_sq)
        terminated = active & ~self._healthy()
        self.done |= terminated
        return self.observe(), np.where(active, reward, 0.0), terminated

    def _contact_forces(self, ids: np.ndarray) -> None:
        """cfrc_ext as Gymnasium computes it: mj_rnePostConstraint after the last substep."""
        data = self._scratch
        assert data is not None  # made in __init__ for robots with contact forces
        for i in ids:
            self.batch.get_data(int(i), data)
            mujoco.mj_rnePostConstraint(self.model, data)
            self.cfrc_ext[i] = data.cfrc_ext

    def _contact_sq(self) -> np.ndarray:
        if not self.robot.contact_forces:
            return np.zeros(self.num_envs)
        c = self.robot.contact_clip
        return np.square(np.clip(self.cfrc_ext, -c, c)).sum(axis=(1, 2))

    def _healthy(self) -> np.ndarray:
        if self.robot.healthy_z is None:
            return np.ones(self.num_envs, dtype=bool)
        lo, hi = self.robot.healthy_z
        z = self.qpos[:, 2]
        finite = np.isfinite(self.qpos).all(axis=1) & np.isfinite(self.qvel).all(axis=1)
        return finite & (z >= lo) & (z <= hi)


def check_actions(actions: np.ndarray, num_envs: int, act_dim: int) -> np.ndarray:
    """Actions as a float64 [B, A] array; a wrong shape or a non-finite value is an error."""
    actions = np.asarray(actions, dtype=np.float64)
    if actions.shape != (num_envs, act_dim):
        raise SafeMamlError(f"actions must have shape ({num_envs}, {act_dim}), got {actions.shape}")
    if not np.isfinite(actions).all():
        bad = int(np.flatnonzero(~np.isfinite(actions).all(axis=1))[0])
        raise SafeMamlError(f"non-finite action for environment {bad}: {actions[bad].tolist()}")
    return actions
