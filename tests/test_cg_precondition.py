"""TRPO's preconditioned CG and its step length from CG's residual (meta.cg_precondition, meta.cg_step_length;
issue 28) against references that do not use them: systems with a known solution, plain CG, TRPO's closed-form
step on a quadratic (tests/test_trpo_reference.py), and the adapted-fisher product on every unit vector for
the diagonal."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_config
from test_metaopt import _meta_data
from test_mlp_curvature import _floor_one_std, _synthetic
from test_trpo_reference import THETA0, A, G, _expected_step, _params, _quadratic

from safemaml import config as config_io
from safemaml.config import MetaOptConfig
from safemaml.engine.curvature import adapted_fisher_diagonal, make_fvp
from safemaml.engine.learner import meta_step
from safemaml.engine.metaopt import conjugate_gradient, fisher_preconditioner, jacobi, preconditioned_cg, trpo_step
from safemaml.engine.mlp_curvature import adapted_fisher_fvp
from safemaml.errors import SafeMamlError
from safemaml.runs.train import new_learner


def _badly_scaled_system(n=40, seed=0):
    """A = S C S with C well conditioned and the scales S spanning 1e-2..1e2, a known solution x*, b = A x*:
    hard for plain CG (condition ~1e8), easy once the diagonal is divided out."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    c = q @ torch.diag(torch.linspace(1.0, 3.0, n, dtype=torch.float64)) @ q.T
    s = torch.logspace(-2, 2, n, dtype=torch.float64)[torch.randperm(n, generator=g)]
    a = s[:, None] * c * s[None, :]
    x = torch.randn(n, generator=g, dtype=torch.float64)
    return a, x, a @ x


def test_without_a_preconditioner_it_is_plain_cg_bit_for_bit():
    a, _, b = _badly_scaled_system()
    for iters in (1, 3, 10, 25):
        x, _ = preconditioned_cg(lambda v: a @ v, b, iters)
        assert torch.equal(x, conjugate_gradient(lambda v: a @ v, b, iters))


def test_the_diagonal_solves_a_badly_scaled_system_that_plain_cg_does_not():
    a, expected, b = _badly_scaled_system()
    x, r = preconditioned_cg(lambda v: a @ v, b, 40, jacobi(torch.diagonal(a)), tol=0.0)  # no absolute stop
    torch.testing.assert_close(x, expected, rtol=1e-8, atol=1e-10)
    plain = conjugate_gradient(lambda v: a @ v, b, 40)
    assert (plain - expected).norm() > 0.1 * expected.norm()
    torch.testing.assert_close(r, b - a @ x, rtol=0, atol=1e-9 * b.norm().item())


def test_the_exact_inverse_as_preconditioner_solves_in_one_product():
    a, expected, b = _badly_scaled_system(n=12)
    products = []
    x, _ = preconditioned_cg(lambda v: products.append(v) or a @ v, b, 5, lambda r: torch.linalg.solve(a, r))
    torch.testing.assert_close(x, expected, rtol=1e-6, atol=1e-9)
    assert len(products) == 1


def test_a_flexible_inner_solve_converges_to_the_solution():
    """M^-1 applied by 3 iterations of inner CG on the diagonal-scaled system: not a fixed linear map."""
    a, expected, b = _badly_scaled_system(n=20)
    d = torch.diagonal(a)
    inner = torch.diag(d) + 0.1 * torch.diag(d.sqrt()) @ torch.ones(20, 20, dtype=torch.float64) @ torch.diag(d.sqrt())
    x, _ = preconditioned_cg(lambda v: a @ v, b, 40,
                             lambda r: preconditioned_cg(lambda v: inner @ v, r, 3, jacobi(d))[0], flexible=True,
                             tol=0.0)
    torch.testing.assert_close(x, expected, rtol=1e-8, atol=1e-10)


def test_flexible_beta_keeps_consecutive_directions_conjugate_under_a_changing_preconditioner():
    """Notay's beta makes p_k+1 A-conjugate to p_k whatever z_k+1 is; the standard beta only for a fixed M."""
    a, _, b = _badly_scaled_system(n=20)
    g = torch.Generator().manual_seed(1)
    scales = [torch.rand(20, generator=g, dtype=torch.float64) + 0.1 for _ in range(2)]

    def worst_conjugacy(flexible):
        directions, calls = [], []

        def precondition(r):
            calls.append(0)
            return r / scales[len(calls) % 2]

        preconditioned_cg(lambda v: directions.append(v) or a @ v, b, 6, precondition, flexible=flexible)
        return max(abs(p @ a @ q) / ((p @ a @ p) * (q @ a @ q)).sqrt()
                   for p, q in zip(directions, directions[1:], strict=False))

    assert worst_conjugacy(True) < 1e-10 and worst_conjugacy(False) > 1e-3


