"""The CUDA path, against the CPU path; skipped on machines without a GPU."""

import numpy as np
import pytest
import torch

from helpers import tiny_config
from safemaml.engine.policy import PolicySpec
from safemaml.engine.rollout import Sampler
from safemaml.tasks import get_family
from safemaml.runs.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_cuda_sampling_follows_the_cpu_policy():
    family = get_family("halfcheetah-vel")
    spec = PolicySpec(family.obs_dim, family.act_dim)
    params = spec.init(0)
    tasks = np.array([[0.5], [1.5]])
    cpu = Sampler(family, spec, 2, 3, horizon=20).sample(params, tasks, seed=1)
    gpu = Sampler(family, spec, 2, 3, horizon=20, device="cuda").sample(
        {k: v.cuda() for k, v in params.items()}, tasks, seed=1)
    assert gpu.obs.device.type == "cuda" and gpu.obs.shape == cpu.obs.shape
    # CUDA draws its own noise stream; replaying its actions in a CPU engine reproduces what it recorded
    env = family.make_env(6)
    env.set_tasks(np.repeat(tasks, 3, axis=0))
    obs = env.reset(seed=1)
    for t in range(20):
        np.testing.assert_allclose(gpu.obs[:, :, t].reshape(6, -1).cpu().numpy(), obs, atol=1e-4)
        obs, reward, _ = env.step(gpu.actions[:, :, t].reshape(6, -1).double().cpu().numpy())
        np.testing.assert_allclose(gpu.rewards[:, :, t].reshape(6).cpu().numpy(), reward, atol=1e-3)


def test_cuda_training_runs_and_resumes_identically(tmp_path):
    cfg = tiny_config(iterations=3, device="cuda")
    train(cfg, tmp_path / "a", quiet=True)
    train(tiny_config(iterations=2, device="cuda"), tmp_path / "b", quiet=True)
    train(cfg, tmp_path / "b", resume=True, quiet=True)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["params"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["params"]
    assert all(torch.allclose(a[k], b[k]) for k in a)
