"""Gradient estimators of the penalties on the exactly computable bandit family.

The post-update policy of task T is N(mu_T, sigma_T^2) with parameters phi_T = (mu_T, log sigma_T),
the pre-update policy is fixed. Each objective's penalty gradient in phi, averaged over 400
independent meta-batches of n = m = 60 trajectories, must match the exact population gradient.

The reference is pathwise: a bandit return is a smooth function of phi for fixed action noise, so
with 100,000 common random numbers per task the population penalty is differentiated by autograd
in one pass (no finite differences). A quantile's pathwise derivative is E[dGamma/dphi | Gamma = q],
estimated by a narrow kernel around q. The sampled meta-batches and the population draws are
shared by all tests (module fixtures).

Stated tolerance, elementwise: |mean estimate - reference| <= 3 standard errors + 3% of max|reference|,
and the standard errors themselves are below 2.5% of max|reference| (so the test can never pass on
noise alone). The 3% covers the O(1/n) bias of plug-in tails at n = m = 60 (measured 1-3%) and the
reference's own Monte Carlo error (0.3-1.2% between population seeds).
"""

import dataclasses

import pytest
import torch

from objectives import make_objective
from objectives.cvar import cvar_weights
from objectives.penalty import return_scale
from objectives.quantile import upper_quantile
from safemaml.engine.metabatch import MetaBatch
from safemaml.tasks import get_family

FAMILY = get_family("bandit")
H = FAMILY.horizon
GOALS = torch.tensor([[0.0, 0.0], [0.5, -0.3], [-0.4, 0.6], [0.9, 0.9]], dtype=torch.float64)
PRE_MU, PRE_LOGSTD = torch.tensor([0.2, 0.1], dtype=torch.float64), torch.log(torch.tensor([0.5, 0.5]))
# tasks 0 and 2 adapt badly, 1 and 3 well, far enough apart that the sampled tails are stable
PHI0 = torch.tensor([[0.1, 0.0, -0.7, -0.7], [0.5, -0.3, -1.2, -1.2], [0.3, 0.3, -0.5, -0.5],
                     [0.8, 0.8, -1.0, -1.0]], dtype=torch.float64)
REPEATS, N_PRE, M_POST, POPULATION = 400, 60, 60, 100_000


def _returns(mu, log_std, eps, goals):
    """Bandit returns for actions mu + sigma * eps: eps [K, N, H, 2] -> [K, N]."""
    actions = mu[:, None, None, :] + torch.exp(log_std)[:, None, None, :] * eps
    return -((actions - goals[:, None, None, :]) ** 2).sum((-1, -2))


def _make_draws(repeats, n, m, seed=0):
    """The random numbers of `repeats` meta-batches: pre-update returns and post-update action noise."""
    gen = torch.Generator().manual_seed(seed)
    K = PHI0.shape[0]
    out = []
    for _ in range(repeats):
        pre_eps = torch.randn(K, n, H, 2, generator=gen, dtype=torch.float64)
        pre = _returns(PRE_MU.expand(K, 2), PRE_LOGSTD.expand(K, 2), pre_eps, GOALS)
        out.append((pre, torch.randn(K, m, H, 2, generator=gen, dtype=torch.float64)))
    return out


@pytest.fixture(scope="module")
def draws():
    return _make_draws(REPEATS, N_PRE, M_POST)


def _batch(phi, pre, post_eps):
    """The MetaBatch of one meta-batch: post-update log-likelihoods differentiable in phi."""
    mu, log_std = phi[:, :2], phi[:, 2:]
    with torch.no_grad():
        actions = mu[:, None, None] + torch.exp(log_std)[:, None, None] * post_eps
    post = -((actions - GOALS[:, None, None]) ** 2).sum((-1, -2))
    z = (actions - mu[:, None, None]) / torch.exp(log_std)[:, None, None]
    loglik = (-0.5 * z ** 2 - log_std[:, None, None]).sum((-1, -2))
    zero = torch.zeros(phi.shape[0], dtype=torch.float64) * phi.sum()
    return MetaBatch(pre_returns=pre, post_returns=post, surrogates=zero, pre_loglik=torch.zeros_like(pre),
                     pre_loglik_old=torch.zeros_like(pre), post_loglik=loglik, post_loglik_old=loglik.detach(),
                     tasks=GOALS)


def _estimate(objective, draws):
    grads = []
    for pre, post_eps in draws:
        phi = PHI0.clone().requires_grad_(True)
        loss, _ = objective(_batch(phi, pre, post_eps))
        grads.append(torch.autograd.grad(loss, phi)[0])
    grads = torch.stack(grads)
    return grads.mean(0), grads.std(0) / len(draws) ** 0.5


@pytest.fixture(scope="module")
def population():
    return make_population()


def make_population(seed=1):
    """phi -> Gamma = G_pre - G_post [K, N], from common random numbers, differentiable in phi."""
    gen = torch.Generator().manual_seed(seed)
    K = PHI0.shape[0]
    pre = _returns(PRE_MU.expand(K, 2), PRE_LOGSTD.expand(K, 2),
                   torch.randn(K, POPULATION, H, 2, generator=gen, dtype=torch.float64), GOALS)
    post_eps = torch.randn(K, POPULATION, H, 2, generator=gen, dtype=torch.float64)
    return lambda phi: pre - _returns(phi[:, :2], phi[:, 2:], post_eps, GOALS)


def _pathwise(population, penalty):
    phi = PHI0.clone().requires_grad_(True)
    return torch.autograd.grad(penalty(population(phi)), phi)[0]


def _population_scale(population):
    """The automatic return scale s (MAD of the pairs) of the population at PHI0, held fixed."""
    return return_scale(population(PHI0)).item()