def test_the_relative_residual_stop():
    a, _, b = _badly_scaled_system()
    precondition = jacobi(torch.diagonal(a))
    x, r = preconditioned_cg(lambda v: a @ v, b, 100, precondition, rtol=1e-3)
    assert (b - a @ x).norm() <= 1.001e-3 * b.norm()
    count = []
    preconditioned_cg(lambda v: count.append(0) or a @ v, b, 100, precondition, rtol=1e-3)
    before, _ = preconditioned_cg(lambda v: a @ v, b, len(count) - 1, precondition)
    assert (b - a @ before).norm() > 1e-3 * b.norm()  # it stopped at the first iterate below the bound


def test_nonpositive_diagonal_entries_are_left_unscaled():
    scale = jacobi(torch.tensor([2.0, 0.0, -1.0]))
    assert torch.equal(scale(torch.tensor([4.0, 3.0, 5.0])), torch.tensor([2.0, 3.0, 5.0]))


def test_the_fisher_preconditioner_floors_the_diagonal_at_a_tenth_of_its_mean():
    precondition = fisher_preconditioner(torch.tensor([3.0, 0.0, 9.0]), damping=0.5)  # mean 4: + 0.4 + 0.5
    torch.testing.assert_close(precondition(torch.tensor([7.8, 1.8, 19.8])), torch.tensor([2.0, 2.0, 2.0]))


@pytest.mark.parametrize("damping", [1e-5, 0.5])
@pytest.mark.parametrize("step_length", ["product", "residual"])
@pytest.mark.parametrize("precondition", ["fisher-diagonal", "adapted-fisher"])
def test_trpo_preconditioned_takes_the_closed_form_step(damping, step_length, precondition):
    """CG converges on the 3-d quadratic whatever the preconditioner (and with the flexible beta), so the step is
    the closed form; with cg_step_length = "residual" its length comes from x.(g - r) = x'(A + cI)x."""
    seen = []

    def make_preconditioner(theta):
        seen.append(theta)
        return fisher_preconditioner(torch.tensor(np.diag(A)), damping)

    cfg = MetaOptConfig(max_kl=0.01, cg_damping=damping, cg_precondition=precondition, cg_step_length=step_length)
    new, info = trpo_step(_params(), _quadratic(), cfg, make_preconditioner=make_preconditioner)
    step = _expected_step(0.01, damping)
    np.testing.assert_allclose(new["w"].numpy(), THETA0 - step, rtol=1e-9, atol=1e-12)
    assert info["kl"] == pytest.approx(0.5 * step @ A @ step) and info["loss_after"] == pytest.approx(-G @ step)
    assert len(seen) == 1 and torch.equal(seen[0]["w"].detach(), torch.tensor(THETA0))


@pytest.mark.parametrize("step_length", ["product", "residual"])
def test_one_preconditioned_iteration_gives_the_floored_jacobi_direction(step_length):
    """One CG iteration (numpy): z = g / (diag + 0.1 mean(diag) + c), d = (g.z / z'(A + cI)z) z, scaled to
    1/2 d'(A + cI)d = max_kl, though d is far from the solution (CG's residual is not small)."""
    damping, diag = 1e-5, np.array([4.0, 1.0, 0.25])
    damped = A + damping * np.eye(3)
    z = G / (diag + 0.1 * diag.mean() + damping)
    d = (G @ z) / (z @ damped @ z) * z
    step = d * np.sqrt(0.01 / (0.5 * d @ damped @ d))
    cfg = MetaOptConfig(max_kl=0.01, cg_iters=1, cg_damping=damping, cg_precondition="fisher-diagonal",
                        cg_step_length=step_length)
    new, _ = trpo_step(_params(), _quadratic(), cfg,
                       make_preconditioner=lambda theta: fisher_preconditioner(torch.tensor(diag), damping))
    np.testing.assert_allclose(new["w"].numpy(), THETA0 - step, rtol=1e-9, atol=1e-12)
    assert np.linalg.norm(G - damped @ d) > 0.1 * np.linalg.norm(G)


@pytest.mark.parametrize("step_length", ["product", "residual"])
def test_plain_cg_with_either_step_length_takes_todays_step(step_length):
    cfg = MetaOptConfig(max_kl=0.01, cg_iters=2, cg_step_length=step_length)
    new, info = trpo_step(_params(), _quadratic(), cfg)
    ref, ref_info = trpo_step(_params(), _quadratic(), MetaOptConfig(max_kl=0.01, cg_iters=2))
    torch.testing.assert_close(new["w"], ref["w"], rtol=1e-12, atol=0)
    assert info == pytest.approx(ref_info, rel=1e-9)


