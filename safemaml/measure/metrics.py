"""The metrics of negative adaptation, computed in one place for `train` and `evaluate`.

Inputs are numpy arrays of undiscounted returns: pre [K, n] (with theta) and post [K, m]
(with theta'_T). Gamma_T = G(pi_theta) - G(pi_theta'_T); negative adaptation is Gamma_T > 0.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, stats


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
    fraction = k - whole  # > 0 only when whole < len(x), as alpha <= 1
    return float((x[:whole].sum() + (fraction * x[whole] if fraction > 0 else 0.0)) / k)


def clopper_pearson_lower(successes: np.ndarray | int, trials: np.ndarray | int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion."""
    s, n = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    with np.errstate(invalid="ignore"):
        bound = stats.beta.ppf(alpha, s, n - s + 1)
    return np.where(s > 0, bound, 0.0)


def clopper_pearson_interval(successes: np.ndarray | int, trials: np.ndarray | int,
                             level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided exact (Clopper-Pearson) interval on a binomial proportion at confidence `level`."""
    s, n = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    tail = (1.0 - level) / 2
    with np.errstate(invalid="ignore"):
        lo = np.where(s > 0, stats.beta.ppf(tail, s, n - s + 1), 0.0)
        hi = np.where(s < n, stats.beta.ppf(1 - tail, s + 1, n - s), 1.0)
    return lo, hi


def wins_to_pass(rounds: int, beta: float, alpha1: float = 0.05) -> int | None:
    """The fewest wins out of `rounds` whose Clopper-Pearson lower bound reaches 1 - beta (None: none do)."""
    wins = np.arange(rounds + 1)
    ok = np.flatnonzero(clopper_pearson_lower(wins, rounds, alpha1) >= 1.0 - beta)
    return int(ok[0]) if len(ok) else None


def pass_probability(p: float, rounds: int, beta: float, alpha1: float = 0.05) -> float:
    """Probability that a task with true p_T = p passes the per-task test with `rounds` rounds."""
    need = wins_to_pass(rounds, beta, alpha1)
    return 0.0 if need is None else float(stats.binom.sf(need - 1, rounds, p))


def min_passing_p(rounds: int, beta: float, alpha1: float = 0.05, power: float = 0.8) -> float:
    """The smallest true p_T that passes the per-task test with probability >= `power` (nan: none does).

    The power of the test at the R used: a task with p_T below this value is likely to fail
    even when it satisfies p_T >= 1 - beta, so "not certified" may be a lack of rounds.
    """
    if pass_probability(1.0 - 1e-12, rounds, beta, alpha1) < power:
        return float("nan")
    return float(optimize.brentq(lambda p: pass_probability(p, rounds, beta, alpha1) - power, 1e-9, 1 - 1e-12,
                                 xtol=1e-10))


def certificate(pre: np.ndarray, post: np.ndarray, beta: float, delta: float,
                alpha1: float = 0.05, alpha2: float = 0.05) -> dict:
    """Two-level Clopper-Pearson certificate of Eq. 6 from one (pre, post) pair per independent round.

    Column r of pre [K, R] and post [K, R] must come from round r alone: its pre-update return
    from a trajectory of pi_theta that the round did NOT adapt on (held out), its post-update
    return from theta'_T fitted on that round's other pre-update trajectories. Then the R pairs
    are independent and the number with Gamma <= 0 is Binomial(R, p_T), p_T = Pr(Gamma_T <= 0)
    over sampling and adaptation. (Pairs from one round share theta'_T and are not independent,
    so a single round certifies nothing.) A task passes when its lower bound on p_T is >= 1 - beta.
    With S passing out of K and q~ the lower bound on the pass probability, the certified
    fraction of good tasks is (q~ - alpha1) / (1 - alpha1): a violating task passes with
    probability <= alpha1. The constraint is certified when that is >= 1 - delta. The bound is
    about p(T) only when the K tasks were drawn i.i.d. from p(T).
    """
    n = min(pre.shape[1], post.shape[1])
    wins = (pre[:, :n] <= post[:, :n]).sum(1)
    passing = clopper_pearson_lower(wins, n, alpha1) >= 1.0 - beta
    q_lower = float(clopper_pearson_lower(int(passing.sum()), len(passing), alpha2))
    fraction = max(0.0, (q_lower - alpha1) / (1.0 - alpha1))
    return {"tasks_passing": int(passing.sum()), "certified_fraction": fraction,
            "certified": bool(fraction >= 1.0 - delta)}


def per_task_rounds(pre: np.ndarray, post: np.ndarray, beta: float, alpha1: float = 0.05) -> dict[str, np.ndarray]:
    """Per task, from one (held-out pre, post) pair per round ([K, R] each): wins, p-hat_T = wins / R
    with its two-sided 95% Clopper-Pearson interval, and whether the task passes the per-task test."""
    rounds = pre.shape[1]
    wins = (pre <= post).sum(1)
    lo, hi = clopper_pearson_interval(wins, rounds)
    return {"wins": wins, "p_hat": wins / rounds, "p_lo": lo, "p_hi": hi,
            "passes": clopper_pearson_lower(wins, rounds, alpha1) >= 1.0 - beta}


def violates(wins: np.ndarray, rounds: int, beta: float) -> np.ndarray:
    """Per task, whether it counts in V-hat: p-hat_T = wins / R < 1 - beta, wins being the rounds with
    Gamma <= 0 (held-out pre-update return <= post-update return). One rule for evaluations and for V-hat
    rescored at another beta from a finished evaluation's tasks.csv (beta changes no simulation)."""
    return np.asarray(wins) / rounds < 1.0 - beta


def round_statistics(pre: np.ndarray, post: np.ndarray, beta: float, delta: float,
                     alpha1: float = 0.05, alpha2: float = 0.05) -> dict:
    """What an evaluation reports from its independent rounds: the certificate, V-hat = the fraction
    of tasks with p-hat_T < 1 - beta with a 95% Clopper-Pearson interval over tasks (task sampling
    only), and the power of the per-task test at this R."""
    rounds = pre.shape[1]
    violating = int(violates((pre <= post).sum(1), rounds, beta).sum())
    lo, hi = clopper_pearson_interval(violating, len(pre))
    return {"violation_rate": violating / len(pre), "violation_rate_lo": float(lo), "violation_rate_hi": float(hi),
            "rounds": rounds, "min_passing_p": min_passing_p(rounds, beta, alpha1),
            **certificate(pre, post, beta, delta, alpha1, alpha2)}


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
              rounds: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Everything a run or an evaluation reports, from returns pre [K, n] and post [K, m].

    `rounds`: one (held-out pre, post) pair per independent round, [K, R] each; when given,
    V-hat, the certificate and the power come from them (`round_statistics`). Without it
    (training: one round per meta-batch) V-hat is the Mann-Whitney estimate from the n x m pairs
    and the certificate is that of a single round, which certifies nothing.
    """
    gamma = pre.mean(1) - post.mean(1)
    out = {
        "pre_return": float(pre.mean()),
        "post_return": float(post.mean()),
        "mean_gamma": float(gamma.mean()),
        "cvar_gamma": cvar_upper(gamma, delta),
        "frac_negative": float((gamma > 0).mean()),
    }
    if rounds is None:
        out.update(violation_rate=violation_rate(pre, post, beta), **certificate(pre[:, :1], post[:, :1], beta, delta))
    else:
        out.update(round_statistics(*rounds, beta, delta))
    if intervals:
        out["mean_gamma_lo"], out["mean_gamma_hi"] = bootstrap_ci(gamma, np.mean)
        out["cvar_gamma_lo"], out["cvar_gamma_hi"] = bootstrap_ci(gamma, lambda g: cvar_upper(g, delta))
    return out
