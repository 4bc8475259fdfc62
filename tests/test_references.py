"""Building blocks against independent references: torch.distributions, torch.optim.Adam, a numpy
bootstrap, a hand-written leave-one-out baseline and median absolute deviation, and the bandit's
exact expected return (adaptation must improve the true return, not only its own inner loss)."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal
from torch.distributions import kl_divergence as torch_kl

from objectives.penalty import loo_center, return_scale
from safemaml.config import AdaptConfig, MetaOptConfig
from safemaml.engine.adapt import adapt_loop, adapt_vmap
from safemaml.engine.metaopt import MetaOptimizer
from safemaml.engine.policy import PolicySpec, action_std, kl_divergence, log_prob, mean_action
from safemaml.engine.returns import advantages
from safemaml.engine.rollout import Sampler
from safemaml.measure.metrics import bootstrap_ci
from safemaml.tasks import get_family


def _two_policies(per_task: bool):
    spec = PolicySpec(3, 2, hidden=(5,), activation="tanh")
    old, new = spec.init(0), spec.init(1)
    g = torch.Generator().manual_seed(2)
    old = {k: v.double() for k, v in old.items()}
    old["log_std"] = old["log_std"] + torch.tensor([0.4, -0.3], dtype=torch.float64)  # both stds away from 1
    new = {k: v.double() + 0.3 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in new.items()}
    if per_task:  # a leading task dimension K = 4, each task its own parameters
        new = {k: v.expand(4, *v.shape) + 0.2 * torch.randn(4, *v.shape, generator=g, dtype=torch.float64)
               for k, v in new.items()}
    obs = torch.randn(4, 7, 3, generator=g, dtype=torch.float64)
    return spec, old, new, obs


def _distribution(spec, params, obs):
    mean = mean_action(spec, params, obs)
    log_std = params["log_std"]
    if log_std.dim() == 2:
        log_std = log_std[:, None, :]
    return Independent(Normal(mean, torch.exp(log_std).expand_as(mean)), 1)


@pytest.mark.parametrize("per_task", [False, True])
def test_log_prob_and_kl_equal_torch_distributions(per_task):
    spec, old, new, obs = _two_policies(per_task)
    p_old, p_new = _distribution(spec, old, obs), _distribution(spec, new, obs)
    actions = p_new.mean + torch.randn(p_new.mean.shape, generator=torch.Generator().manual_seed(3),
                                       dtype=torch.float64)
    torch.testing.assert_close(log_prob(spec, new, obs, actions), p_new.log_prob(actions))
    torch.testing.assert_close(kl_divergence(spec, old, new, obs), torch_kl(p_old, p_new))
    assert torch_kl(p_old, p_new).min() > 1e-3  # the two policies really differ


def test_adam_equals_torch_optim_adam_across_a_checkpoint():
    """Five Adam steps, the optimiser state saved and restored into a new one after the second."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    start = {"w": torch.randn(3, generator=g, dtype=torch.float64), "c": torch.tensor([0.5], dtype=torch.float64)}

    def loss_of(p):
        return ((A @ p["w"] + p["c"] - b) ** 2).sum() + (p["w"] ** 4).sum()

    cfg = MetaOptConfig(name="adam", lr=0.05)
    ours, params = MetaOptimizer(cfg), dict(start)
    ref_params = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    ref = torch.optim.Adam(list(ref_params.values()), lr=0.05, betas=(0.9, 0.999), eps=1e-8)
    for step in range(5):
        if step == 2:
            restored = MetaOptimizer(cfg)
            restored.load_state_dict(ours.state_dict())
            ours = restored
        params, info = ours.step(params, lambda p: (loss_of(p), torch.zeros(())))
        ref.zero_grad()
        loss_of(ref_params).backward()
        ref.step()
        for k in params:
            torch.testing.assert_close(params[k], ref_params[k].detach(), atol=1e-12, rtol=1e-10)
    assert (params["w"] - start["w"]).abs().min() > 0.05  # the steps were not negligible


def _numpy_percentile_bootstrap(values, statistic, level, resamples, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    stats = np.array([statistic(values[i]) for i in idx])
    return np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])


@pytest.mark.parametrize("statistic", [np.mean, np.median])
def test_bootstrap_interval_equals_a_numpy_percentile_bootstrap(statistic):
    values = np.random.default_rng(5).normal(1.0, 2.0, size=40)
    lo, hi = bootstrap_ci(values, statistic)
    ref_lo, ref_hi = _numpy_percentile_bootstrap(values, statistic, 0.95, 20_000, seed=9)
    half = (ref_hi - ref_lo) / 2
    # Monte Carlo error of 2,000 resamples is ~3% of the half-width; a 90% interval is 16% narrower
    assert abs(lo - ref_lo) < 0.08 * half and abs(hi - ref_hi) < 0.08 * half
    lo90, hi90 = bootstrap_ci(values, statistic, level=0.9)
    assert lo < lo90 < hi90 < hi


