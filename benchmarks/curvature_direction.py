"""How good, and how costly, is each TRPO curvature's search direction? On one paper-sized
HalfCheetahVel meta-batch (40 tasks x 20 + 20 trajectories, the initial policy, seed 0), solve
F d = g by conjugate gradient with each curvature (meta.curvature, meta.fvp_subsample, CG
iterations) and report the wall time, the cosine between d and the exact curvature's direction,
and the first-order loss decrease g.d of the step scaled to KL = 0.01 under the *exact* curvature
(what TRPO's line search would enforce): the exact direction maximises it.

Usage: python benchmarks/curvature_direction.py [--tasks FAMILY]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import safemaml  # noqa: E402,F401
from safemaml import config as config_io  # noqa: E402
from safemaml.engine.curvature import make_fvp  # noqa: E402
from safemaml.engine.learner import Learner  # noqa: E402
from safemaml.engine.metaopt import conjugate_gradient  # noqa: E402
from safemaml.engine.metastep import MetaData, inner_loop, meta_loss  # noqa: E402
from safemaml.engine.policy import Params  # noqa: E402
from safemaml.runs.train import new_learner  # noqa: E402

VARIANTS = [("exact", 1.0, 10), ("adapted-fisher", 1.0, 10), ("adapted-fisher", 0.25, 10),
            ("adapted-fisher", 0.25, 5), ("exact", 0.25, 10), ("adapted-fisher", 0.5, 10)]


def meta_batch(learner: Learner, tasks: np.ndarray, seed_of: Callable[[int], int]) -> MetaData:
    """Sample and adapt as a meta-iteration does: pre-update data with seeds seed_of(0), seed_of(2), ...,
    post-update data with seed_of(1), at the learner's parameters."""
    inner = inner_loop(learner.spec, learner.cfg.adapt, learner.params, learner.pre_sampler, tasks, seed_of,
                       learner.advantages)
    post = learner.post_sampler.sample(inner.fast, tasks, seed=seed_of(1))
    return MetaData(inner.pre, post, inner.pre_adv, learner.advantages(post), inner.fast, inner.resampled)


def meta_gradient(learner: Learner, params: Params, data: MetaData) -> tuple[Params, torch.Tensor]:
    """theta (leaves at params) and the flat gradient of the objective's meta-loss there, TRPO's g."""
    theta = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    loss, _, _ = meta_loss(learner.spec, learner.cfg.adapt, learner.objective, theta, data)
    return theta, torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss, list(theta.values()))])


def loss_decrease_at_kl(g: torch.Tensor, d: torch.Tensor, dfd: float, max_kl: float) -> float:
    """g.d for d scaled so that 1/2 d'Fd = max_kl (dfd = d'Fd, F the exact damped curvature): the meta-loss
    decrease TRPO's full step predicts to first order. The exact natural gradient F^-1 g maximises it, and
    for any d it is sqrt(2 max_kl g'F^-1 g) times the F-cosine between d and F^-1 g."""
    return (g @ d).item() * math.sqrt(2 * max_kl / dfd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="halfcheetah-vel")
    args = parser.parse_args()
    cfg = config_io.preset(args.tasks)
    learner = new_learner(cfg)
    tasks = learner.pre_sampler.family.sample(cfg.meta_batch_size, np.random.default_rng(0))
    data = meta_batch(learner, tasks, lambda s: s)
    theta, g = meta_gradient(learner, learner.params, data)
    exact = make_fvp("exact", learner.spec, cfg.adapt, theta, data)
    damping = cfg.meta.cg_damping
    print(f"# {args.tasks}, load average {os.getloadavg()[0]:.1f}")
    print("| curvature | fvp_subsample | CG iterations | time (build + CG) | cos(d, d_exact) "
          "| loss decrease at exact KL = max_kl |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    reference = None
    for curvature, subsample, iters in VARIANTS:
        start = time.perf_counter()
        product = make_fvp(curvature, learner.spec, cfg.adapt, theta, data, subsample)
        d = conjugate_gradient(lambda v, product=product: product(v) + damping * v, g, iters)
        seconds = time.perf_counter() - start
        reference = d if reference is None else reference
        gain = loss_decrease_at_kl(g, d, (d @ (exact(d) + damping * d)).item(), cfg.meta.max_kl)
        cos = (d @ reference / d.norm() / reference.norm()).item()
        print(f"| {curvature} | {subsample:g} | {iters} | {seconds:.1f} s | {cos:.3f} | {gain:.5f} |", flush=True)


if __name__ == "__main__":
    main()
