"""The CUDA path, against the CPU path; skipped on machines without a GPU (benchmarks/gpu_check.sh runs them).

What a GPU may change is float32 rounding (another matrix-product order, vmap instead of the per-task
loop): the sampler draws its action noise on the CPU for every device, so a seed gives the same data
on both. The tolerances come from `assert_same_meta_iteration`'s note, measured on the CPU.
"""

import json
import warnings

import numpy as np
import pytest
import torch
from helpers import tiny_config

from safemaml.cli.main import main
from safemaml.config import CURVATURES
from safemaml.engine import learner as learner_module
from safemaml.engine.learner import meta_step
from safemaml.engine.metaopt import conjugate_gradient
from safemaml.engine.policy import PolicySpec
from safemaml.engine.rollout import Sampler
from safemaml.runs.train import new_learner, train
from safemaml.tasks import get_family

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# metrics of the data and the adaptation (before TRPO's direction): float32 rounding moves them by < 2e-5
# relative on the CPU (see assert_same_meta_iteration)
DATA_METRICS = ("pre_return", "post_return", "mean_gamma", "cvar_gamma", "frac_negative", "violation_rate",
                "certified_fraction", "action_std", "grad_norm")


def _update(before, after) -> torch.Tensor:
    return torch.cat([(after[k].double().cpu() - before[k].double().cpu()).reshape(-1) for k in before])


def one_meta_iteration(cfg):
    """The metrics and the parameter update of meta-iteration 0 of a fresh learner of `cfg`."""
    learner = new_learner(cfg)
    before = {k: v.clone() for k, v in learner.params.items()}
    metrics = meta_step(learner, 0)
    return metrics, _update(before, learner.params)


def assert_same_meta_iteration(a, b) -> None:
    """Two runs of one meta-iteration from the same seed agree up to float32 rounding.

    Tolerances measured on the CPU (tiny nav2d config, seeds 0-7) under float32-sized changes: vmap
    instead of the per-task loop, the `exact` curvature instead of `analytic`, the initial parameters
    scaled by 1 + 1e-7 noise. The data metrics moved by < 2e-5 relative, the line search's step count not
    at all, the update's direction by cos >= 0.9999; but its length by up to 7.4% and so the KL and loss
    after the step by up to 5.1%: TRPO scales the CG direction by sqrt(max_kl / d'Fd), and d'Fd of a
    10-iteration float32 CG is that sensitive. Hence 1e-4, exact, 0.999 and 15%.
    """
    (ma, ua), (mb, ub) = a, b
    for key in DATA_METRICS:
        assert mb[key] == pytest.approx(ma[key], rel=1e-4, abs=1e-4), key
    assert mb["loss_before"] == pytest.approx(ma["loss_before"], abs=1e-6)  # ~0 by construction
    assert (mb["ls_steps"], mb["accepted"]) == (ma["ls_steps"], ma["accepted"])
    assert float(torch.nn.functional.cosine_similarity(ua, ub, dim=0)) > 0.999
    assert float(ub.norm()) == pytest.approx(float(ua.norm()), rel=0.15)
    for key in ("kl", "loss_after"):
        assert mb[key] == pytest.approx(ma[key], rel=0.15), key


def test_one_meta_iteration_on_cuda_gives_the_cpu_metrics():
    for seed in (0, 1):
        assert_same_meta_iteration(one_meta_iteration(tiny_config(seed=seed)),
                                   one_meta_iteration(tiny_config(seed=seed, device="cuda")))


def _both(family_name, tasks, horizon):
    family = get_family(family_name)
    spec = PolicySpec(family.obs_dim, family.act_dim)
    params = spec.init(0)
    cpu = Sampler(family, spec, 2, 3, horizon=horizon).sample(params, tasks, seed=1)
    gpu = Sampler(family, spec, 2, 3, horizon=horizon, device="cuda").sample(
        {k: v.cuda() for k, v in params.items()}, tasks, seed=1)
    assert gpu.obs.device.type == "cuda" and gpu.obs.shape == cpu.obs.shape
    return family, cpu, gpu


def test_cuda_sampling_gives_the_cpu_trajectories():
    """nav2d is not chaotic: float32-sized changes to the policy move its trajectories by ~1e-6 (measured on
    the CPU with the parameters scaled by 1 + 1e-6 noise)."""
    _, cpu, gpu = _both("nav2d", np.array([[0.3, -0.2], [-0.4, 0.1]]), 100)
    for field in ("obs", "actions", "rewards", "mask", "log_probs"):
        torch.testing.assert_close(getattr(gpu, field).cpu(), getattr(cpu, field), atol=1e-4, rtol=1e-4)


