"""Metric and CVaR values against independent references: cvxpy LPs, scipy, numpy, binomial sums."""

import cvxpy as cp
import numpy as np
import pytest
import torch
from scipy import optimize, stats

from objectives.cvar import cvar_weights, value_at_risk
from objectives.quantile import upper_quantile
from safemaml.measure.metrics import (
    bootstrap_ci,
    certificate,
    clopper_pearson_interval,
    clopper_pearson_lower,
    cvar_upper,
    min_passing_p,
    p_hat,
    pass_probability,
    per_task_rounds,
    round_statistics,
    summarize,
    violation_rate,
    wins_to_pass,
)
from safemaml.runs.evaluate import DEFAULT_ROUNDS


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
        p80 = optimize.brentq(lambda p: power(p, rounds, beta) - 0.8, 0.01, 1 - 1e-12)  # noqa: B023
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


# ---- boundaries, precision and the reports built from the metrics ------------------------------------------------


def test_a_task_exactly_at_one_minus_beta_is_not_a_violation():
    pre, post = np.zeros((2, 2)), np.array([[1.0, -1.0], [-1.0, -1.0]])  # p-hat 0.5 and 0
    assert violation_rate(pre, post, 0.5) == 0.5  # only the task with p-hat 0 < 0.5 violates


def test_cvar_upper_at_level_one_is_the_mean_in_double_precision():
    x = np.array([2.0 ** 24, 1.0, 1.0], dtype=np.float32)  # float32 sums lose both ones
    assert cvar_upper(x, 1.0) == pytest.approx((2.0 ** 24 + 2) / 3, rel=1e-12)
    assert cvar_upper(np.array([3.0, 1.0, 2.0, 0.0]), 0.375) == pytest.approx((3.0 + 0.5 * 2.0) / 1.5)


def test_interval_and_lower_bound_for_a_single_success():
    lo, hi = clopper_pearson_interval(1, 12)
    ci = stats.binomtest(1, 12).proportion_ci(0.95, method="exact")
    assert (float(lo), float(hi)) == pytest.approx((ci.low, ci.high), abs=1e-9) and float(lo) > 0
    assert float(clopper_pearson_lower(1, 12, 0.05)) == pytest.approx(_cp_lower_direct(1, 12, 0.05), abs=1e-9)


def test_power_uses_the_per_task_level_alpha1():
    """alpha1 = 0.01 needs more wins than the default 0.05: the power and min_passing_p follow it."""
    rounds, beta, alpha1 = 90, 0.2, 0.01
    need = _wins_needed(rounds, beta, alpha1)
    assert need > _wins_needed(rounds, beta)
    assert pass_probability(0.9, rounds, beta, alpha1) == pytest.approx(stats.binom.sf(need - 1, rounds, 0.9))
    p80 = optimize.brentq(lambda p: stats.binom.sf(need - 1, rounds, p) - 0.8, 0.01, 1 - 1e-12)
    assert min_passing_p(rounds, beta, alpha1) == pytest.approx(p80, abs=1e-7)
    # 29 rounds pass beta = 0.1 only with 29 wins: even p_T = 1 - 1e-12 passes with probability < 1 - 1e-14
    assert _wins_needed(29, 0.1) == 29 and np.isnan(min_passing_p(29, 0.1, power=1 - 1e-14))


def _rounds_with_ties(rng, tasks: int, rounds: int):
    """Held-out pre and post [K, R] on a coarse grid, so that ties (which count as Gamma <= 0) are common."""
    pre = rng.integers(0, 4, size=(tasks, rounds)).astype(float)
    post = pre + rng.integers(-1, 3, size=(tasks, rounds)) * rng.integers(0, 2, size=(tasks, 1))
    return pre, post