def test_leave_one_out_centering_by_hand():
    w = torch.tensor([[1.0, 4.0, -2.0, 0.5], [3.0, 3.0, 3.0, 9.0]], dtype=torch.float64)
    expected = torch.tensor([[w[r, j] - (w[r].sum() - w[r, j]) / 3 for j in range(4)] for r in range(2)],
                            dtype=torch.float64)
    torch.testing.assert_close(loo_center(w), expected)
    single = torch.tensor([[2.5]])
    torch.testing.assert_close(loo_center(single), single)  # no other trajectory: no baseline
    torch.testing.assert_close(loo_center(torch.tensor([[1.0, 3.0]])), torch.tensor([[-2.0, 2.0]]))  # m = 2
    w3 = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref3 = torch.stack([w3[..., j] - (w3.sum(-1) - w3[..., j]) / 3 for j in range(4)], -1)
    torch.testing.assert_close(loo_center(w3), ref3)  # along the last axis, whatever the leading ones


def test_automatic_return_scale_is_the_median_absolute_deviation():
    gamma = torch.tensor(np.random.default_rng(3).standard_t(3, size=(3, 5, 7)))
    flat = gamma.numpy().ravel()
    mad = np.median(np.abs(flat - np.median(flat)))  # (median of an odd count: no averaging ambiguity)
    assert return_scale(gamma).item() == pytest.approx(mad)
    assert return_scale(gamma, fixed=2.5).item() == 2.5
    fixed = return_scale(gamma, fixed=0.1)  # below 1 too, and in the pairs' precision
    assert fixed.dtype == torch.float64 and fixed.item() == 0.1
    assert return_scale(torch.zeros(2, 3, 3)).item() == pytest.approx(1e-3)  # the floor


def _bandit_expected_return(mean, std, goals, horizon):
    """E[return] of N(mean, std^2) actions on goals: H * -(||mean - goal||^2 + sum std^2), written here."""
    return -horizon * (((mean - goals) ** 2).sum(-1) + (std ** 2).sum(-1))


def exact_returns_around_adaptation(adapt_fn, perturb=None, seed=3):
    """The bandit's exact expected return of 4 tasks before and after a small inner step on sampled data.
    `perturb` (margin measurements, tools/measure_margins.py): multiply the initial parameters by
    (1 + 1e-6 N), N seeded by it."""
    family = get_family("bandit")
    spec = PolicySpec(family.obs_dim, family.act_dim, hidden=(8,))
    params = {k: v.double() for k, v in spec.init(0).items()}
    if perturb is not None:
        gen = torch.Generator().manual_seed(perturb)
        params = {k: v * (1 + 1e-6 * torch.randn(v.shape, generator=gen, dtype=v.dtype)) for k, v in params.items()}
    K, n, H = 4, 40, family.horizon
    goals = np.array([[1.0, 0.5], [-0.8, 0.2], [0.3, -1.0], [-0.5, -0.6]])
    traj = Sampler(family, spec, K, n).sample({k: v.float() for k, v in params.items()}, goals, seed=seed)
    obs, actions, mask = traj.obs.double(), traj.actions.double(), traj.mask.double()
    adv = advantages(obs, traj.rewards.double(), mask, 0.99, 1.0)
    fast = adapt_fn(spec, AdaptConfig(fast_lr=0.01), params, obs, actions, adv, mask)
    goals_t = torch.tensor(goals)
    one = torch.ones(1, dtype=torch.float64)

    def exact(p):
        mean = mean_action(spec, p, one)
        return _bandit_expected_return(mean, torch.exp(p["log_std"]), goals_t, H)

    before = exact(params)
    after = torch.stack([exact({k: v[t] for k, v in fast.items()})[t] for t in range(K)])
    return family, spec, params, goals, before, after