@pytest.mark.parametrize("precondition", ["none", "fisher-diagonal", "adapted-fisher"])
@pytest.mark.parametrize("step_length, products", [("product", 3), ("residual", 2)])
def test_the_step_length_from_the_residual_saves_a_product(precondition, step_length, products):
    """cg_iters products for the direction, and one for the step length unless it comes from the residual."""
    count = []

    def make_fvp(theta):
        return lambda v: count.append(0) or torch.tensor(A) @ v

    cfg = MetaOptConfig(cg_iters=2, cg_precondition=precondition, cg_step_length=step_length)
    trpo_step(_params(), _quadratic(), cfg, make_fvp, lambda theta: lambda r: r)
    assert len(count) == products


def test_the_default_never_asks_for_a_preconditioner():
    def refuse(theta):
        raise AssertionError("the default (plain CG) asked for a preconditioner")

    cfg = MetaOptConfig()
    new, info = trpo_step(_params(), _quadratic(), cfg, make_preconditioner=refuse)
    ref, ref_info = trpo_step(_params(), _quadratic(), cfg)
    assert torch.equal(new["w"], ref["w"]) and info == ref_info


@pytest.mark.parametrize("precondition, flexible", [("none", False), ("fisher-diagonal", False),
                                                     ("adapted-fisher", True)])
def test_only_the_inner_solve_takes_the_flexible_beta(monkeypatch, precondition, flexible):
    import safemaml.engine.metaopt as metaopt

    seen = []
    solve = metaopt.preconditioned_cg

    def spy(*args, **kwargs):
        seen.append(kwargs.get("flexible", False))
        return solve(*args, **kwargs)

    monkeypatch.setattr(metaopt, "preconditioned_cg", spy)
    trpo_step(_params(), _quadratic(), MetaOptConfig(cg_precondition=precondition), None, lambda theta: jacobi(
        torch.tensor(np.diag(A))))
    assert seen == [flexible]


def test_a_preconditioned_setting_needs_a_preconditioner():
    with pytest.raises(SafeMamlError, match="cg_precondition"):
        trpo_step(_params(), _quadratic(), MetaOptConfig(cg_precondition="fisher-diagonal"))


def _matrix(product, n):
    return torch.stack([product(e) for e in torch.eye(n, dtype=torch.float64)], dim=1)


@pytest.mark.parametrize("hidden, activation", [((), "relu"), ((4, 3, 5), "tanh")])
def test_the_analytic_adapted_fisher_is_make_fvps(hidden, activation):
    spec, cfg, theta, data = _synthetic(hidden, activation)
    v = torch.randn(sum(p.numel() for p in theta.values()), generator=torch.Generator().manual_seed(5),
                    dtype=torch.float64)
    for subsample in (1.0, 0.5):
        expected = make_fvp("adapted-fisher", spec, cfg, theta, data, subsample)(v)
        torch.testing.assert_close(adapted_fisher_fvp(spec, theta, data, subsample)(v), expected, rtol=1e-10,
                                   atol=1e-14)


def test_the_preconditioners_apply_the_adapted_fisher_of_a_quarter_of_the_trajectories(monkeypatch):
    """Reference: the adapted-fisher matrix built column by column from make_fvp on the trajectories the
    preconditioner should use (a quarter of 4, so the minimum of 2, not all 4); fisher-diagonal divides by
    its floored diagonal, adapted-fisher with more inner iterations than dimensions solves M x = r."""
    import safemaml.engine.curvature as curvature

    spec, cfg, theta, data = _synthetic((3,), "tanh")
    n, damping = sum(p.numel() for p in theta.values()), 1e-3
    m = _matrix(make_fvp("adapted-fisher", spec, cfg, theta, data, 0.25), n)
    r = torch.randn(n, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    d = torch.diagonal(m)
    got = curvature.preconditioner("fisher-diagonal", spec, theta, data, 1.0, damping)(r)
    torch.testing.assert_close(got, r / (d + 0.1 * d.mean() + damping), rtol=1e-10, atol=1e-14)
    monkeypatch.setattr(curvature, "INNER_ITERS", 3 * n)
    got = curvature.preconditioner("adapted-fisher", spec, theta, data, 1.0, damping)(r)
    expected = torch.linalg.solve(m + damping * torch.eye(n, dtype=torch.float64), r)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)
    assert not torch.allclose(m, _matrix(make_fvp("adapted-fisher", spec, cfg, theta, data), n))


