"""Small real configurations and data shared by the engine tests."""

import dataclasses
import signal
import time

import numpy as np
import torch

from safemaml import config as config_io
from safemaml.engine.policy import PolicySpec
from safemaml.engine.returns import advantages
from safemaml.engine.rollout import Sampler
from safemaml.tasks import get_family


def tiny_config(**overrides) -> config_io.TrainConfig:
    base = config_io.TrainConfig(tasks="nav2d", iterations=4, meta_batch_size=3, fast_batch_size=4,
                                 post_batch_size=4, checkpoint_every=2,
                                 policy=config_io.PolicyConfig(hidden=(16, 16)))
    return config_io.override(base, overrides) if overrides else base


def pre_batch(family="nav2d", K=3, n=4, seed=0, dtype=torch.float64):
    """A real pre-update batch and its advantages, in float64 for tight comparisons."""
    fam = get_family(family)
    spec = PolicySpec(fam.obs_dim, fam.act_dim, hidden=(16, 16))
    params = {k: v.to(dtype) for k, v in spec.init(seed).items()}
    traj = Sampler(fam, spec, K, n, horizon=min(fam.horizon, 30)).sample(
        {k: v.float() for k, v in params.items()}, fam.sample(K, np.random.default_rng(seed)), seed=seed)
    traj = dataclasses.replace(traj, **{f: getattr(traj, f).to(dtype) for f in
                                        ("obs", "actions", "rewards", "mask", "log_probs")})
    adv = advantages(traj.obs, traj.rewards, traj.mask, 0.99, 1.0)
    return spec, params, traj, adv



def interruptible() -> None:
    """A subprocess's preexec_fn: take Ctrl-C's default action, even when the tests run as a background job (whose
    children inherit SIGINT ignored, so Python would install no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(path, proc, timeout=120):
    """Wait until `path` exists while the subprocess `proc` keeps running (it must not die first)."""
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() - start < timeout
        time.sleep(0.02)
