"""The positive control of issue 11, fast: on the Gaussian bandit MAML violates Eq. 6 by construction,
and a constrained objective lowers the exact violation rate (docs/positive-control.md).

The threshold is derived here, independently of the code under test. With per-task normalised
advantages the inner step moves log sigma_d by alpha s_d with |s_d| <= sqrt(m4_d), m4_d the mean of
(eps^2 - 1)^2 over the n H pre-update steps (Cauchy-Schwarz), and a post-update return is at best
that of a policy centred on the goal. So for every policy N(mu, sigma^2) and goal g,
    p_T <= Pr( sum_d sigma_d^2 X_d >= sum_d sigma_d^2 exp(-2 alpha sqrt(m4_d)) Y_d ),
X_d ~ ncx2(H, H (mu_d - g_d)^2 / sigma_d^2), Y_d ~ chi2(H), drawn with numpy. Goals where this bound
is below 1 - beta violate whatever theta is: their share of p(T) is a floor on V.

Both arms start from the same policy, centred on the task square with sigma = 0.15 (where MAML is
after ~50 meta-iterations of the full control), and train for 40 meta-iterations on 2 seeds.
"""

import dataclasses

import numpy as np
import torch

from safemaml.config import PolicyConfig, TrainConfig
from safemaml.engine.bandit_exact import InnerStep, gaussian, midpoint_grid, task_statistics
from safemaml.engine.learner import policy_spec
from safemaml.engine.policy import mean_action
from safemaml.runs.train import train
from safemaml.tasks import get_family

BETA, DELTA = 0.1, 0.05
FAMILY = get_family("bandit")
CONFIG = TrainConfig(tasks="bandit", iterations=40, meta_batch_size=10, fast_batch_size=10, post_batch_size=10,
                     checkpoint_every=40, policy=PolicyConfig(hidden=(16, 16)))
CONSTRAINED = ("lagrangian", {"multiplier": 1.0, "lambda_lr": 10.0})
SEEDS = (0, 1)
DRAWS = 20000


def p_upper_bound(mu: np.ndarray, std: np.ndarray, goals: np.ndarray, alpha: float, n: int, H: int,
                  seed: int = 0) -> np.ndarray:
    """The bound above on p_T for every goal [G, A] (Monte Carlo with DRAWS samples)."""
    rng = np.random.default_rng(seed)
    A = len(mu)
    m4 = ((rng.standard_normal((DRAWS, n * H, A)) ** 2 - 1) ** 2).mean(1)
    post = (std ** 2 * np.exp(-2 * alpha * np.sqrt(m4)) * rng.chisquare(H, (DRAWS, A))).sum(-1)
    bounds = []
    for g in goals:
        pre = (std ** 2 * rng.noncentral_chisquare(H, H * (mu - g) ** 2 / std ** 2, (DRAWS, A))).sum(-1)
        bounds.append((pre >= post).mean())
    return np.array(bounds)


def violation_floor(mu: np.ndarray, std: np.ndarray, alpha: float, n: int, H: int) -> float:
    """Share of p(T) = U[-1, 1]^2 whose bound is below 1 - beta (4 Monte-Carlo errors of margin)."""
    goals = np.random.default_rng(1).uniform(-1, 1, (4000, 2))
    near = goals[np.linalg.norm((goals - mu) / std, axis=1) < 2.0]  # beyond 2 sigma the bound exceeds 0.99
    bound = p_upper_bound(mu, std, near, alpha, n, H)
    return float((bound + 4 * np.sqrt(0.25 / DRAWS) < 1 - BETA).sum() / len(goals))


def start_checkpoint(path) -> None:
    """A policy with mean (0, 0) and sigma 0.15 at the bandit's observation, as a checkpoint for cfg.init."""
    spec = policy_spec(CONFIG, FAMILY)
    params = spec.init(0)
    last = f"b{spec.num_layers - 1}"
    params[last] = params[last] - mean_action(spec, params, torch.ones(1))
    params["log_std"] = torch.full_like(params["log_std"], float(np.log(0.15)))
    torch.save({"params": params}, path)


def measure(cfg: TrainConfig, params, goals: np.ndarray):
    spec = policy_spec(cfg, FAMILY)
    inner = InnerStep(cfg.adapt, cfg.gamma, cfg.gae_lambda, cfg.fast_batch_size, FAMILY.horizon)
    return task_statistics(spec, inner, params, goals, rounds=100, post_draws=4, pre_pool=2000, seed=5)


def test_the_bound_makes_the_goal_at_the_mean_violate():
    """The derivation's headline: at g = mu, p_T <= ~0.73 < 1 - beta for the paper's alpha and n = 20."""
    bound = p_upper_bound(np.zeros(2), np.full(2, 0.3), np.zeros((1, 2)), 0.1, 20, FAMILY.horizon)
    assert bound[0] < 0.8


def test_maml_violates_by_construction_and_a_constrained_objective_lowers_it(tmp_path):
    torch.set_num_threads(1)
    start_checkpoint(tmp_path / "start.pt")
    rates: dict[str, list[float]] = {"maml": [], CONSTRAINED[0]: []}
    for seed in SEEDS:
        for name, extra in (("maml", {}), CONSTRAINED):
            cfg = dataclasses.replace(CONFIG, seed=seed, init=str(tmp_path / "start.pt"),
                                      objective={"name": name, "beta": BETA, "delta": DELTA, **extra})
            params = train(cfg, tmp_path / f"{name}{seed}", quiet=True).params
            rates[name].append(measure(cfg, params, midpoint_grid(10)).violation_rate(BETA))
            if name != "maml":
                continue
            mu, log_std = (t.numpy() for t in gaussian(policy_spec(cfg, FAMILY), params))
            std, alpha, n, H = np.exp(log_std), cfg.adapt.fast_lr, cfg.fast_batch_size, FAMILY.horizon
            at_mean = measure(cfg, params, mu[None])  # the goal where the pre-update policy is best
            bound = p_upper_bound(mu, std, mu[None], alpha, n, H)[0]
            assert at_mean.p[0] <= bound + 4 * (at_mean.p_se[0] + np.sqrt(0.25 / DRAWS)) and bound < 1 - BETA
            floor = violation_floor(mu, std, alpha, n, H)
            assert 0 < floor < rates["maml"][-1], (floor, rates)  # V above the derived threshold
    assert np.mean(rates[CONSTRAINED[0]]) < np.mean(rates["maml"]), rates