@pytest.mark.parametrize("hidden, activation", [((), "relu"), ((5,), "tanh"), ((4, 3, 5), "relu"),
                                                ((4, 3, 5), "tanh")])
def test_fisher_diagonal_is_the_adapted_fisher_on_unit_vectors(hidden, activation):
    """Reference: make_fvp("adapted-fisher") (torch.func jvp and an autograd vjp, safemaml.engine.curvature) on
    every unit vector; per-task adapted parameters, ragged and empty episodes (test_mlp_curvature._synthetic)."""
    spec, cfg, theta, data = _synthetic(hidden, activation)
    product = make_fvp("adapted-fisher", spec, cfg, theta, data)
    n = sum(v.numel() for v in theta.values())
    expected = torch.stack([product(e)[i] for i, e in enumerate(torch.eye(n, dtype=torch.float64))])
    assert (expected > 0).sum() > n // 2
    torch.testing.assert_close(adapted_fisher_diagonal(spec, theta, data), expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("overrides, edit", [({"policy.learn_std": False}, None),
                                             ({"policy.min_std": 0.05}, _floor_one_std)])
def test_fisher_diagonal_with_a_fixed_or_floored_std_and_a_subsample(overrides, edit):
    learner, cfg, data = _meta_data(edit=edit, **overrides)
    product = make_fvp("adapted-fisher", learner.spec, cfg.adapt, learner.params, data, 0.5)
    n = sum(v.numel() for v in learner.params.values())
    expected = torch.stack([product(e)[i] for i, e in enumerate(torch.eye(n, dtype=torch.float64))])
    got = adapted_fisher_diagonal(learner.spec, learner.params, data, 0.5)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-14)
    std = got[-learner.spec.act_dim:]
    assert (std == 0).all() if edit is None else (std[1] == 0 and std[0] > 0)


@pytest.mark.parametrize("precondition", ["fisher-diagonal", "adapted-fisher"])
def test_a_preconditioned_meta_step_keeps_the_trust_region(monkeypatch, precondition):
    """The learner hands TRPO the preconditioner its setting names, built at the current parameters from the
    curvature's subsample and damping."""
    import safemaml.engine.learner as learner_module

    calls = []
    build = learner_module.preconditioner

    def spy(name, spec, theta, data, subsample, damping):
        calls.append((name, subsample, damping))
        return build(name, spec, theta, data, subsample, damping)

    monkeypatch.setattr(learner_module, "preconditioner", spy)
    cfg = tiny_config(**{"meta.cg_precondition": precondition, "meta.fvp_subsample": 0.5, "meta.cg_damping": 1e-4})
    metrics = meta_step(new_learner(cfg), 0)
    assert calls == [(precondition, 0.5, 1e-4)] and metrics["accepted"] == 1.0
    assert 0 < metrics["kl"] <= cfg.meta.max_kl


def test_old_configs_load_with_plain_cg_and_unknown_settings_are_refused():
    """A run folder's config.toml written before these settings existed (the nav2d base run) resumes with the
    plain CG it was trained with, whatever the defaults are."""
    old = Path(__file__).resolve().parent.parent / "experiments/runs/nav2d-maml-100/config.toml"
    assert "cg_iters" in old.read_text() and "cg_precondition" not in old.read_text()
    meta = config_io.load(old).meta
    assert (meta.cg_precondition, meta.cg_step_length) == ("none", "product")
    with pytest.raises(SafeMamlError, match="meta.cg_precondition 'hutchinson'"):
        MetaOptConfig(cg_precondition="hutchinson")
    with pytest.raises(SafeMamlError, match="meta.cg_step_length 'guess'"):
        MetaOptConfig(cg_step_length="guess")


def test_a_meta_table_with_cg_iters_but_no_preconditioner_keeps_plain_cg():
    """cg_iters without cg_precondition: a table from before the setting (saved runs, presets) meant plain CG."""
    cfg = config_io.from_dict({"meta": {"cg_iters": 7, "cg_step_length": "residual"}})
    assert (cfg.meta.cg_precondition, cfg.meta.cg_step_length, cfg.meta.cg_iters) == ("none", "residual", 7)
    given = config_io.from_dict({"meta": {"cg_iters": 7, "cg_precondition": "fisher-diagonal"}})
    assert (given.meta.cg_precondition, given.meta.cg_step_length) == ("fisher-diagonal", MetaOptConfig().cg_step_length)
    assert config_io.from_dict({}).meta == MetaOptConfig() == config_io.from_dict({"meta": {"lr": 1e-3}}).meta