def test_cuda_sampling_draws_the_cpu_noise_and_the_cpu_physics():
    """HalfCheetah is chaotic (1 + 1e-7 noise on the parameters moves its observations by 0.016 within 20
    steps, on the CPU), so: the same noise (log-probabilities depend only on it), the same first actions,
    and the GPU's actions replayed in a CPU engine reproduce what it recorded."""
    family, cpu, gpu = _both("halfcheetah-vel", np.array([[0.5], [1.5]]), 20)
    torch.testing.assert_close(gpu.log_probs.cpu(), cpu.log_probs, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(gpu.actions[:, :, 0].cpu(), cpu.actions[:, :, 0], atol=1e-5, rtol=1e-5)
    env = family.make_env(6)
    env.set_tasks(np.repeat(np.array([[0.5], [1.5]]), 3, axis=0))
    obs = env.reset(seed=1)
    for t in range(20):
        np.testing.assert_allclose(gpu.obs[:, :, t].reshape(6, -1).cpu().numpy(), obs, atol=1e-4)
        obs, reward, _ = env.step(gpu.actions[:, :, t].reshape(6, -1).double().cpu().numpy())
        np.testing.assert_allclose(gpu.rewards[:, :, t].reshape(6).cpu().numpy(), reward, atol=1e-3)


def _syncs(fn) -> int:
    """How many host synchronisations `fn()` makes (torch's CUDA sync debug mode, as warnings)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_sampling_synchronises_once_per_step():
    """The actions' copy to the CPU physics is the step loop's one synchronisation (docs/performance.md)."""
    family = get_family("halfcheetah-vel")  # no early termination: every step of the horizon runs
    spec = PolicySpec(family.obs_dim, family.act_dim)
    params = {k: v.cuda() for k, v in spec.init(0).items()}
    tasks = np.array([[0.5], [1.0]])

    def syncs(horizon: int) -> int:
        sampler = Sampler(family, spec, 2, 2, horizon=horizon, device="cuda")
        sampler.sample(params, tasks, seed=0)  # warm-up
        return _syncs(lambda: sampler.sample(params, tasks, seed=0))

    counts = {horizon: syncs(horizon) for horizon in (5, 15)}
    assert counts[15] - counts[5] == 10, counts


@pytest.mark.parametrize("curvature", CURVATURES)
def test_curvature_products_never_synchronise_and_cg_once_per_iteration(monkeypatch, curvature):
    """Every Fisher-vector product of a real meta-step runs with synchronisation forbidden; CG then adds
    exactly one per iteration (its residual test)."""
    built = []
    make_fvp = learner_module.curvature_fvp

    def strict(*args, **kwargs):
        fvp = make_fvp(*args, **kwargs)

        def product(v):
            torch.cuda.set_sync_debug_mode("error")
            try:
                return fvp(v)
            finally:
                torch.cuda.set_sync_debug_mode("default")

        built.append(fvp)
        return product

    monkeypatch.setattr(learner_module, "curvature_fvp", strict)
    learner = new_learner(tiny_config(device="cuda", **{"meta.curvature": curvature}))
    meta_step(learner, 0)
    assert built
    fvp = built[-1]
    g = torch.randn(sum(p.numel() for p in learner.params.values()), device="cuda")
    fvp(g)  # warm-up
    assert _syncs(lambda: conjugate_gradient(lambda v: fvp(v) + 1e-5 * v, g, 5, tol=0.0)) == 5


def test_cuda_training_runs_and_resumes_identically(tmp_path):
    cfg = tiny_config(iterations=3, device="cuda")
    train(cfg, tmp_path / "a", quiet=True)
    train(tiny_config(iterations=2, device="cuda"), tmp_path / "b", quiet=True)
    train(cfg, tmp_path / "b", resume=True, quiet=True)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["params"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["params"]
    assert all(torch.allclose(a[k], b[k]) for k in a)


def test_cuda_evaluation_runs_end_to_end_and_gives_the_cpu_numbers(tmp_path):
    """Train on CUDA, evaluate the run on CUDA and on the CPU with one seed: the same returns up to rounding."""
    run = tmp_path / "run"
    train(tiny_config(iterations=2, device="cuda"), run, quiet=True)
    summaries = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / f"eval-{device}"
        assert main(["evaluate", str(run), "--sample", "4", "--trajectories", "3", "--repeats", "3",
                     "--device", device, "--out", str(out)]) == 0
        assert {"returns.csv.gz", "tasks.csv", "summary.json"} <= {p.name for p in out.iterdir()}
        summaries[device] = json.loads((out / "summary.json").read_text())
    for key in ("pre_return", "post_return", "mean_gamma", "action_std"):
        assert summaries["cuda"][key] == pytest.approx(summaries["cpu"][key], rel=1e-4, abs=1e-4), key
