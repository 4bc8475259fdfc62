"""The cvar and quantile objectives against the formulas of docs/objectives.md, written here in numpy with loops.

Each trajectory's log-likelihood is its own free parameter, so the gradient of the loss with respect to it is the
weight the objective puts on that trajectory: those weights, the loss value and the reported metrics are compared
with the reference in float64 at a tolerance of 1e-9.
"""

import math

import numpy as np
import pytest
import torch

from objectives import make_objective
from objectives.cvar import value_at_risk
from objectives.quantile import silverman_bandwidth
from safemaml.engine.metabatch import MetaBatch

# ---- the reference ----------------------------------------------------------------------------------------------


def _scale(gamma):
    flat = gamma.reshape(-1)
    med = np.sort(flat)[(len(flat) - 1) // 2]  # torch's median: the lower middle value
    dev = np.abs(flat - med)
    return max(np.sort(dev)[(len(dev) - 1) // 2], 1e-3)


def _cvar(x, alpha):
    """Mean of the alpha-fraction largest values (a fractional atom included) and its per-value weights."""
    order = np.argsort(-x, kind="stable")
    k = alpha * len(x)
    w = np.zeros(len(x))
    for rank, i in enumerate(order):
        w[i] = 1.0 if rank < math.floor(k) else (k - math.floor(k) if rank == math.floor(k) else 0.0)
    return float((w * x).sum() / k), w / k


def _loo(w):
    m = len(w)
    return np.array([w[j] - np.delete(w, j).mean() for j in range(m)])


def _cvar_reference(pre, post, beta, delta, eta, margin, aim="tail"):
    K, n, m = len(pre), pre.shape[1], post.shape[1]
    gamma = pre[:, :, None] - post[:, None, :]
    s = _scale(gamma)
    y = np.array([_cvar(gamma[k].reshape(-1), beta)[0] for k in range(K)])
    c, omega = _cvar(y, delta)
    active = float(c + margin * s > 0)
    pair_w = np.zeros((K, n, m))
    for k in range(K):
        values = np.sort(gamma[k].reshape(-1))[::-1]
        nu = values[max(math.ceil(beta * n * m) - 1, 0)]
        for i in range(n):
            for j in range(m):
                pair_w[k, i, j] = active * eta / s * omega[k] * max(gamma[k, i, j] - nu, 0.0) / (beta * n * m)
    if aim == "neutral":  # the gradient of mean Gamma, scaled to the tail weights' total magnitude (0 if no change)
        total = np.abs(gamma).sum()
        pair_w = gamma * np.abs(pair_w).sum() / total if total > 0 else np.zeros_like(gamma)
    post_w = pair_w.sum(1)
    metrics = {"cvar_C": c / s, "penalty_active": active, "scale": s}
    return np.array([_loo(w) for w in post_w]), None, metrics


def _silverman(x, c, floor):
    iqr = np.quantile(x, 0.75) - np.quantile(x, 0.25)
    return max(c * min(x.std(ddof=1), iqr / 1.349) * len(x) ** -0.2, floor)


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


def _quantile_reference(pre, post, beta, delta, eta, margin, bandwidth, temperature):
    K, n, m = len(pre), pre.shape[1], post.shape[1]
    gamma = pre[:, :, None] - post[:, None, :]
    s = _scale(gamma)
    q = np.array([np.quantile(gamma[k].reshape(-1), 1 - beta) for k in range(K)])
    threshold = np.quantile(q, 1 - delta)
    omega = np.array([_sigmoid((q[k] - threshold) / (temperature * s)) / (delta * K) for k in range(K)])
    post_w, pre_w = np.zeros((K, m)), np.zeros((K, n))
    for k in range(K):
        h = _silverman(gamma[k].reshape(-1), bandwidth, 1e-3 * s)
        z = (q[k] - gamma[k]) / h
        density = np.exp(-0.5 * z ** 2).mean() / (h * math.sqrt(2 * math.pi))
        active = float(q[k] + margin * s > 0)
        for i in range(n):
            for j in range(m):
                dq = -(_sigmoid(z[i, j]) - (1 - beta)) / (density * n * m)
                w = eta / s * omega[k] * active * dq
                post_w[k, j] += w
                pre_w[k, i] += w
    metrics = {"quantile_penalty": float((omega * np.maximum(q / s + margin, 0)).sum()), "scale": s}
    return np.array([_loo(w) for w in post_w]), np.array([_loo(w) for w in pre_w]), metrics


# ---- the objectives, through free log-likelihoods --------------------------------------------------------------


def _batch(pre, post):
    K = len(pre)
    post_ll = torch.zeros(K, post.shape[1], dtype=torch.float64, requires_grad=True)
    pre_ll = torch.zeros(K, pre.shape[1], dtype=torch.float64, requires_grad=True)
    surrogates = torch.linspace(-1, 1, K, dtype=torch.float64)
    batch = MetaBatch(pre_returns=torch.tensor(pre), post_returns=torch.tensor(post), surrogates=surrogates,
                      pre_loglik=pre_ll, pre_loglik_old=pre_ll.detach(), post_loglik=post_ll,
                      post_loglik_old=post_ll.detach(), tasks=torch.zeros(K, 1))
    return batch, post_ll, pre_ll


def _weights(objective, pre, post):
    batch, post_ll, pre_ll = _batch(pre, post)
    loss, metrics = objective(batch)
    post_g, pre_g = torch.autograd.grad(loss, [post_ll, pre_ll], allow_unused=True)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)  # surrogates average to 0; the penalty term is 0 at theta
    assert metrics["surrogate"] == pytest.approx(0.0, abs=1e-12)
    return post_g.numpy(), None if pre_g is None else pre_g.numpy(), metrics


def _returns(seed, K=7, n=5, m=4, spread=3.0, gain=0.5):
    rng = np.random.default_rng(seed)
    shift = rng.normal(size=(K, 1)) * spread
    return rng.normal(size=(K, n)) * spread + shift, rng.normal(size=(K, m)) * spread + shift + gain


def _compare(got, expected):
    (post, pre, metrics), (post_ref, pre_ref, metrics_ref) = got, expected
    np.testing.assert_allclose(post, post_ref, rtol=1e-9, atol=1e-12)
    assert np.abs(post_ref).max() > 1e-3  # the penalty is active somewhere
    if pre_ref is None:
        assert pre is None
    else:
        np.testing.assert_allclose(pre, pre_ref, rtol=1e-9, atol=1e-12)
    assert {k: metrics[k] for k in metrics_ref} == pytest.approx(metrics_ref, rel=1e-9)


@pytest.mark.parametrize("beta,delta,eta,margin,spread,n", [(0.1, 0.2, 1.0, 0.0, 3.0, 5), (0.3, 0.5, 2.5, 0.2, 0.01, 5),
                                                             (0.05, 0.3, 0.7, 0.0, 1.0, 10)])
def test_cvar_weights_and_metrics(beta, delta, eta, margin, spread, n):
    """(With beta n m = 1 the estimate is 0: nu is then the largest pair, and (gamma - nu)^+ vanishes; n = 10
    keeps beta = 0.05 at two pairs.)"""
    pre, post = _returns(1, n=n, spread=spread, gain=0.0)
    objective = make_objective("cvar", beta=beta, delta=delta, eta=eta, margin=margin)
    _compare(_weights(objective, pre, post), _cvar_reference(pre, post, beta, delta, eta, margin))


def test_cvar_neutral_aim_pushes_as_hard_at_the_mean():
    pre, post = _returns(5, spread=2.0, gain=-0.3)
    tail = _weights(make_objective("cvar", beta=0.2, delta=0.3, eta=2.0), pre, post)
    neutral = _weights(make_objective("cvar", beta=0.2, delta=0.3, eta=2.0, aim="neutral"), pre, post)
    _compare(neutral, _cvar_reference(pre, post, 0.2, 0.3, 2.0, 0.0, aim="neutral"))
    assert neutral[2] == tail[2]  # same C, activity and scale
    assert np.count_nonzero(neutral[0]) > np.count_nonzero(tail[0])  # every task is weighted, not the worst


def test_cvar_neutral_aim_with_small_or_no_differences():
    """Pairs summing to |Gamma| < 1 are scaled like any others; no difference at all gives zero weights."""
    pre, post = _returns(6, K=3, n=2, m=2, spread=0.01, gain=0.0)
    objective = make_objective("cvar", beta=0.5, margin=100.0, aim="neutral")
    got = _weights(objective, pre, post)
    expected = _cvar_reference(pre, post, 0.5, 0.1, 1.0, 100.0, aim="neutral")
    assert np.abs(pre[:, :, None] - post[:, None, :]).sum() < 1 and expected[2]["penalty_active"] == 1.0
    _compare(got, expected)
    flat = np.ones((3, 2))
    post_w, _, metrics = _weights(objective, flat, flat.copy())
    assert metrics["penalty_active"] == 1.0 and np.array_equal(post_w, np.zeros((3, 2)))


def test_cvar_margin_switches_the_penalty_on():
    """All tasks improve (C < 0): the penalty is off without a margin and on once C + margin s > 0."""
    pre, post = _returns(2, spread=0.01)
    c = _cvar_reference(pre, post, 0.1, 0.1, 1.0, 0.0)[2]["cvar_C"]
    assert c < 0
    for margin, active in ((0.0, 0.0), (-0.5 * c, 0.0), (-2 * c, 1.0)):
        got = _weights(make_objective("cvar", margin=margin), pre, post)
        expected = _cvar_reference(pre, post, 0.1, 0.1, 1.0, margin)
        assert got[2]["penalty_active"] == expected[2]["penalty_active"] == active
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-9, atol=1e-12)


def test_cvar_no_change_is_not_a_violation():
    """Gamma = 0 everywhere: C = 0 is not > 0, so the penalty is off."""
    pre = np.ones((4, 3))
    _, _, metrics = _weights(make_objective("cvar"), pre, pre.copy())
    assert metrics["penalty_active"] == 0.0 and metrics["cvar_C"] == 0.0


@pytest.mark.parametrize("beta,delta,eta,margin,bandwidth,temperature,pre_grad",
                         [(0.1, 0.2, 1.0, 0.0, 0.9, 0.1, False), (0.3, 0.4, 3.0, 0.3, 0.4, 0.5, True),
                          (0.2, 0.3, 0.5, 0.0, 2.0, 0.05, True)])
def test_quantile_weights_and_metrics(beta, delta, eta, margin, bandwidth, temperature, pre_grad):
    pre, post = _returns(3, spread=2.0)
    objective = make_objective("quantile", beta=beta, delta=delta, eta=eta, margin=margin, bandwidth=bandwidth,
                               temperature=temperature, pre_update_grad=pre_grad)
    post_ref, pre_ref, metrics = _quantile_reference(pre, post, beta, delta, eta, margin, bandwidth, temperature)
    _compare(_weights(objective, pre, post), (post_ref, pre_ref if pre_grad else None, metrics))


def test_a_task_at_exactly_zero_quantile_is_not_penalised():
    """Task 6's pairs are 0 (15 of them) or -1 (5): q_T = 0 exactly, which is not a violation. The other tasks
    improve clearly but task 5, which gets worse, so task 6 is among the worst delta-fraction and weighted."""
    pre, post = _returns(3, spread=2.0, gain=6.0)
    post[5] -= 12.0
    pre[6], post[6] = 4.0, [4.0, 4.0, 4.0, 5.0]
    objective = make_objective("quantile", beta=0.2, delta=0.3, pre_update_grad=True)
    got = _weights(objective, pre, post)
    expected = _quantile_reference(pre, post, 0.2, 0.3, 1.0, 0.0, 0.9, 0.1)
    _compare(got, expected)
    assert np.abs(got[0][6]).max() == 0 and np.abs(got[0][5]).max() > 0


def test_value_at_risk_of_a_small_tail_is_the_largest_value():
    x = torch.tensor([[3.0, 9.0, 1.0, 4.0]], dtype=torch.float64)
    assert value_at_risk(x, 0.2).item() == 9.0  # ceil(0.8) = 1: the largest
    assert value_at_risk(x, 0.5).item() == 4.0


def test_silverman_bandwidth_per_row_with_its_defaults():
    rng = np.random.default_rng(4)
    x = np.stack([rng.normal(size=40) * 3, rng.standard_t(2, size=40), np.full(40, 2.0)])
    got = silverman_bandwidth(torch.tensor(x)).numpy()
    np.testing.assert_allclose(got, [_silverman(row, 0.9, 1e-6) for row in x], rtol=1e-12)
    assert got[2] == 1e-6  # a constant row: the floor


def test_quantile_margin_in_units_of_s_and_the_bandwidth_floor():
    """All tasks improve (q_T < 0); the margin is set so that only the task with the largest q_T is switched on,
    by q_T + margin * s landing in (0, 1). Task 0's pairs spread over 2e-3 only, so its bandwidth is the floor
    1e-3 s (about 2e-3)."""
    pre, post = _returns(8, spread=2.0, gain=6.0)
    pre[0] = post[0].mean() - 2.0 + np.arange(5) * 5e-4  # Gamma about -2, a spread of 2e-3 (Silverman: 4e-4)
    post[0] = post[0].mean()
    gamma = pre[:, :, None] - post[:, None, :]
    s = _scale(gamma)
    q = np.array([np.quantile(g.reshape(-1), 0.9) for g in gamma])
    assert q.max() < 0 and s > 1.3
    margin = 1.5 * -q.max() / s
    assert 0 < q.max() + margin * s < 1 and (q + margin * s > 0).sum() == 1 and q.max() + margin / s < 0
    objective = make_objective("quantile", beta=0.1, delta=0.3, margin=margin, pre_update_grad=True)
    _compare(_weights(objective, pre, post), _quantile_reference(pre, post, 0.1, 0.3, 1.0, margin, 0.9, 0.1))
    floor_task = _weights(make_objective("quantile", beta=0.1, delta=0.3, margin=3.0 / s, pre_update_grad=True),
                          pre, post)
    _compare(floor_task, _quantile_reference(pre, post, 0.1, 0.3, 1.0, 3.0 / s, 0.9, 0.1))
    assert np.abs(floor_task[1][0]).max() > 0  # task 0 is weighted, through its floored bandwidth
