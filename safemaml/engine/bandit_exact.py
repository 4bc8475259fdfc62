"""Exact Gamma statistics on the Gaussian bandit, computed without the environment.

On the bandit (safemaml/tasks/bandit.py) the observation is the constant 1, so a policy is the
Gaussian N(mu, diag sigma^2) with mu = MLP_theta(1), and a trajectory's return is a closed-form
function of its action noise eps ~ N(0, I):

    G = -sum_t ||mu - g + sigma * eps_t||^2 = -sum_d sigma_d^2 chi'^2_H(H (mu_d - g_d)^2 / sigma_d^2),
    J(mu, sigma) = E[G] = -H (||mu - g||^2 + sum_d sigma_d^2).

The inner REINFORCE step needs only two statistics of the pre-update sample D_T: with the
advantages A of the training code (safemaml.engine.returns, per-task normalised) and N = n H steps,
    s_mu    = (1/N) sum A eps / sigma          (minus the inner loss's gradient in mu)
    s_sigma = (1/N) sum A (eps^2 - 1)          (minus its gradient in log sigma)
and theta'_T = theta + alpha (J_mu^T s_mu, s_sigma), J_mu the Jacobian of mu(theta). So theta'_T,
and with it mu'_T and sigma'_T, is drawn exactly by drawing D_T: no environment, no policy pass
per sample. For each task, over R independent rounds (pre-update sample, adaptation):
    E[Gamma_T]  = J(theta) - E_D[J(theta'_T)]                 (exact per round, Monte Carlo over D)
    p_T         = Pr(G_pre <= G_post)                         (the paper's Eq. 5 and 6, trajectory returns)
    pbar_T      = Pr_D(J(theta'_T) >= J(theta))               (the same with expected returns)
p_T compares a fresh pre-update return, independent of D_T, with a post-update return
(Mann-Whitney over a pool of pre-update returns and M post-update returns per round).
Only one inner step (adapt.num_steps = 1) is supported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from safemaml.config import AdaptConfig
from safemaml.engine.policy import Params, PolicySpec, mean_action
from safemaml.engine.returns import advantages, normalize_per_task
from safemaml.errors import SafeMamlError

DTYPE = torch.float64


@dataclass(frozen=True)
class InnerStep:
    """What the inner step depends on: the adaptation, the advantage settings and the sample size n."""

    adapt: AdaptConfig
    gamma: float
    gae_lambda: float
    num_traj: int  # n, pre-update trajectories per task
    horizon: int

    def __post_init__(self) -> None:
        if self.adapt.num_steps != 1:
            raise SafeMamlError(f"exact bandit statistics need adapt.num_steps = 1, got {self.adapt.num_steps}")


def gaussian(spec: PolicySpec, params: Params) -> tuple[Tensor, Tensor]:
    """The policy's mean mu = MLP(1) [A] and its effective (floored) log standard deviation [A]."""
    p = {k: v.to(DTYPE) for k, v in params.items()}
    return mean_action(spec, p, torch.ones(1, dtype=DTYPE)), spec.log_std(p)


def returns_of(mu: Tensor, log_std: Tensor, goals: Tensor, eps: Tensor) -> Tensor:
    """Per-step rewards -||mu - g + sigma eps_t||^2 of actions mu + sigma eps: eps [B, ..., H, A] -> [B, ..., H].

    mu, log_std and goals are [B, A] (broadcast over the middle dimensions of eps)."""
    shape = (mu.shape[0],) + (1,) * (eps.dim() - 2) + (mu.shape[-1],)
    offset = (mu - goals).reshape(shape)
    return -(offset + torch.exp(log_std).reshape(shape) * eps).pow(2).sum(-1)


def mean_jacobian(spec: PolicySpec, params: Params) -> list[Params]:
    """d mu_d / d theta for every action dimension d (the log_std entries are zero)."""
    p = {k: v.to(DTYPE).detach().requires_grad_(True) for k, v in params.items()}
    rows = []
    with torch.enable_grad():
        mu = mean_action(spec, p, torch.ones(1, dtype=DTYPE))
        for d in range(spec.act_dim):
            grads = torch.autograd.grad(mu[d], list(p.values()), retain_graph=True, allow_unused=True)
            rows.append({k: (torch.zeros_like(v) if g is None else g) for (k, v), g in zip(p.items(), grads)})
    return rows


