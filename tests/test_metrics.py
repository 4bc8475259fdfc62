"""Metric and CVaR values against independent references: cvxpy LPs, scipy, numpy, binomial sums."""

import cvxpy as cp
import numpy as np
import pytest
import torch
from scipy import optimize, stats

from objectives.cvar import cvar_weights, value_at_risk
from objectives.quantile import upper_quantile
from safemaml.evaluate import DEFAULT_ROUNDS
from safemaml.metrics import (certificate, clopper_pearson_interval, clopper_pearson_lower, cvar_upper, min_passing_p,
                              p_hat, pass_probability, violation_rate)


def _cvar_lp(x: np.ndarray, alpha: float):
    """CVaR_alpha of x as the Rockafellar-Uryasev LP; its dual values are the CVaR weights."""
    nu, u = cp.Variable(), cp.Variable(len(x))
    tail = [u >= x - nu]
    problem = cp.Problem(cp.Minimize(nu + cp.sum(u) / (alpha * len(x))), tail + [u >= 0])
    problem.solve()
    return problem.value, tail[0].dual_value


@pytest.mark.parametrize("n,alpha", [(37, 0.1), (40, 0.25), (11, 0.5)])
def test_cvar_value_and_weights_equal_the_lp(n, alpha):
    x = np.random.default_rng(n).normal(size=n)
    value, duals = _cvar_lp(x, alpha)
    ours, weights = cvar_weights(torch.tensor(x), alpha)
    assert ours.item() == pytest.approx(value, abs=1e-6)
    np.testing.assert_allclose(weights.numpy(), duals, atol=1e-6)
    assert cvar_upper(x, alpha) == pytest.approx(value, abs=1e-6)
    # nu, the VaR, minimises the RU function
    nu = value_at_risk(torch.tensor(x), alpha).item()
    assert nu + np.maximum(x - nu, 0).sum() / (alpha * n) == pytest.approx(value, abs=1e-6)


def test_p_hat_is_the_mann_whitney_statistic():
    rng = np.random.default_rng(0)
    pre = rng.integers(0, 6, size=(5, 9)).astype(float)  # ties included
    post = rng.integers(0, 6, size=(5, 7)).astype(float)
    expected = [stats.mannwhitneyu(post[k], pre[k]).statistic / (9 * 7) for k in range(5)]
    np.testing.assert_allclose(p_hat(pre, post), expected)
    assert violation_rate(pre, post, 0.3) == pytest.approx(np.mean(np.array(expected) < 0.7))


def test_quantiles_match_numpy():
    x = np.random.default_rng(1).normal(size=(3, 101))
    for level in (0.05, 0.5, 0.9):
        np.testing.assert_allclose(upper_quantile(torch.tensor(x), level).numpy(), np.quantile(x, level, axis=1))


def _cp_lower_direct(s: int, n: int, alpha: float) -> float:
    """The p at which observing >= s successes has probability alpha (a direct binomial solve)."""
    if s == 0:
        return 0.0
    return optimize.brentq(lambda p: stats.binom.sf(s - 1, n, p) - alpha, 1e-12, 1 - 1e-12, xtol=1e-14)


@pytest.mark.parametrize("s,n", [(29, 29), (25, 30), (1, 10), (0, 5), (17, 40)])
def test_clopper_pearson_matches_a_direct_binomial_computation(s, n):
    assert float(clopper_pearson_lower(s, n, 0.05)) == pytest.approx(_cp_lower_direct(s, n, 0.05), abs=1e-9)


def test_certificate_by_hand():
    """Columns are independent rounds, one (pre, post) pair each."""
    rng = np.random.default_rng(2)
    K, n = 40, 30
    pre = rng.normal(size=(K, n))
    post = pre + 10.0  # every pair improves: Gamma <= 0 always
    post[:2] = pre[:2] - 10.0  # two tasks always get worse
    cert = certificate(pre, post, beta=0.1, delta=0.2, alpha1=0.05, alpha2=0.05)
    assert cert["tasks_passing"] == 38  # 30/30 wins: lower bound 0.05^(1/30) = 0.905 >= 0.9
    q = _cp_lower_direct(38, 40, 0.05)
    assert cert["certified_fraction"] == pytest.approx((q - 0.05) / 0.95, abs=1e-9)
    assert cert["certified"] is bool((q - 0.05) / 0.95 >= 0.8)
    # 29 trajectories are the fewest that can certify beta = 0.1 at alpha1 = 0.05
    assert clopper_pearson_lower(29, 29, 0.05) >= 0.9 > clopper_pearson_lower(28, 28, 0.05)


# ---- the certificate's decisions, against thresholds computed with scipy's binomtest ----------------------------


def _lower(wins: int, trials: int, alpha: float = 0.05) -> float:
    """One-sided (1 - alpha) exact lower bound: the low end of binomtest's two-sided (1 - 2 alpha) interval."""
    return stats.binomtest(wins, trials).proportion_ci(1 - 2 * alpha, method="exact").low