def test_per_task_rounds_and_round_statistics_against_binomtest():
    rng = np.random.default_rng(5)
    pre, post = _rounds_with_ties(rng, 25, 40)
    beta, delta = 0.2, 0.3
    stats_ = round_statistics(pre, post, beta, delta)
    tasks = per_task_rounds(pre, post, beta)
    for k in range(25):
        wins = sum(1 for a, b in zip(pre[k], post[k]) if b - a >= 0)  # Gamma = pre - post <= 0, ties win
        ci = stats.binomtest(wins, 40).proportion_ci(0.95, method="exact")
        assert tasks["wins"][k] == wins and tasks["p_hat"][k] == wins / 40
        assert (tasks["p_lo"][k], tasks["p_hi"][k]) == pytest.approx((ci.low, ci.high), abs=1e-9)
        assert bool(tasks["passes"][k]) == (wins >= _wins_needed(40, beta))
    violating = int(sum(w / 40 < 1 - beta for w in tasks["wins"]))
    ci = stats.binomtest(violating, 25).proportion_ci(0.95, method="exact")
    assert stats_["violation_rate"] == violating / 25
    assert (stats_["violation_rate_lo"], stats_["violation_rate_hi"]) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert stats_["rounds"] == 40 and stats_["tasks_passing"] == int(tasks["passes"].sum())
    need = _wins_needed(40, beta)
    p80 = optimize.brentq(lambda p: stats.binom.sf(need - 1, 40, p) - 0.8, 0.01, 1 - 1e-12)
    assert stats_["min_passing_p"] == pytest.approx(p80, abs=1e-7)
    passing = stats_["tasks_passing"]
    assert stats_["certified_fraction"] == pytest.approx(max(0.0, (_lower(passing, 25) - 0.05) / 0.95), abs=1e-9)


def test_a_task_exactly_at_one_minus_beta_in_rounds_is_not_a_violation():
    pre, post = _rounds([9, 8], 10)  # p-hat 0.9 and 0.8 at beta = 0.1
    assert round_statistics(pre, post, 0.1, 0.5)["violation_rate"] == 0.5


def test_summary_against_an_independent_computation():
    rng = np.random.default_rng(11)
    pre, post = rng.normal(size=(20, 6)), rng.normal(0.3, 1.0, size=(20, 8))
    pre[3], post[3] = 1.0, 1.0  # a tied task
    beta, delta = 0.15, 0.25
    out = summarize(pre, post, beta, delta, intervals=True)
    gamma = pre.mean(1) - post.mean(1)
    assert out["pre_return"] == pytest.approx(pre.mean()) and out["post_return"] == pytest.approx(post.mean())
    assert out["mean_gamma"] == pytest.approx(gamma.mean())
    assert out["cvar_gamma"] == pytest.approx(_cvar_lp(gamma, delta)[0], abs=1e-6)
    assert out["frac_negative"] == np.mean(gamma > 0)
    mw = np.array([stats.mannwhitneyu(post[k], pre[k]).statistic / 48 for k in range(20)])
    assert out["violation_rate"] == pytest.approx(np.mean(mw < 1 - beta))
    one_round = sum(post[:, 0] >= pre[:, 0])  # training: a single round, which certifies nothing
    assert out["tasks_passing"] == 0 and out["certified"] is False and one_round > 0
    assert (out["mean_gamma_lo"], out["mean_gamma_hi"]) == bootstrap_ci(gamma, np.mean)
    assert out["cvar_gamma_lo"] < out["cvar_gamma"] + 1e-9 and out["cvar_gamma_hi"] > out["mean_gamma_hi"]
    assert "mean_gamma_lo" not in summarize(pre, post, beta, delta)


def test_summary_takes_the_certificate_and_v_hat_from_the_rounds():
    rng = np.random.default_rng(12)
    pre, post = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    rounds = _rounds([90] * 29 + [10], 90)
    out = summarize(pre, post, 0.1, 0.2, rounds=rounds)
    expected = round_statistics(*_rounds([90] * 29 + [10], 90), 0.1, 0.2)
    assert {k: out[k] for k in expected} == expected
    assert out["tasks_passing"] == 29 and out["violation_rate"] == pytest.approx(1 / 30)