def adapted_means(spec: PolicySpec, params: Params, jac: list[Params], step: Tensor) -> Tensor:
    """mu' = MLP_{theta + sum_d step[:, d] jac_d}(1) for a batch of steps [B, A] -> [B, A].

    The per-round weights are never formed: each layer is W x + sum_d step_d (V_d x), by linearity."""
    p = {k: v.to(DTYPE) for k, v in params.items()}
    x = torch.ones(step.shape[0], spec.obs_dim, dtype=DTYPE)
    act = torch.relu if spec.activation == "relu" else torch.tanh
    for i in range(spec.num_layers):
        w, b = f"w{i}", f"b{i}"
        y = x @ p[w].T + p[b]
        for d, row in enumerate(jac):
            y = y + step[:, d:d + 1] * (x @ row[w].T + row[b])
        x = act(y) if i < spec.num_layers - 1 else y
    return x


def advantage_matrix(inner: InnerStep) -> Tensor:
    """C [nH, nH] with unnormalised advantages = C @ rewards, for one task's n x H steps.

    With a constant observation and every step taken, the training code's baseline fit (a ridge
    regression on features of t alone), returns-to-go and GAE are linear in the rewards with a
    fixed design, so their composition is this matrix: its columns are the training code's own
    advantages (safemaml.engine.returns) of the nH unit reward vectors."""
    n, H = inner.num_traj, inner.horizon
    basis = torch.eye(n * H, dtype=DTYPE).view(n * H, n, H)
    ones = torch.ones(n * H, n, H, dtype=DTYPE)
    adv = advantages(ones[..., None], basis, ones, inner.gamma, inner.gae_lambda, normalize=False)
    return adv.reshape(n * H, n * H).T


