import torch

from safemaml.returns import advantages, discounted_returns, fit_linear_baseline, gae, normalize_per_task


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
