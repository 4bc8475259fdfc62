"""Gradient estimators of the penalties on the exactly computable bandit family.

The post-update policy of task T is N(mu_T, sigma_T^2) with parameters phi_T = (mu_T, log sigma_T),
the pre-update policy is fixed. Each objective's penalty gradient in phi, averaged over many
independent meta-batches, must match the finite-difference gradient of the population penalty,
computed from 100,000 common-random-number samples per task of the bandit's returns.

Stated tolerance: |mean estimate - reference| <= 4 standard errors + 15% of |reference|
(elementwise; the 15% covers the O(1/n) bias of plug-in quantiles and CVaRs at n = m = 20).
"""

import dataclasses

import numpy as np
import torch

from objectives import make_objective
from objectives.cvar import cvar_weights
from objectives.quantile import upper_quantile
from safemaml.metabatch import MetaBatch
from safemaml.tasks import get_family

FAMILY = get_family("bandit")
H = FAMILY.horizon
GOALS = torch.tensor([[0.0, 0.0], [0.5, -0.3], [-0.4, 0.6], [0.9, 0.9]], dtype=torch.float64)
PRE_MU, PRE_LOGSTD = torch.tensor([0.2, 0.1], dtype=torch.float64), torch.log(torch.tensor([0.5, 0.5]))
# tasks 0 and 2 adapt badly, 1 and 3 well, far enough apart that the sampled tails are stable
PHI0 = torch.tensor([[0.1, 0.0, -0.7, -0.7], [0.5, -0.3, -1.2, -1.2], [0.3, 0.3, -0.5, -0.5],
                     [0.8, 0.8, -1.0, -1.0]], dtype=torch.float64)
SCALE = 2.0


def _returns(mu, log_std, eps, goals):
    """Bandit returns for actions mu + sigma * eps: eps [K, N, H, 2] -> [K, N]."""
    actions = mu[:, None, None, :] + torch.exp(log_std)[:, None, None, :] * eps
    return -((actions - goals[:, None, None, :]) ** 2).sum((-1, -2))


def _batch(phi, n, m, gen):
    K = phi.shape[0]
    pre_eps = torch.randn(K, n, H, 2, generator=gen, dtype=torch.float64)
    pre = _returns(PRE_MU.expand(K, 2), PRE_LOGSTD.expand(K, 2), pre_eps, GOALS)
    mu, log_std = phi[:, :2], phi[:, 2:]
    with torch.no_grad():
        actions = mu[:, None, None] + torch.exp(log_std)[:, None, None] * torch.randn(K, m, H, 2, generator=gen,
                                                                                     dtype=torch.float64)
    post = -((actions - GOALS[:, None, None]) ** 2).sum((-1, -2))
    z = (actions - mu[:, None, None]) / torch.exp(log_std)[:, None, None]
    loglik = (-0.5 * z ** 2 - log_std[:, None, None]).sum((-1, -2))
    zero = torch.zeros(K, dtype=torch.float64) * phi.sum()
    return MetaBatch(pre_returns=pre, post_returns=post, surrogates=zero, pre_loglik=torch.zeros_like(pre),
                     pre_loglik_old=torch.zeros_like(pre), post_loglik=loglik, post_loglik_old=loglik.detach(),
                     tasks=GOALS)


def _estimate(objective, repeats=1000, n=20, m=20):
    gen = torch.Generator().manual_seed(0)
    grads = []
    for _ in range(repeats):
        phi = PHI0.clone().requires_grad_(True)
        loss, _ = objective(_batch(phi, n, m, gen))
        grads.append(torch.autograd.grad(loss, phi)[0])
    grads = torch.stack(grads)
    return grads.mean(0), grads.std(0) / repeats ** 0.5


def _population_gamma(phi, N=100_000):
    """Gamma = G_pre - G_post per task from N common-random-number pairs: [K, N]."""
    gen = torch.Generator().manual_seed(1)
    K = phi.shape[0]
    pre = _returns(PRE_MU.expand(K, 2), PRE_LOGSTD.expand(K, 2),
                   torch.randn(K, N, H, 2, generator=gen, dtype=torch.float64), GOALS)
    post = _returns(phi[:, :2], phi[:, 2:], torch.randn(K, N, H, 2, generator=gen, dtype=torch.float64), GOALS)
    return pre - post