def test_bootstrap_interval_is_scipys_percentile_interval_in_double_precision():
    x = np.random.default_rng(3).normal(size=30)
    ref = stats.bootstrap((x,), np.mean, n_resamples=2000, confidence_level=0.95, method="percentile",
                          random_state=np.random.default_rng(0), vectorized=False).confidence_interval
    assert bootstrap_ci(x, np.mean) == pytest.approx((ref.low, ref.high), rel=1e-12)
    assert bootstrap_ci(x.astype(np.float32), np.mean) == bootstrap_ci(x.astype(np.float32).astype(float), np.mean)
    narrow = bootstrap_ci(x, np.mean, level=0.5, seed=4)
    assert ref.low < narrow[0] < narrow[1] < ref.high
    lo, hi = bootstrap_ci(x[:2], np.mean)  # two values are enough; one is not
    assert x[:2].min() <= lo <= hi <= x[:2].max()
    assert all(np.isnan(bootstrap_ci(x[:1], np.mean)))
    # a statistic that only works on one resample at a time (not vectorized) still works
    assert bootstrap_ci(x, lambda v: float(sorted(v)[len(v) // 2]))[0] < np.median(x)


def test_round_statistics_use_the_given_levels():
    """alpha1 = 0.01 per task and alpha2 = 0.2 over tasks, against binomtest; delta at which the decision flips."""
    pre, post = _rounds([60] * 27 + [57] * 3 + [40] * 2, 60)
    a1, a2 = 0.01, 0.2
    need = _wins_needed(60, 0.1, a1)
    assert 57 < need <= 60  # the three tasks with 57 wins pass at alpha1 = 0.05 but not at 0.01
    passing = 27
    fraction = (_lower(passing, 32, a2) - a1) / (1 - a1)
    for delta in (1 - fraction + 0.01, 1 - fraction - 0.01):
        out = round_statistics(pre, post, 0.1, delta, alpha1=a1, alpha2=a2)
        assert out["tasks_passing"] == passing
        assert out["certified_fraction"] == pytest.approx(fraction, abs=1e-9)
        assert out["certified"] is (fraction >= 1 - delta)
    p80 = optimize.brentq(lambda p: stats.binom.sf(need - 1, 60, p) - 0.8, 0.01, 1 - 1e-12)
    assert out["min_passing_p"] == pytest.approx(p80, abs=1e-7)
    tasks = per_task_rounds(pre, post, 0.1, alpha1=a1)
    assert tasks["passes"].sum() == passing


def test_bounds_exactly_at_the_thresholds_pass():
    """With one round the Clopper-Pearson lower bound of one win is exactly alpha (a uniform quantile), so the
    thresholds can be met with equality: a task whose bound equals 1 - beta passes, a fraction equal to
    1 - delta certifies, and a power reached exactly at p_T -> 1 counts as reached."""
    assert float(clopper_pearson_lower(1, 1, 0.5)) == 0.5 and float(clopper_pearson_lower(1, 1, 0.75)) == 0.75
    pre, post = np.zeros((1, 1)), np.ones((1, 1))
    cert = certificate(pre, post, beta=0.5, delta=0.5, alpha1=0.5, alpha2=0.75)
    assert cert["tasks_passing"] == 1 and cert["certified_fraction"] == 0.5 and cert["certified"] is True
    assert bool(per_task_rounds(pre, post, 0.5, alpha1=0.5)["passes"][0])
    assert wins_to_pass(1, 0.5, alpha1=0.5) == 1
    assert min_passing_p(1, 0.5, alpha1=0.5, power=1 - 1e-12) == pytest.approx(1 - 1e-12)


def test_wins_to_pass_defaults_to_alpha1_five_percent_and_none_when_impossible():
    assert wins_to_pass(90, 0.1) == _wins_needed(90, 0.1)
    assert wins_to_pass(20, 0.1) is None
    # 29 rounds can pass beta = 0.1 at alpha1 = 0.05 but not at 0.01: no power at all there
    assert wins_to_pass(29, 0.1, alpha1=0.01) is None and np.isnan(min_passing_p(29, 0.1, alpha1=0.01))
