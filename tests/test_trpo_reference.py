"""TRPO's step against closed forms on quadratic problems, computed in numpy.

With loss(theta) = g . d and KL(theta) = 1/2 d' A d (d = theta - theta0), the natural-gradient direction is
x = (A + c I)^-1 g (c the CG damping), the step is x sqrt(max_kl / (1/2 x' (A + c I) x)), and the line search
takes theta0 - r^i step for the first i whose loss improves with KL <= max_kl. Everything is float64 and the
CG runs to convergence, so the expected values are exact up to rounding.
"""

import numpy as np
import pytest
import torch

from safemaml.config import MetaOptConfig
from safemaml.engine.metaopt import MetaOptimizer, conjugate_gradient, trpo_step
from safemaml.errors import SafeMamlError

A = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])
G = np.array([0.03, -0.02, 0.01])
THETA0 = np.array([0.4, -0.1, 0.7])


def _quadratic(kl_extra: float = 0.0, loss_curvature: float = 0.0):
    """evaluate(theta) -> (loss, kl) with the closed forms above, plus optional quartic KL and quadratic loss."""
    a, g, t0 = (torch.tensor(v) for v in (A, G, THETA0))

    def evaluate(theta):
        d = theta["w"] - t0
        kl = 0.5 * d @ a @ d + kl_extra * (d @ d) ** 2
        return g @ d + loss_curvature * (d @ d), kl

    return evaluate


def _params():
    return {"w": torch.tensor(THETA0)}


def _expected_step(max_kl: float, damping: float) -> np.ndarray:
    damped = A + damping * np.eye(3)
    x = np.linalg.solve(damped, G)
    return x * np.sqrt(max_kl / (0.5 * x @ damped @ x))


@pytest.mark.parametrize("damping", [1e-5, 0.5])
def test_the_full_step_is_the_scaled_natural_gradient(damping):
    cfg = MetaOptConfig(max_kl=0.01, cg_iters=10, cg_damping=damping)
    new, info = trpo_step(_params(), _quadratic(), cfg)
    step = _expected_step(0.01, damping)
    np.testing.assert_allclose(new["w"].numpy(), THETA0 - step, rtol=1e-9, atol=1e-12)
    assert info == pytest.approx({"loss_before": 0.0, "grad_norm": np.linalg.norm(G), "ls_steps": 1.0,
                                  "accepted": 1.0, "kl": 0.5 * step @ A @ step, "loss_after": -G @ step})
    assert info["kl"] <= 0.01


def test_a_tiny_trust_region_is_not_floored_at_one():
    """shs << 1: the step still scales with sqrt(max_kl / shs)."""
    cfg = MetaOptConfig(max_kl=1e-6)
    new, _ = trpo_step(_params(), _quadratic(), cfg)
    np.testing.assert_allclose(new["w"].numpy(), THETA0 - _expected_step(1e-6, cfg.cg_damping), rtol=1e-9)


def test_the_line_search_backtracks_until_the_exact_kl_fits():
    """A quartic term the curvature does not see makes the full step exceed max_kl; the search takes the first
    r^i that fits, and reports its i + 1, KL and loss."""
    evaluate = _quadratic(kl_extra=50.0)
    cfg = MetaOptConfig(max_kl=0.01, ls_backtrack_ratio=0.7)
    new, info = trpo_step(_params(), evaluate, cfg)
    step = _expected_step(0.01, cfg.cg_damping)
    kls = [0.5 * (0.7 ** i * step) @ A @ (0.7 ** i * step) + 50.0 * ((0.7 ** i * step) @ (0.7 ** i * step)) ** 2
           for i in range(15)]
    i = next(i for i, kl in enumerate(kls) if kl <= 0.01)
    assert i >= 2
    np.testing.assert_allclose(new["w"].numpy(), THETA0 - 0.7 ** i * step, rtol=1e-9)
    assert info["ls_steps"] == i + 1 and info["accepted"] == 1.0
    assert info["kl"] == pytest.approx(kls[i]) and info["loss_after"] == pytest.approx(-0.7 ** i * G @ step)


def test_no_improving_candidate_keeps_theta_and_says_so():
    cfg = MetaOptConfig(max_kl=0.01, ls_max_steps=4)
    new, info = trpo_step(_params(), _quadratic(loss_curvature=1e4), cfg)
    np.testing.assert_array_equal(new["w"].numpy(), THETA0)
    assert info == {"loss_before": 0.0, "grad_norm": pytest.approx(np.linalg.norm(G)), "ls_steps": 4.0,
                    "accepted": 0.0, "kl": 0.0, "loss_after": 0.0}