def inner_statistics(inner: InnerStep, mu: Tensor, log_std: Tensor, goals: Tensor, eps: Tensor,
                     adv_matrix: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(s_mu, s_sigma) [B, A] of pre-update samples eps [B, n, H, A] on goals [B, A].

    Advantages are the training code's, per task normalised; `adv_matrix` (advantage_matrix)
    computes them as one matrix product instead of safemaml.engine.returns.advantages."""
    B, n, H, _ = eps.shape
    rewards = returns_of(mu.expand(B, -1), log_std.expand(B, -1), goals, eps)
    ones = torch.ones(B, n, H, dtype=DTYPE)
    if adv_matrix is None:
        adv = advantages(ones[..., None], rewards, ones, inner.gamma, inner.gae_lambda)
    else:
        adv = normalize_per_task((rewards.reshape(B, n * H) @ adv_matrix.T).view(B, n, H), ones)
    adv = adv[..., None]
    s_mu = (adv * eps).mean((1, 2)) * torch.exp(-log_std)
    s_sigma = (adv * (eps.pow(2) - 1)).mean((1, 2))
    return s_mu, s_sigma


def adapt_rounds(spec: PolicySpec, inner: InnerStep, params: Params, goals: Tensor, eps: Tensor,
                 adv_matrix: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """theta'_T for pre-update samples eps [B, n, H, A] on goals [B, A]: (mu' [B, A], log_std' [B, A]).

    log_std' is the effective (floored) value; the floor also stops the inner gradient in log_std,
    as torch's clamp does in the training code."""
    mu, log_std = gaussian(spec, params)
    s_mu, s_sigma = inner_statistics(inner, mu, log_std, goals, eps, adv_matrix)
    alpha = inner.adapt.fast_lr
    mu_new = adapted_means(spec, params, mean_jacobian(spec, params), alpha * s_mu)
    raw = params["log_std"].to(DTYPE)
    moving = (raw > np.log(spec.min_std)).to(DTYPE)
    log_std_new = (raw + alpha * s_sigma * moving).clamp_min(np.log(spec.min_std))
    return mu_new, log_std_new


def expected_return(mu: Tensor, log_std: Tensor, goals: Tensor, horizon: int) -> Tensor:
    """J = -H (||mu - g||^2 + sum sigma^2): [..., A] -> [...]."""
    return -horizon * ((mu - goals).pow(2).sum(-1) + torch.exp(2 * log_std).sum(-1))


def mann_whitney(pre: Tensor, post: Tensor) -> tuple[Tensor, Tensor]:
    """Pr(G_pre <= G_post) per task and its standard error, from pre [T, Nb] and post [T, R, M].

    The rounds R are the independent units of the post-update sample (its M returns share theta'_T);
    the variance is that of a two-sample U-statistic: Var_r(w_r) / R + Var_j(S(pre_j)) / Nb."""
    T, R, M = post.shape
    pre_sorted = torch.sort(pre, dim=1).values
    flat = post.reshape(T, R * M)
    below = torch.searchsorted(pre_sorted, flat.contiguous(), right=True).to(DTYPE) / pre.shape[1]
    per_round = below.view(T, R, M).mean(-1)
    post_sorted = torch.sort(flat, dim=1).values
    at_least = 1.0 - torch.searchsorted(post_sorted, pre.contiguous(), right=False).to(DTYPE) / (R * M)
    se = (per_round.var(1) / R + at_least.var(1) / pre.shape[1]).sqrt()
    return per_round.mean(1), se


@dataclass
class TaskStatistics:
    """Exact statistics of Gamma_T per task (numpy arrays [T])."""

    goals: np.ndarray  # [T, A]
    pre_return: np.ndarray  # J(theta)
    post_return: np.ndarray  # E_D[J(theta'_T)]
    mean_gamma: np.ndarray  # E[Gamma_T]
    p: np.ndarray  # Pr(Gamma_T <= 0), trajectory returns
    p_se: np.ndarray  # its Monte-Carlo standard error
    p_expected: np.ndarray  # Pr_D(J(theta'_T) >= J(theta))
    post_std: np.ndarray  # E_D[mean_d sigma'_d]

    def violation_rate(self, beta: float) -> float:
        """V = fraction of tasks with p_T < 1 - beta (an integral over p(T) when the tasks are its quadrature)."""
        return float((self.p < 1.0 - beta).mean())

    def expected_violation_rate(self, beta: float) -> float:
        return float((self.p_expected < 1.0 - beta).mean())

    def ambiguous(self, beta: float, z: float = 2.0) -> float:
        """Fraction of tasks whose p_T lies within z standard errors of 1 - beta (V's Monte-Carlo slack)."""
        return float((np.abs(self.p - (1.0 - beta)) < z * self.p_se).mean())


def task_statistics(spec: PolicySpec, inner: InnerStep, params: Params, goals: np.ndarray, rounds: int = 1000,
                    post_draws: int = 4, pre_pool: int = 10000, seed: int = 0,
                    max_batch: int = 20000) -> TaskStatistics:
    """E[Gamma_T], p_T and pbar_T for every goal [T, A], from `rounds` independent adaptations each.

    Chunks of tasks draw their noise from a generator seeded by (seed, chunk), so the same goals,
    rounds and seed give every policy the same pre-update samples (common random numbers)."""
    goals_t = torch.as_tensor(np.asarray(goals, dtype=np.float64))
    T, A = goals_t.shape
    n, H = inner.num_traj, inner.horizon
    mu, log_std = gaussian(spec, params)
    per_chunk = max(1, max_batch // rounds)
    out: dict[str, list[Tensor]] = {k: [] for k in ("post", "p", "se", "pexp", "std")}
    pre_return = expected_return(mu, log_std, goals_t, H)
    adv_matrix = advantage_matrix(inner)
    with torch.no_grad():
        for c, start in enumerate(range(0, T, per_chunk)):
            g = goals_t[start:start + per_chunk]
            k = g.shape[0]
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, c]).generate_state(1)[0]))
            eps = torch.randn(k * rounds, n, H, A, generator=gen, dtype=DTYPE)
            g_rounds = g.repeat_interleave(rounds, 0)
            mu_new, ls_new = adapt_rounds(spec, inner, params, g_rounds, eps, adv_matrix)
            post_j = expected_return(mu_new, ls_new, g_rounds, H).view(k, rounds)
            post_eps = torch.randn(k * rounds, post_draws, H, A, generator=gen, dtype=DTYPE)
            post_g = returns_of(mu_new, ls_new, g_rounds, post_eps).sum(-1).view(k, rounds, post_draws)
            pre_eps = torch.randn(k, pre_pool, H, A, generator=gen, dtype=DTYPE)
            pre_g = returns_of(mu.expand(k, -1), log_std.expand(k, -1), g, pre_eps).sum(-1)
            p, se = mann_whitney(pre_g, post_g)
            out["post"].append(post_j.mean(1))
            out["p"].append(p)
            out["se"].append(se)
            out["pexp"].append((post_j >= pre_return[start:start + k, None]).to(DTYPE).mean(1))
            out["std"].append(torch.exp(ls_new).mean(-1).view(k, rounds).mean(1))
    cat = {k: torch.cat(v).numpy() for k, v in out.items()}
    pre = pre_return.numpy()
    return TaskStatistics(goals=goals_t.numpy(), pre_return=pre, post_return=cat["post"],
                          mean_gamma=pre - cat["post"], p=cat["p"], p_se=cat["se"], p_expected=cat["pexp"],
                          post_std=cat["std"])


def midpoint_grid(cells: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Centres of a cells x cells grid over [low, high]^2: the midpoint rule for integrals over U[low, high]^2."""
    axis = low + (np.arange(cells) + 0.5) * (high - low) / cells
    return np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
