import numpy as np
import torch

from safemaml.engine.returns import advantages, discounted_returns, fit_linear_baseline, gae, normalize_per_task


def test_discounted_returns_by_hand():
    r = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    mask = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]])  # the last step was never taken
    out = discounted_returns(r, mask, 0.5)
    torch.testing.assert_close(out, torch.tensor([[[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0, 0.0]]]))


def test_gae_lambda_one_is_return_minus_value():
    g = torch.Generator().manual_seed(0)
    r, v = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    mask = torch.ones(2, 3, 7)
    mask[0, 1, 5:] = 0
    v = v * mask
    torch.testing.assert_close(gae(r, v, mask, 0.9, 1.0), (discounted_returns(r, mask, 0.9) - v) * mask)


def test_gae_lambda_zero_is_td_error():
    r, v, mask = torch.tensor([[[1.0, 1.0]]]), torch.tensor([[[0.5, 2.0]]]), torch.ones(1, 1, 2)
    torch.testing.assert_close(gae(r, v, mask, 0.9, 0.0), torch.tensor([[[1 + 0.9 * 2 - 0.5, 1 - 2.0]]]))


def test_baseline_fits_what_its_features_can_express():
    obs = torch.randn(2, 5, 20, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.arange(20, dtype=torch.float64) / 100
    target = 2 * obs[..., 0] - obs[..., 1].pow(2) + 3 * t + 1
    values = fit_linear_baseline(obs, target, torch.ones(2, 5, 20, dtype=torch.float64))
    torch.testing.assert_close(values, target, atol=1e-2, rtol=1e-2)  # up to the small ridge term


def test_baseline_never_fails_on_degenerate_batches():
    for obs, ret, mask in [(torch.zeros(2, 3, 4, 2), torch.ones(2, 3, 4), torch.ones(2, 3, 4)),
                           (torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1), torch.ones(1, 1, 1)),
                           (torch.randn(1, 2, 3, 2), torch.randn(1, 2, 3), torch.zeros(1, 2, 3))]:
        values = fit_linear_baseline(obs, ret, mask)
        assert torch.isfinite(values).all()


