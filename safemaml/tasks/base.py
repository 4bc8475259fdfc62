"""The task-family contract: task parameters are explicit arrays, never hidden env state.

A family knows its task distribution (`sample`), the parameters it accepts (`validate`),
a default evaluation grid, and how to build a batched environment in which every
environment runs its own task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import numpy as np

from safemaml.errors import SafeMamlError


class BatchEnv(Protocol):
    """B environments stepped together, each with its own task.

    `done` is the per-environment mask of finished episodes; a finished environment
    is frozen (zero reward, unchanged observation) until the next reset.
    """

    num_envs: int
    obs_dim: int
    act_dim: int
    done: np.ndarray

    def set_tasks(self, tasks: np.ndarray) -> None: ...

    def reset(self, seed: int | None = None) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class TaskFamily(ABC):
    """A distribution over tasks sharing dynamics, plus a factory for batched environments."""

    name: str
    description: str
    distribution: str  # human-readable, e.g. "v_goal ~ U[0, 2]"
    param_names: tuple[str, ...]
    train_range: tuple[float, float] | None = None  # a one-parameter family's p(T) support (figures shade it)
    horizon: int
    obs_dim: int
    act_dim: int

    @property
    def num_params(self) -> int:
        return len(self.param_names)

    @abstractmethod
    def sample(self, num_tasks: int, rng: np.random.Generator) -> np.ndarray:
        """Draw `num_tasks` tasks from the training distribution, shape [K, P]."""

    @abstractmethod
    def eval_grid(self) -> np.ndarray:
        """The default evaluation tasks, shape [G, P]; may extend beyond the training range."""

    @abstractmethod
    def make_env(self, num_envs: int, nthread: int = 0, clip_actions: bool = True) -> BatchEnv:
        """A batched environment of `num_envs` environments (tasks set by `set_tasks`).

        `clip_actions`: clip actions to the action bounds before the environment (the paper's
        code), so that control costs are paid on the clipped actions.
        """

    @abstractmethod
    def _accepts(self, tasks: np.ndarray) -> np.ndarray:
        """Boolean mask [K]: which rows are tasks this family accepts."""

    domain: str  # human-readable accepted parameter domain, for error messages

    def validate(self, tasks: np.ndarray | list | float) -> np.ndarray:
        """Return `tasks` as a float64 [K, P] array, or raise SafeMamlError naming the bad value."""
        arr = np.asarray(tasks, dtype=np.float64)
        if arr.ndim == 0 or (arr.ndim == 1 and self.num_params > 1 and arr.shape[0] == self.num_params):
            arr = arr.reshape(1, -1)
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2 or arr.shape[1] != self.num_params:
            raise SafeMamlError(
                f"{self.name}: tasks must have shape [K, {self.num_params}] "
                f"({', '.join(self.param_names)}), got {tuple(np.shape(tasks))}"
            )
        ok = np.isfinite(arr).all(axis=1) & self._accepts(arr)
        if not ok.all():
            bad = arr[int(np.argmin(ok))]
            raise SafeMamlError(
                f"{self.name}: task {bad.tolist()} is outside the accepted domain {self.domain}"
            )
        return arr

    def summary(self) -> dict[str, object]:
        """One row of `safemaml tasks`."""
        return {
            "family": self.name,
            "tasks": self.distribution,
            "horizon": self.horizon,
            "obs": self.obs_dim,
            "act": self.act_dim,
            "description": self.description,
        }
