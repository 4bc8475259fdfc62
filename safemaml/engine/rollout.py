"""Collect K tasks x n trajectories x H steps in one loop: one batched policy call and one
batched physics call per control step.

Environment b = k * n + j runs trajectory j of task k. Log-probabilities are computed once
from the action noise itself, so no second policy pass is needed.

On CUDA the policy runs on the GPU and the physics on the CPU: each control step sends the
observations and the action noise to the GPU without waiting (non_blocking) and brings the actions
back, the one host synchronisation per step, which the physics cannot do without. The noise is drawn
on the CPU for every device, so a seed gives the same trajectories on CUDA as on the CPU, up to
float32 rounding in the policy (tests/test_cuda.py).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from safemaml.engine.policy import Params, PolicySpec, mean_action
from safemaml.errors import SafeMamlError
from safemaml.tasks import TaskFamily


@dataclass
class Trajectories:
    """A phase of sampling; every tensor is [K, n, H, ...] on the policy's device."""

    obs: Tensor  # [K, n, H, obs_dim]
    actions: Tensor  # [K, n, H, act_dim]
    rewards: Tensor  # [K, n, H]
    mask: Tensor  # [K, n, H]: 1 where the step was taken (the episode was still running)
    log_probs: Tensor  # [K, n, H]: log pi(a|s) under the sampling parameters (no grad)
    tasks: Tensor  # [K, P]

    @property
    def returns(self) -> Tensor:
        """Undiscounted return of each trajectory, [K, n]."""
        return (self.rewards * self.mask).sum(-1)

    @property
    def num_steps(self) -> int:
        return int(self.mask.sum().item())


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on `n` threads inside the block, so it leaves the cores to MuJoCo."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Sampler:
    """Holds one batched environment of K*n copies of a family and fills Trajectories from it."""

    def __init__(self, family: TaskFamily, spec: PolicySpec, num_tasks: int, num_traj: int,
                 device: torch.device | str = "cpu", horizon: int | None = None, nthread: int = 0,
                 clip_actions: bool = True):
        if num_tasks < 1 or num_traj < 1:
            raise SafeMamlError(f"need at least one task and one trajectory, got {num_tasks} x {num_traj}")
        self.family, self.spec = family, spec
        self.num_tasks, self.num_traj = num_tasks, num_traj
        self.horizon = horizon or family.horizon
        self.device = torch.device(device)
        self.env = family.make_env(num_tasks * num_traj, nthread=nthread, clip_actions=clip_actions)

    @torch.no_grad()
    def sample(self, params: Params, tasks: np.ndarray, seed: int) -> Trajectories:
        """Roll out pi_params on `tasks` [K, P]; params may be per-task (leading dim K).

        Deterministic in `seed`: it seeds both the environments' resets and the action noise.
        """
        K, n, H = self.num_tasks, self.num_traj, self.horizon
        tasks = self.family.validate(tasks)
        if tasks.shape[0] != K:
            raise SafeMamlError(f"sampler holds {K} tasks, got {tasks.shape[0]}")
        self.env.set_tasks(np.repeat(tasks, n, axis=0))
        dev, B, dtype = self.device, K * n, params["log_std"].dtype
        gen = torch.Generator().manual_seed(seed)  # on the CPU for every device: the same noise everywhere
        obs_buf = torch.zeros(H, B, self.spec.obs_dim, device=dev, dtype=dtype)
        act_buf = torch.zeros(H, B, self.spec.act_dim, device=dev, dtype=dtype)
        rew_buf = np.zeros((H, B))
        mask_buf = np.zeros((H, B))
        logp_buf = torch.zeros(H, K, n, device=dev, dtype=dtype)
        log_std = self.spec.log_std(params)
        log_std = log_std.unsqueeze(1) if log_std.dim() == 2 else log_std  # [K, 1, A] for per-task params
        std = torch.exp(log_std)
        logp_const = -(log_std + 0.5 * math.log(2 * math.pi)).sum(-1)  # log-density at the mean
        with torch_threads(1):
            obs = self.env.reset(seed=seed)
            for t in range(H):
                mask_buf[t] = ~self.env.done
                obs_t = torch.as_tensor(obs, dtype=dtype).to(dev, non_blocking=True)
                obs_buf[t] = obs_t
                mean = mean_action(self.spec, params, obs_t.view(K, n, -1))
                eps = torch.randn(K, n, self.spec.act_dim, generator=gen, dtype=dtype).to(dev, non_blocking=True)
                action = (mean + std * eps).view(B, -1)
                act_buf[t] = action
                logp_buf[t] = logp_const - 0.5 * eps.pow(2).sum(-1)  # (a - mean) / std is eps
                obs, rew_buf[t], _ = self.env.step(action.cpu().numpy())  # the step's one synchronisation
                if self.env.done.all():
                    break
        return self._assemble(tasks, obs_buf, act_buf, rew_buf, mask_buf, logp_buf.view(H, B))

    def _assemble(self, tasks, obs_buf, act_buf, rew_buf, mask_buf, logp_buf) -> Trajectories:
        K, n, H, dev = self.num_tasks, self.num_traj, self.horizon, self.device

        def per_task(x: Tensor) -> Tensor:  # [H, B, ...] -> [K, n, H, ...]
            return x.reshape(H, K, n, *x.shape[2:]).movedim(0, 2).contiguous()

        dtype = obs_buf.dtype
        rewards = per_task(torch.as_tensor(rew_buf, dtype=dtype, device=dev))
        mask = per_task(torch.as_tensor(mask_buf, dtype=dtype, device=dev))
        return Trajectories(per_task(obs_buf), per_task(act_buf), rewards, mask, per_task(logp_buf),
                            torch.as_tensor(tasks, dtype=dtype, device=dev))
