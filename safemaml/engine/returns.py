"""Discounted returns, the linear feature baseline, GAE and advantage normalisation.

All functions take [K, n, H] tensors (task, trajectory, time) with a 0/1 `mask` of the steps
that were taken, and treat each task separately: the baseline is fitted per task, as MAML's
inner loop only ever sees one task's data.
"""

from __future__ import annotations

import torch
from torch import Tensor


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Return-to-go G_t = sum_l gamma^l r_{t+l} over the steps taken: [K, n, H] -> [K, n, H]."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = (rewards[..., t] + gamma * running) * mask[..., t]
        out[..., t] = running
    return out


def baseline_features(obs: Tensor, mask: Tensor) -> Tensor:
    """Features (obs, obs^2, t, t^2, t^3, 1) per step, t scaled by 1/100; zero where masked."""
    H = obs.shape[-2]
    obs = obs.clamp(-10.0, 10.0)
    t = (torch.arange(H, device=obs.device, dtype=obs.dtype) / 100.0).expand(*obs.shape[:-1])
    feats = torch.cat([obs, obs.pow(2), t[..., None], t[..., None].pow(2), t[..., None].pow(3),
                       torch.ones_like(t)[..., None]], dim=-1)
    return feats * mask[..., None]


def fit_linear_baseline(obs: Tensor, returns: Tensor, mask: Tensor, reg: float = 1e-5) -> Tensor:
    """Per-task ridge regression of returns on the features; the values V(s_t), [K, n, H].

    The ridge term is `reg` times the mean of the task's feature second moments, so it keeps the
    system non-singular at any scale (constant observations, a single step); a task whose data are
    not finite gets a zero baseline instead of an error. The system X'X + ridge is symmetric positive
    definite and ill-conditioned (o and o^2 of a constant observation are collinear with the bias), so it
    is solved in float64 by Cholesky. In float32 the solver's rounding alone changed training outcomes (the
    bandit's positive-control test flipped between LU and Cholesky), and batched LU (torch.linalg.solve_ex,
    MKL) returned invalid pivots on Ant's features, whose contact-force columns are mostly zero, and raised.
    """
    dtype, mask64 = obs.dtype, mask.double()
    X = baseline_features(obs.double(), mask64).flatten(1, 2)  # [K, n*H, F]
    y = (returns.double() * mask64).flatten(1, 2)
    finite = torch.isfinite(X).all(2).all(1) & torch.isfinite(y).all(1)  # [K]
    X = torch.where(finite[:, None, None], X, torch.zeros_like(X))
    y = torch.where(finite[:, None], y, torch.zeros_like(y))
    xtx, xty = X.transpose(1, 2) @ X, (X.transpose(1, 2) @ y[..., None])
    eye = torch.eye(X.shape[-1], device=X.device, dtype=X.dtype)
    scale = xtx.diagonal(dim1=1, dim2=2).mean(-1, keepdim=True)[..., None].clamp_min(1e-8)
    chol, info = torch.linalg.cholesky_ex(xtx + reg * scale * eye)  # a failed factor (info > 0) is not used:
    values = (X @ torch.cholesky_solve(xty, chol))[..., 0]  # [K, n*H]   `ok` below gives that task zeros
    ok = (finite & (info == 0))[:, None] & torch.isfinite(values).all(1, keepdim=True)
    return torch.where(ok, values, torch.zeros_like(values)).view_as(returns).to(dtype) * mask


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimates; V is 0 after a trajectory's last step: [K, n, H]."""
    H = rewards.shape[-1]
    next_values = torch.cat([values[..., 1:] * mask[..., 1:], torch.zeros_like(values[..., :1])], -1)
    deltas = (rewards + gamma * next_values - values) * mask
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(H - 1, -1, -1):
        running = (deltas[..., t] + gamma * lam * running) * mask[..., t]
        adv[..., t] = running
    return adv


def normalize_per_task(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over each task's steps taken."""
    count = mask.sum((1, 2), keepdim=True).clamp_min(1.0)
    mean = (x * mask).sum((1, 2), keepdim=True) / count
    var = ((x - mean).pow(2) * mask).sum((1, 2), keepdim=True) / count
    return (x - mean) / (var.sqrt() + eps) * mask


def advantages(obs: Tensor, rewards: Tensor, mask: Tensor, gamma: float, lam: float,
               normalize: bool = True) -> Tensor:
    """Baseline-corrected GAE advantages for each task's trajectories (no gradient)."""
    with torch.no_grad():
        values = fit_linear_baseline(obs, discounted_returns(rewards, mask, gamma), mask)
        adv = gae(rewards, values, mask, gamma, lam)
        return normalize_per_task(adv, mask) if normalize else adv