def tolerance_ratios(estimate, stderr, reference, k=3.0, relative=0.03):
    """(max |estimate - reference| / (k stderr + relative max|reference|), max stderr / max|reference|):
    the stated tolerance holds when the first is <= 1 and the second < 0.025 (tools/measure_margins.py
    measures both under perturbations)."""
    top = reference.abs().max()
    error = ((estimate - reference).abs() / (k * stderr + relative * top)).max()
    return float(error), float(stderr.max() / top)


def _check(estimate, stderr, reference):
    assert reference.abs().max() > 1e-3, "the reference gradient should not vanish"
    error, noise = tolerance_ratios(estimate, stderr, reference)
    assert noise < 0.025, "too few meta-batches for the stated tolerance"
    assert error <= 1, (estimate, reference)


def cvar_case(population):
    """Automatic return scale: s is the MAD of each meta-batch's pairs, close to the population's."""
    s = _population_scale(population)

    def penalty(gamma):  # eta (C + margin)^+ / s, C = CVaR_delta over tasks of CVaR_beta(Gamma_T)
        y = cvar_weights(gamma, 0.2)[0]
        return torch.clamp(cvar_weights(y, 0.5)[0], min=0) / s

    return make_objective("cvar", beta=0.2, delta=0.5, eta=1.0), penalty


def lagrangian_case(population):
    """Automatic return scale, which also sets the pair smoothing's width tau * s."""
    s = _population_scale(population)

    def penalty(gamma):
        v = torch.sigmoid(gamma / (0.5 * s)).mean(1)
        return torch.sigmoid((v - 0.3) / 0.1).mean()

    return make_objective("lagrangian", beta=0.3, delta=0.1, multiplier=1.0, tau=0.5, tau_h=0.1), penalty


def quantile_case(population):
    scale = 2.0
    obj = make_objective("quantile", beta=0.2, delta=0.5, eta=1.0, temperature=0.1, return_scale=scale)
    q0 = upper_quantile(population(PHI0), 0.8)
    omega = obj.task_weights(q0, torch.tensor(scale, dtype=torch.float64))  # held fixed, as the estimator does
    return obj, _quantile_penalty(omega, q0, scale)


CASES = {"cvar": cvar_case, "lagrangian": lagrangian_case, "quantile": quantile_case}


def case_comparison(name, draws, population):
    """(estimate, standard errors, reference) of one objective's penalty gradient."""
    obj, penalty = CASES[name](population)
    return (*_estimate(obj, draws), _pathwise(population, penalty))


def test_cvar_gradient_matches_the_population_cvar(draws, population):
    _check(*case_comparison("cvar", draws, population))


def test_lagrangian_gradient_matches_the_population_smoothed_violation(draws, population):
    _check(*case_comparison("lagrangian", draws, population))


def test_quantile_gradient_matches_the_population_quantile(draws, population):
    _check(*case_comparison("quantile", draws, population))


def _quantile_penalty(omega, q0, scale):
    """sum_T omega_T (q_T)^+ / s with dq_T = E[dGamma | Gamma = q_T] (kernel width 0.05), omega held fixed."""
    def penalty(gamma):
        kernel = torch.exp(-0.5 * ((gamma.detach() - q0[:, None]) / 0.05) ** 2)
        conditional = (kernel / kernel.sum(1, keepdim=True) * gamma).sum(1)
        return (omega * (q0 > 0) * conditional).sum() / scale
    return penalty


def quantile_bias(population, seeds=(5, 6)):
    """(large-sample tolerance ratio at 4 standard errors + 5%, large-sample error / small-sample error)."""
    scale = 10.0
    obj = make_objective("quantile", beta=0.2, delta=0.5, eta=1.0, temperature=0.1, return_scale=scale)
    q0 = upper_quantile(population(PHI0), 0.8)
    omega = obj.task_weights(q0, torch.tensor(scale, dtype=torch.float64))
    reference = _pathwise(population, _quantile_penalty(omega, q0, scale))
    small, _ = _estimate(obj, _make_draws(300, 10, 10, seed=seeds[0]))
    large, stderr = _estimate(obj, _make_draws(200, 80, 80, seed=seeds[1]))
    shrink = (large - reference).abs().max() / (small - reference).abs().max()
    return tolerance_ratios(large, stderr, reference, k=4.0, relative=0.05)[0], float(shrink)


def test_quantile_gradient_bias_vanishes_at_a_large_sample(population):
    """The per-task bandwidth h_T = 0.9 sigma_T (nm)^(-1/5) shrinks with n m, so the bias vanishes: at
    n = m = 80 the mean estimate is within 4 standard errors + 5% of the reference. s = 10 is wide against
    these tasks' spread: a bandwidth fixed in units of s (h = 0.2 s, the former rule) stays about 14% off at
    every n (planted: tolerance ratio 1.34, against 0.20 - 0.38 over seeds). The former second claim, closer
    than at n = m = 10, compared two noisy maximum errors and failed on 1 of 5 seed shifts (docs/testing.md)."""
    error, _ = quantile_bias(population)
    assert error <= 1, error


def test_inactive_penalties_leave_the_maml_gradient(draws):
    phi = PHI0.clone().requires_grad_(True)
    batch = _batch(phi, *draws[0])
    batch = dataclasses.replace(batch, pre_returns=batch.pre_returns - 1e4)  # adaptation always helps
    for name, params in (("cvar", {}), ("quantile", {}), ("lagrangian", {"multiplier": 1.0})):
        loss, _ = make_objective(name, **params)(batch)
        assert torch.autograd.grad(loss, phi, retain_graph=True)[0].abs().max() < 1e-12