@pytest.mark.parametrize("adapt_fn", [adapt_loop, adapt_vmap])
def test_adaptation_improves_the_exact_expected_return(adapt_fn):
    """A small inner step on sampled bandit data raises every task's *true* expected return by
    about alpha * g . grad J (first order), not merely the inner loss it descends."""
    family, spec, params, goals, before, after = exact_returns_around_adaptation(adapt_fn)
    assert (after > before).all(), (before, after)
    one = torch.ones(1, dtype=torch.float64)
    # the bandit's own formula agrees with the one written here
    np.testing.assert_allclose(family.expected_return(mean_action(spec, params, one).numpy(),
                                                      torch.exp(params["log_std"]).numpy(), goals),
                               before.numpy())
    assert math.isfinite(after.sum().item())


@pytest.mark.parametrize("num_steps,first_order", [(1, False), (2, True), (2, False)])
def test_structured_fisher_product_is_used_exactly_where_it_is_exact(num_steps, first_order):
    """`supports` claims the structured product for one inner step or first-order adaptation; there it
    equals double backward through the adaptation, and for two second-order steps it does not."""
    from helpers import pre_batch

    from objectives import make_objective
    from safemaml.engine.fisher import maml_fvp, supports
    from safemaml.engine.metaopt import autograd_fvp
    from safemaml.engine.metastep import MetaData, meta_loss

    spec, params, pre, pre_adv = pre_batch(K=2, n=3, seed=0)
    _, _, post, post_adv = pre_batch(K=2, n=3, seed=1)
    cfg = AdaptConfig(fast_lr=0.1, num_steps=num_steps, first_order=first_order)
    fast = adapt_loop(spec, cfg, params, pre.obs, pre.actions, pre_adv, pre.mask)
    data = MetaData(pre, post, pre_adv, post_adv, fast)
    theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    _, kl, _ = meta_loss(spec, cfg, make_objective("maml"), theta, data)
    v = torch.randn(sum(p.numel() for p in theta.values()), generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    exact = autograd_fvp(theta, kl)(v)
    equal = torch.allclose(maml_fvp(spec, cfg, theta, data)(v), exact, atol=1e-9, rtol=1e-7)
    assert supports(cfg) == equal == (num_steps == 1 or first_order)


@pytest.mark.parametrize("vectorize,expected", [("vmap", "adapt_vmap"), ("loop", "adapt_loop"), ("auto", "adapt_loop")])
def test_adapt_dispatches_as_configured(monkeypatch, vectorize, expected):
    """vmap and the loop give equal results (test_adapt.py), so which one runs is observed directly:
    on CPU, "auto" picks the loop (measured faster there, docs/performance.md)."""
    import safemaml.engine.adapt as adapt_module

    calls = []
    for name in ("adapt_vmap", "adapt_loop"):
        real = getattr(adapt_module, name)
        monkeypatch.setattr(adapt_module, name,
                            lambda *args, _real=real, _name=name: calls.append(_name) or _real(*args))
    family = get_family("bandit")
    spec = PolicySpec(family.obs_dim, family.act_dim, hidden=(4,))
    data = torch.zeros(2, 3, 5, 1), torch.zeros(2, 3, 5, 2), torch.ones(2, 3, 5), torch.ones(2, 3, 5)
    obs, actions, adv, mask = data
    adapt_module.adapt(spec, AdaptConfig(vectorize=vectorize), spec.init(0), obs, actions, adv, mask)
    assert calls == [expected]


def test_adapt_loop_returns_detached_parameters_without_an_outer_graph():
    """Sampling and line-search evaluations adapt under no_grad: no graph may leak out."""
    from helpers import pre_batch

    spec, params, traj, adv = pre_batch(K=2, n=2)
    with torch.no_grad():
        fast = adapt_loop(spec, AdaptConfig(), params, traj.obs, traj.actions, adv, traj.mask)
    assert not any(v.requires_grad for v in fast.values())
    fast = adapt_loop(spec, AdaptConfig(), params, traj.obs, traj.actions, adv, traj.mask)  # grad mode on
    assert not any(v.requires_grad for v in fast.values())
    theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    assert all(v.requires_grad for v in adapt_loop(spec, AdaptConfig(), theta, traj.obs, traj.actions, adv,
                                                   traj.mask).values())


def test_inner_loss_of_a_single_step():
    """One task whose only trajectory ended after its first step: the loss is -log pi(a_0|s_0) A_0."""
    spec = PolicySpec(2, 2, hidden=(3,))
    params = {k: v.double() for k, v in spec.init(0).items()}
    g = torch.Generator().manual_seed(1)
    obs, actions = torch.randn(1, 4, 2, generator=g, dtype=torch.float64), torch.randn(1, 4, 2, generator=g,
                                                                                     dtype=torch.float64)
    adv, mask = torch.full((1, 4), 0.7, dtype=torch.float64), torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    from safemaml.engine.adapt import inner_loss
    expected = -_distribution(spec, params, obs[:, :1]).log_prob(actions[:, :1])[0, 0] * 0.7
    torch.testing.assert_close(inner_loss(spec, params, obs, actions, adv, mask), expected)


def test_action_std_is_the_mean_of_exp_log_std():
    log_std = torch.tensor([[math.log(0.5), math.log(2.0)], [math.log(1.0), math.log(4.0)]])
    assert action_std({"log_std": log_std}) == pytest.approx((0.5 + 2.0 + 1.0 + 4.0) / 4)


def test_init_is_glorot_uniform_zero_bias_and_deterministic_in_the_seed():
    spec = PolicySpec(30, 6, hidden=(100, 50), init_std=0.5)
    params = spec.init(7)
    for i, (fan_in, fan_out) in enumerate([(30, 100), (100, 50), (50, 6)]):
        w, bound = params[f"w{i}"], math.sqrt(6 / (fan_in + fan_out))
        assert w.shape == (fan_out, fan_in) and w.abs().max() <= bound
        assert w.abs().max() > 0.95 * bound and abs(w.std().item() - bound / math.sqrt(3)) < 0.05 * bound
        assert torch.equal(params[f"b{i}"], torch.zeros(fan_out))
    torch.testing.assert_close(params["log_std"], torch.full((6,), math.log(0.5)))
    assert all(torch.equal(params[k], spec.init(7)[k]) for k in params)
    assert not torch.equal(params["w0"], spec.init(8)["w0"])


@pytest.mark.parametrize("meta", ["trpo", "adam"])
def test_a_std_that_is_not_learned_stays_put_through_adaptation_and_meta_steps(tmp_path, meta):
    """policy.learn_std = false (the matched-std control): the log std is exactly its initial value after
    adaptation and after every meta-step, while the mean's parameters move."""
    from helpers import tiny_config

    from safemaml.runs.train import load_checkpoint, train

    cfg = tiny_config(iterations=2, checkpoint_every=1, **{"policy.learn_std": False, "policy.init_std": 0.6, "meta.name": meta,
                                       "meta.lr": 0.01})
    train(cfg, tmp_path / "run", quiet=True)
    first, last = (load_checkpoint(tmp_path / "run" / name)["params"] for name in ("checkpoints/iter_00001.pt",
                                                                                   "last.pt"))
    torch.testing.assert_close(last["log_std"], torch.full_like(last["log_std"], math.log(0.6)), rtol=0, atol=0)
    assert not torch.equal(first["w0"], last["w0"])
    spec = PolicySpec(2, 2, hidden=(4,), init_std=0.6, learn_std=False)
    params = {k: v.requires_grad_(True) for k, v in spec.init(0).items()}
    obs = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(log_prob(spec, params, obs, torch.zeros(5, 2)).sum(), list(params.values()))
    assert torch.equal(grads[-1], torch.zeros(2)) and grads[0].abs().sum() > 0
    assert torch.equal(spec.log_std(params), params["log_std"])  # the same value, only without gradient


def test_a_std_that_is_not_learned_is_held_at_init_std_when_fine_tuning(tmp_path):
    """The matched-std control fine-tunes a checkpoint at another run's std: with --init and
    policy.learn_std = false the checkpoint's std is replaced by policy.init_std and stays there,
    while the checkpoint's other parameters are the starting point."""
    from helpers import tiny_config

    from safemaml.engine.learner import initial_params
    from safemaml.runs.train import load_checkpoint, new_learner, train

    train(tiny_config(iterations=1, **{"policy.init_std": 0.8}), tmp_path / "base", quiet=True)
    base = load_checkpoint(tmp_path / "base" / "last.pt")["params"]
    assert not torch.allclose(base["log_std"], torch.full_like(base["log_std"], math.log(0.3)))
    cfg = tiny_config(iterations=1, checkpoint_every=1, init=str(tmp_path / "base"),
                      **{"policy.learn_std": False, "policy.init_std": 0.3})
    train(cfg, tmp_path / "held", quiet=True)
    held = load_checkpoint(tmp_path / "held" / "last.pt")["params"]
    torch.testing.assert_close(held["log_std"], torch.full_like(held["log_std"], math.log(0.3)), rtol=0, atol=0)
    learned = tiny_config(iterations=1, init=str(tmp_path / "base"), **{"policy.init_std": 0.3})
    spec = new_learner(learned).spec  # a learned std starts from the checkpoint's
    torch.testing.assert_close(initial_params(learned, spec, torch.device("cpu"))["log_std"], base["log_std"])
