"""Wall time of one paper-sized meta-iteration (HalfCheetahVel: 40 tasks x 20 + 20 trajectories
x 200 steps, TRPO with 10 CG iterations), split into sampling, adaptation and the TRPO step,
and vmapped versus looped adaptation, all measured in one run.

Usage: python benchmarks/meta_iteration.py [--device cpu|cuda] [--tasks FAMILY] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import safemaml  # noqa: E402,F401
from safemaml import config as config_io  # noqa: E402
from safemaml.adapt import adapt_loop, adapt_vmap  # noqa: E402
from safemaml.trainer import Learner, meta_step  # noqa: E402


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def adaptation_costs(learner: Learner, repeats: int) -> dict[str, float]:
    """Adaptation plus meta-gradient through it, vmapped and looped, on one real pre-update batch."""
    cfg = learner.cfg
    family = learner.pre_sampler.family
    tasks = family.sample(cfg.meta_batch_size, np.random.default_rng(0))
    pre = learner.pre_sampler.sample(learner.params, tasks, seed=0)
    adv = learner.advantages(pre)
    out = {}
    for name, fn in (("vmap", adapt_vmap), ("loop", adapt_loop)):
        def run():
            theta = {k: v.detach().requires_grad_(True) for k, v in learner.params.items()}
            fast = fn(learner.spec, cfg.adapt, theta, pre.obs, pre.actions, adv, pre.mask)
            torch.autograd.grad(sum(v.sum() for v in fast.values()), list(theta.values()))
        out[name] = timed(run, repeats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", default="halfcheetah-vel")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fvp-subsample", type=float, default=1.0, help="TRPO curvature from this fraction")
    args = parser.parse_args()
    cfg = config_io.override(config_io.preset(args.tasks),
                             {"device": args.device, "meta.fvp_subsample": args.fvp_subsample})
    learner = Learner.create(cfg)
    print(f"# meta-iteration benchmark, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, device {args.device}")
    print(f"# {cfg.tasks}: {cfg.meta_batch_size} tasks x ({cfg.fast_batch_size} + {cfg.post_batch_size}) "
          f"trajectories, TRPO cg_iters={cfg.meta.cg_iters}, fvp_subsample={cfg.meta.fvp_subsample}")
    rows = [meta_step(learner, i) for i in range(args.repeats)]
    best = min(rows, key=lambda m: m["time_sampling"] + m["time_adapt"] + m["time_optimize"])
    sampling, adaptation, trpo = best["time_sampling"], best["time_adapt"], best["time_optimize"]
    total = sampling + adaptation + trpo
    print("| sampling (2 phases) | adaptation | TRPO step | total | total / sampling |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {sampling:.2f} s | {adaptation:.2f} s | {trpo:.2f} s | {total:.2f} s | {total / sampling:.2f} |")
    costs = adaptation_costs(learner, args.repeats)
    print("\n| adaptation + meta-gradient | vmap | per-task loop | vmap / loop |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| {cfg.meta_batch_size} tasks | {costs['vmap']:.2f} s | {costs['loop']:.2f} s | "
          f"{costs['vmap'] / costs['loop']:.2f} |")


if __name__ == "__main__":
    main()