def _finite_difference(penalty, h=1e-3):
    grad = torch.zeros_like(PHI0)
    for idx in np.ndindex(*PHI0.shape):
        up, down = PHI0.clone(), PHI0.clone()
        up[idx] += h
        down[idx] -= h
        grad[idx] = (penalty(_population_gamma(up)) - penalty(_population_gamma(down))) / (2 * h)
    return grad


def _check(estimate, stderr, reference):
    assert reference.abs().max() > 1e-3, "the reference gradient should not vanish"
    assert ((estimate - reference).abs() <= 4 * stderr + 0.15 * reference.abs().max()).all(), (estimate, reference)


def test_cvar_gradient_matches_the_population_cvar():
    obj = make_objective("cvar", beta=0.2, delta=0.5, eta=1.0, return_scale=SCALE)

    def penalty(gamma):  # eta (C + margin)^+ / s, C = CVaR_delta over tasks of CVaR_beta(Gamma_T)
        y = cvar_weights(gamma, 0.2)[0]
        return torch.clamp(cvar_weights(y, 0.5)[0], min=0) / SCALE

    reference = _finite_difference(penalty)
    _check(*_estimate(obj), reference)


def test_lagrangian_gradient_matches_the_population_smoothed_violation():
    obj = make_objective("lagrangian", beta=0.3, delta=0.1, multiplier=1.0, tau=0.5, tau_h=0.1, return_scale=SCALE)

    def penalty(gamma):
        v = torch.sigmoid(gamma / (0.5 * SCALE)).mean(1)
        return torch.sigmoid((v - 0.3) / 0.1).mean()

    _check(*_estimate(obj), _finite_difference(penalty))


def test_quantile_gradient_matches_the_population_quantile():
    obj = make_objective("quantile", beta=0.2, delta=0.5, eta=1.0, temperature=0.1, return_scale=SCALE)
    q0 = upper_quantile(_population_gamma(PHI0), 0.8)
    omega = obj.task_weights(q0, torch.tensor(SCALE, dtype=torch.float64))  # held fixed, as the estimator does

    def penalty(gamma):
        return (omega * upper_quantile(gamma, 0.8).clamp_min(0)).sum() / SCALE

    _check(*_estimate(obj), _finite_difference(penalty))


def test_quantile_gradient_bias_falls_with_the_sample():
    """The per-task bandwidth h_T = 0.9 sigma_T (nm)^(-1/5) shrinks with n m, so the bias vanishes: at
    n = m = 80 the mean estimate is within 4 standard errors + 5% (not 15%) of the reference, and closer
    than at n = m = 10. s = 10 is wide against these tasks' spread: a bandwidth fixed in units of s
    (h = 0.2 s, the former rule) stays about 14% off at every n."""
    scale = 10.0
    obj = make_objective("quantile", beta=0.2, delta=0.5, eta=1.0, temperature=0.1, return_scale=scale)
    q0 = upper_quantile(_population_gamma(PHI0), 0.8)
    omega = obj.task_weights(q0, torch.tensor(scale, dtype=torch.float64))
    reference = _finite_difference(lambda g: (omega * upper_quantile(g, 0.8).clamp_min(0)).sum() / scale)
    small, _ = _estimate(obj, repeats=300, n=10, m=10)
    large, stderr = _estimate(obj, repeats=200, n=80, m=80)
    worst = reference.abs().max()
    assert ((large - reference).abs() <= 4 * stderr + 0.05 * worst).all(), (large, reference)
    assert (large - reference).abs().max() < (small - reference).abs().max()


def test_inactive_penalties_leave_the_maml_gradient():
    gen = torch.Generator().manual_seed(3)
    phi = PHI0.clone().requires_grad_(True)
    batch = _batch(phi, 10, 10, gen)
    batch = dataclasses.replace(batch, pre_returns=batch.pre_returns - 1e4)  # adaptation always helps
    for name, params in (("cvar", {}), ("quantile", {}), ("lagrangian", {"multiplier": 1.0})):
        loss, _ = make_objective(name, **params)(batch)
        assert torch.autograd.grad(loss, phi, retain_graph=True)[0].abs().max() < 1e-12