def _rounds(wins: list[int], rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """(pre, post) [K, R] whose task k wins (pre <= post) in exactly wins[k] rounds."""
    pre = np.zeros((len(wins), rounds))
    post = np.where(np.arange(rounds) < np.asarray(wins)[:, None], 1.0, -1.0)
    return pre, post


def _wins_needed(rounds: int, beta: float, alpha: float = 0.05):
    """The fewest wins w with Pr(Binomial(R, 1 - beta) >= w) <= alpha: the exact one-sided test's rejection
    region, which is where the Clopper-Pearson lower bound reaches 1 - beta."""
    w = np.arange(1, rounds + 1)
    ok = w[stats.binom.sf(w - 1, rounds, 1 - beta) <= alpha]
    return int(ok[0]) if len(ok) else None


@pytest.mark.parametrize("rounds,beta", [(90, 0.1), (30, 0.3), (45, 0.2)])
def test_a_task_passes_from_exactly_the_wins_binomtest_requires(rounds, beta):
    need = _wins_needed(rounds, beta)
    cert = certificate(*_rounds([need, need - 1], rounds), beta=beta, delta=0.5)
    assert cert["tasks_passing"] == 1  # the task with `need` wins passes, the one with need - 1 does not
    assert certificate(*_rounds([need - 1], rounds), beta=beta, delta=0.5)["tasks_passing"] == 0


@pytest.mark.parametrize("tasks,passing", [(40, 38), (60, 55), (29, 29)])
def test_certified_just_above_and_not_just_below_one_minus_delta(tasks, passing):
    """delta is put halfway between the certified fractions of `passing` and `passing - 1` passing tasks."""
    def fraction(s):
        return (_lower(s, tasks) - 0.05) / 0.95

    delta = 1 - (fraction(passing) + fraction(passing - 1)) / 2
    for s, expected in ((passing, True), (passing - 1, False)):
        wins = [90] * s + [0] * (tasks - s)
        cert = certificate(*_rounds(wins, 90), beta=0.1, delta=delta)
        assert cert["tasks_passing"] == s
        assert cert["certified_fraction"] == pytest.approx(fraction(s), abs=1e-9)
        assert cert["certified"] is expected


def test_two_sided_interval_matches_binomtest():
    for s, n in ((0, 10), (7, 10), (30, 30), (55, 90)):
        ci = stats.binomtest(s, n).proportion_ci(0.95, method="exact")
        lo, hi = clopper_pearson_interval(s, n)
        assert (float(lo), float(hi)) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_power_and_the_default_number_of_rounds():
    """min_passing_p against a direct solve with scipy; with the default R a task with p_T = 0.97 passes at
    beta = 0.1 with probability >= 0.8, and so it does with any R from 89 on (the discrete test's power saws:
    76 rounds reach 0.806, 77-88 do not)."""
    def power(p, rounds, beta):
        need = _wins_needed(rounds, beta)
        return 0.0 if need is None else stats.binom.sf(need - 1, rounds, p)

    for rounds, beta in ((90, 0.1), (30, 0.1), (40, 0.3)):
        need = _wins_needed(rounds, beta)
        assert _lower(need, rounds) >= 1 - beta > _lower(need - 1, rounds)  # the two definitions agree
        p80 = optimize.brentq(lambda p: power(p, rounds, beta) - 0.8, 0.01, 1 - 1e-12)
        assert min_passing_p(rounds, beta) == pytest.approx(p80, abs=1e-7)
        assert pass_probability(0.95, rounds, beta) == pytest.approx(power(0.95, rounds, beta))
    assert np.isnan(min_passing_p(20, 0.1))  # 20 rounds cannot pass beta = 0.1 at all
    assert all(power(0.97, r, 0.1) >= 0.8 for r in range(89, 160)) and DEFAULT_ROUNDS >= 89
    assert power(0.97, 30, 0.1) < 0.45 and power(0.97, 88, 0.1) < 0.8


def test_coverage_of_the_two_level_certificate_by_simulation():
    """Nominal levels hold where they are tight. Per task: p_T = 0.89 < 1 - beta passes at most alpha1 = 5% of
    the time. Over tasks: 79% of tasks good (p_T = 1), the rest at p_T = 0.89, so Eq. 6 fails at delta = 0.2;
    it may be certified at most alpha2 = 5% of the time. (Using S/K in place of its Clopper-Pearson bound
    certifies this case about a third of the time; using p-hat_T >= 1 - beta passes most bad tasks.)"""
    rng = np.random.default_rng(0)
    rounds, sims = 90, 400
    bad_wins = rng.binomial(rounds, 0.89, size=4000)
    bad_pass = certificate(*_rounds(list(bad_wins), rounds), beta=0.1, delta=0.5)["tasks_passing"] / 4000
    assert bad_pass <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 4000)
    tasks, certified = 40, 0
    for _ in range(sims):
        good = rng.random(tasks) < 0.79
        wins = np.where(good, rounds, rng.binomial(rounds, 0.89, size=tasks))
        certified += certificate(*_rounds(list(wins), rounds), beta=0.1, delta=0.2)["certified"]
    assert certified / sims <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / sims)
