"""The metrics of negative adaptation, computed in one place for `train` and `evaluate`.

Inputs are numpy arrays of undiscounted returns: pre [K, n] (with theta) and post [K, m]
(with theta'_T). Gamma_T = G(pi_theta) - G(pi_theta'_T); negative adaptation is Gamma_T > 0.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def p_hat(pre: np.ndarray, post: np.ndarray) -> np.ndarray:
    """Mann-Whitney estimate of p_T = Pr(G_pre <= G_post) per task, ties counted 1/2: [K]."""
    less = (pre[:, :, None] < post[:, None, :]).mean((1, 2))
    ties = (pre[:, :, None] == post[:, None, :]).mean((1, 2))
    return less + 0.5 * ties


def violation_rate(pre: np.ndarray, post: np.ndarray, beta: float) -> float:
    """V-hat: the fraction of tasks with p-hat_T < 1 - beta (the violation rate of Eq. 6)."""
    return float((p_hat(pre, post) < 1.0 - beta).mean())


def cvar_upper(x: np.ndarray, alpha: float) -> float:
    """CVaR_alpha of x: the mean of its worst (largest) alpha-fraction, fractional atoms included."""
    x = np.sort(np.asarray(x, dtype=np.float64))[::-1]
    k = alpha * len(x)
    whole = int(np.floor(k))
    total = x[:whole].sum() + (k - whole) * (x[whole] if whole < len(x) else 0.0)
    return float(total / k)


def clopper_pearson_lower(successes: np.ndarray | int, trials: np.ndarray | int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion."""
    s, n = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    with np.errstate(invalid="ignore"):
        bound = stats.beta.ppf(alpha, s, n - s + 1)
    return np.where(s > 0, bound, 0.0)


def certificate(pre: np.ndarray, post: np.ndarray, beta: float, delta: float,
                alpha1: float = 0.05, alpha2: float = 0.05) -> dict[str, float]:
    """Two-level Clopper-Pearson certificate of Eq. 6 from one (pre, post) pair per independent round.

    Column r of pre [K, R] and post [K, R] must come from round r alone (its own pre-update
    sample, adaptation and post-update sample): only then are the R pairs independent and the
    number with Gamma <= 0 Binomial(R, p_T). Pairs from one round share theta'_T (fitted on
    that round's pre-update trajectories) and are not independent, so a single round
    certifies nothing. A task passes when its lower bound on p_T is >= 1 - beta.
    With S passing out of K and q~ the lower bound on the pass probability, the certified
    fraction of good tasks is (q~ - alpha1) / (1 - alpha1): a violating task passes with
    probability <= alpha1. The constraint is certified when that is >= 1 - delta.
    """
    n = min(pre.shape[1], post.shape[1])
    wins = (pre[:, :n] <= post[:, :n]).sum(1)
    passing = clopper_pearson_lower(wins, n, alpha1) >= 1.0 - beta
    q_lower = float(clopper_pearson_lower(int(passing.sum()), len(passing), alpha2))
    fraction = max(0.0, (q_lower - alpha1) / (1.0 - alpha1))
    return {"tasks_passing": float(passing.sum()), "certified_fraction": fraction,
            "certified": float(fraction >= 1.0 - delta)}


def bootstrap_ci(values: np.ndarray, statistic, seed: int = 0, level: float = 0.95,
                 resamples: int = 2000) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(values) over tasks."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    res = stats.bootstrap((values,), statistic, n_resamples=resamples, confidence_level=level,
                          method="percentile", random_state=np.random.default_rng(seed), vectorized=False)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize(pre: np.ndarray, post: np.ndarray, beta: float, delta: float, intervals: bool = False,
              rounds: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """Everything a run or an evaluation reports, from returns pre [K, n] and post [K, m].

    `rounds`: one (pre, post) pair per independent round, [K, R] each, for the certificate;
    by default the first pair of each task, i.e. a single round.
    """
    gamma = pre.mean(1) - post.mean(1)
    out = {
        "pre_return": float(pre.mean()),
        "post_return": float(post.mean()),
        "mean_gamma": float(gamma.mean()),
        "cvar_gamma": cvar_upper(gamma, delta),
        "frac_negative": float((gamma > 0).mean()),
        "violation_rate": violation_rate(pre, post, beta),
        **certificate(*(rounds if rounds is not None else (pre[:, :1], post[:, :1])), beta, delta),
    }
    if intervals:
        out["mean_gamma_lo"], out["mean_gamma_hi"] = bootstrap_ci(gamma, np.mean)
        out["cvar_gamma_lo"], out["cvar_gamma_hi"] = bootstrap_ci(gamma, lambda g: cvar_upper(g, delta))
    return out
