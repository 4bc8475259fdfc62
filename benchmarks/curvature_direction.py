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
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import safemaml  # noqa: E402,F401
from safemaml import config as config_io  # noqa: E402
from safemaml.engine.curvature import make_fvp  # noqa: E402
from safemaml.engine.metaopt import conjugate_gradient  # noqa: E402
from safemaml.engine.metastep import MetaData, inner_loop, meta_loss  # noqa: E402
from safemaml.runs.train import new_learner

VARIANTS = [("exact", 1.0, 10), ("adapted-fisher", 1.0, 10), ("adapted-fisher", 0.25, 10),
            ("adapted-fisher", 0.25, 5), ("exact", 0.25, 10), ("adapted-fisher", 0.5, 10)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="halfcheetah-vel")
    args = parser.parse_args()
    cfg = config_io.preset(args.tasks)
    learner = new_learner(cfg)
    tasks = learner.pre_sampler.family.sample(cfg.meta_batch_size, np.random.default_rng(0))
    inner = inner_loop(learner.spec, cfg.adapt, learner.params, learner.pre_sampler, tasks, lambda s: s,
                       learner.advantages)
    post = learner.post_sampler.sample(inner.fast, tasks, seed=1)
    data = MetaData(inner.pre, post, inner.pre_adv, learner.advantages(post), inner.fast, inner.resampled)
    theta = {k: v.detach().requires_grad_(True) for k, v in learner.params.items()}
    loss, _, _ = meta_loss(learner.spec, cfg.adapt, learner.objective, theta, data)
    g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss, list(theta.values()))])
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
        d = conjugate_gradient(lambda v: product(v) + damping * v, g, iters)  # noqa: B023  (used at once)
        seconds = time.perf_counter() - start
        reference = d if reference is None else reference
        shs = 0.5 * (d @ (exact(d) + damping * d)).item()
        gain = (g @ d).item() * np.sqrt(cfg.meta.max_kl / shs)
        cos = (d @ reference / d.norm() / reference.norm()).item()
        print(f"| {curvature} | {subsample:g} | {iters} | {seconds:.1f} s | {cos:.3f} | {gain:.5f} |", flush=True)


if __name__ == "__main__":
    main()