def test_an_equal_loss_is_not_an_improvement():
    """The loss is flat (clamped at its old value) along the step: no candidate is accepted."""
    base = _quadratic()

    def evaluate(theta):
        loss, kl = base(theta)
        return torch.clamp(loss, min=0.0), kl  # gradient G at theta0, value 0 = old loss at every candidate

    new, info = trpo_step(_params(), evaluate, MetaOptConfig())
    assert info["accepted"] == 0.0 and torch.equal(new["w"], torch.tensor(THETA0))


def test_a_kl_exactly_at_the_bound_is_accepted():
    base = _quadratic()

    def evaluate(theta):
        loss, kl = base(theta)
        return loss, kl - kl.detach() + 0.01  # curvature A, value exactly max_kl everywhere

    _, info = trpo_step(_params(), evaluate, MetaOptConfig(max_kl=0.01))
    assert info["accepted"] == 1.0 and info["ls_steps"] == 1.0 and info["kl"] == 0.01


def test_a_supplied_curvature_replaces_the_kl_hessian_but_not_the_kl_bound():
    """make_fvp(theta) is called with the current parameters and its product sets the direction (here 2A, so
    the direction is A's and the step is 1/sqrt(2) as long); the line search still checks the exact KL."""
    seen = []

    def make_fvp(theta):
        seen.append(theta)
        return lambda v: 2 * torch.tensor(A) @ v

    cfg = MetaOptConfig(max_kl=0.01)
    new, info = trpo_step(_params(), _quadratic(), cfg, make_fvp=make_fvp)
    x = np.linalg.solve(2 * A + cfg.cg_damping * np.eye(3), G)
    step = x * np.sqrt(0.01 / (0.5 * x @ (2 * A + cfg.cg_damping * np.eye(3)) @ x))
    np.testing.assert_allclose(new["w"].numpy(), THETA0 - step, rtol=1e-9)
    assert len(seen) == 1 and torch.equal(seen[0]["w"].detach(), torch.tensor(THETA0))
    assert info["kl"] == pytest.approx(0.5 * step @ A @ step)


def test_conjugate_gradient_stops_once_converged():
    """An exactly solved system (identity) stops after one iteration instead of dividing 0 by 0."""
    b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x = conjugate_gradient(lambda v: v, b, iters=5)
    assert torch.equal(x, b)


def test_the_optimizer_object_takes_exactly_trpo_steps_and_counts_them():
    cfg = MetaOptConfig(max_kl=0.01, cg_damping=0.5)
    opt = MetaOptimizer(cfg)
    seen = []

    def make_fvp(theta):
        seen.append(theta)
        return lambda v: torch.tensor(A) @ v

    new, info = opt.step(_params(), _quadratic(), make_fvp)
    ref, ref_info = trpo_step(_params(), _quadratic(), cfg, make_fvp)
    assert torch.equal(new["w"], ref["w"]) and info == ref_info and len(seen) == 2 and opt.steps == 1
    np.testing.assert_allclose(new["w"].numpy(), THETA0 - _expected_step(0.01, 0.5), rtol=1e-9)


def test_adams_first_step_is_lr_times_the_gradients_sign_and_its_info():
    """With bias correction, Adam's first step is lr * g / (|g| + eps) per coordinate."""
    opt = MetaOptimizer(MetaOptConfig(name="adam", lr=0.05))
    new, info = opt.step(_params(), _quadratic())
    np.testing.assert_allclose(new["w"].numpy(), THETA0 - 0.05 * G / (np.abs(G) + 1e-8), rtol=1e-9)
    assert info["loss_before"] == 0.0 and info["grad_norm"] == pytest.approx(np.linalg.norm(G))
    assert info["ls_steps"] == 0.0 and info["accepted"] == 1.0
    assert np.isnan(info["kl"]) and np.isnan(info["loss_after"]) and len(info) == 6


@pytest.mark.parametrize("curvature", ["analytic", "exact", "gauss-newton", "adapted-fisher"])
def test_each_curvature_is_accepted(curvature):
    assert MetaOptConfig(curvature=curvature).curvature == curvature


def test_an_unknown_curvature_names_the_known_ones():
    with pytest.raises(SafeMamlError, match=r"unknown meta.curvature 'fast'; known: analytic, exact, gauss-newton, adapted-fisher"):
        MetaOptConfig(curvature="fast")
