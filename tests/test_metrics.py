"""Metric and CVaR values against independent references: cvxpy LPs, scipy, numpy, binomial sums."""

import cvxpy as cp
import numpy as np
import pytest
import torch
from scipy import optimize, stats

from objectives.cvar import cvar_weights, value_at_risk
from objectives.quantile import upper_quantile
from safemaml.metrics import certificate, clopper_pearson_lower, cvar_upper, p_hat, violation_rate


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
    assert cert["certified"] == float((q - 0.05) / 0.95 >= 0.8)
    # 29 trajectories are the fewest that can certify beta = 0.1 at alpha1 = 0.05
    assert clopper_pearson_lower(29, 29, 0.05) >= 0.9 > clopper_pearson_lower(28, 28, 0.05)