def test_advantages_are_normalised_per_task():
    g = torch.Generator().manual_seed(2)
    obs, r, mask = torch.randn(3, 4, 10, 2, generator=g), torch.randn(3, 4, 10, generator=g), torch.ones(3, 4, 10)
    adv = advantages(obs, r, mask, 0.99, 1.0)
    torch.testing.assert_close(adv.mean((1, 2)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(adv.std((1, 2), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    assert normalize_per_task(torch.ones(1, 1, 3), torch.ones(1, 1, 3)).abs().max() == 0


def test_normalisation_counts_only_the_steps_taken():
    """A task with one step taken normalises it to 0; a task with none stays 0; masked steps stay 0."""
    x = torch.tensor([[[5.0, 7.0, 9.0]], [[4.0, 8.0, 2.0]], [[1.0, 2.0, 3.0]]])
    mask = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [[1.0, 1.0, 0.0]]])
    out = normalize_per_task(x, mask)
    torch.testing.assert_close(out[:2], torch.zeros(2, 1, 3))
    torch.testing.assert_close(out[2], torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-6, rtol=0)  # mean 1.5, std 0.5


def _baseline_reference(obs, returns, mask, reg=1e-5):
    """The paper's linear feature baseline (rllab's LinearFeatureBaseline: features o, o^2, t, t^2, t^3, 1 with
    o clipped to [-10, 10] and t = step / 100), fitted by ridge regression per task over the steps taken, the
    ridge reg times the mean diagonal of X'X; in numpy, feature by feature."""
    K, n, H, _ = obs.shape
    values = np.zeros((K, n, H))
    for k in range(K):
        rows, targets, where = [], [], []
        for i in range(n):
            for t in range(H):
                if mask[k, i, t]:
                    o = np.clip(obs[k, i, t], -10, 10)
                    s = t / 100
                    rows.append(np.concatenate([o, o ** 2, [s, s ** 2, s ** 3, 1.0]]))
                    targets.append(returns[k, i, t])
                    where.append((i, t))
        X, y = np.array(rows), np.array(targets)
        xtx = X.T @ X
        coef = np.linalg.solve(xtx + reg * np.diag(xtx).mean() * np.eye(X.shape[1]), X.T @ y)
        for (i, t), v in zip(where, X @ coef):
            values[k, i, t] = v
    return values


def test_baseline_against_the_papers_feature_regression():
    rng = np.random.default_rng(4)
    K, n, H = 3, 4, 6
    obs = rng.normal(size=(K, n, H, 2)) * np.array([1.0, 8.0])  # the second coordinate often past +-10
    obs[0, 0, :, 1] = 10.5  # between the clip and 11
    obs[0, 1, :, 1] = -10.5
    obs[2] *= 1e-3  # a task with tiny features: its ridge scale is far below 1
    returns = rng.normal(size=(K, n, H)) * np.array([1.0, 100.0, 0.01])[:, None, None]
    mask = np.ones((K, n, H))
    mask[1, 2, 3:] = 0  # an early end
    mask[2, 1:] = 0  # one trajectory of task 2
    values = fit_linear_baseline(*(torch.tensor(a) for a in (obs, returns * mask, mask)))
    np.testing.assert_allclose(values.numpy(), _baseline_reference(obs, returns, mask), rtol=1e-8, atol=1e-10)


def test_a_task_with_non_finite_data_gets_a_zero_baseline_and_the_others_their_fit():
    rng = np.random.default_rng(5)
    obs, returns, mask = rng.normal(size=(2, 3, 5, 2)), rng.normal(size=(2, 3, 5)), np.ones((2, 3, 5))
    obs[0, 1, 2, 0] = np.nan
    values = fit_linear_baseline(*(torch.tensor(a) for a in (obs, returns, mask)))
    assert torch.equal(values[0], torch.zeros(3, 5, dtype=torch.float64))
    np.testing.assert_allclose(values[1].numpy(), _baseline_reference(obs[1:], returns[1:], mask[1:])[0], rtol=1e-8)


def test_single_step_trajectories():
    r, v, mask = torch.tensor([[[2.0], [3.0]]]), torch.tensor([[[0.5], [1.0]]]), torch.ones(1, 2, 1)
    torch.testing.assert_close(discounted_returns(r, mask, 0.9), r)
    torch.testing.assert_close(gae(r, v, mask, 0.9, 0.95), r - v)


def test_advantages_without_normalisation_are_the_gae_of_the_fitted_baseline():
    g = torch.Generator().manual_seed(6)
    obs, r = torch.randn(2, 3, 5, 2, generator=g, dtype=torch.float64), torch.randn(2, 3, 5, generator=g,
                                                                                    dtype=torch.float64)
    mask = torch.ones(2, 3, 5, dtype=torch.float64)
    values = fit_linear_baseline(obs, discounted_returns(r, mask, 0.99), mask)
    torch.testing.assert_close(advantages(obs, r, mask, 0.99, 0.9, normalize=False), gae(r, values, mask, 0.99, 0.9))


def test_normalisation_adds_eps_to_the_std():
    """(x - mean) / (std + 1e-8): visible on a task whose spread is 1e-7."""
    x = torch.tensor([[[1.0, 1.0 + 2e-7]]], dtype=torch.float64)
    out = normalize_per_task(x, torch.ones(1, 1, 2, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([[[-1e-7, 1e-7]]], dtype=torch.float64) / (1e-7 + 1e-8))


def test_baseline_on_real_ant_rollouts_matches_the_reference():
    # Ant's observations carry contact forces, mostly zero: batched LU (torch.linalg.solve_ex) returned invalid
    # pivots on such systems and raised, so AntVel could not train at all
    from safemaml import config
    from safemaml.engine.learner import initial_params, policy_spec
    from safemaml.engine.rollout import Sampler
    from safemaml.tasks import get_family

    cfg = config.preset("ant-vel")
    family = get_family("ant-vel")
    spec = policy_spec(cfg, family)
    sampler = Sampler(family, spec, num_tasks=2, num_traj=5, horizon=100)
    traj = sampler.sample(initial_params(cfg, spec, torch.device("cpu")), family.sample(2, np.random.default_rng(0)), 0)
    returns = discounted_returns(traj.rewards, traj.mask, 0.99)
    obs, ret, mask = traj.obs.double(), returns.double(), traj.mask.double()
    values = fit_linear_baseline(obs, ret, mask)
    np.testing.assert_allclose(values.numpy(), _baseline_reference(obs.numpy(), ret.numpy(), mask.numpy()),
                               rtol=1e-6, atol=1e-6)
    values32 = fit_linear_baseline(traj.obs, returns, traj.mask)  # what training uses: no error, a real fit
    assert torch.isfinite(values32).all() and values32.abs().sum() > 0
