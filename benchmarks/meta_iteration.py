"""Wall time of one paper-sized meta-iteration (HalfCheetahVel: 40 tasks x 20 + 20 trajectories
x 200 steps, TRPO), split into sampling, adaptation and the TRPO step, for the default configuration and the
exact curvature with the paper's plain CG 10 (and any other `meta.curvature[:fvp_subsample][+direction]`)
side by side in one run, with the peak memory (RSS) of each meta-iteration; then vmapped versus
looped adaptation.

Usage: python benchmarks/meta_iteration.py [--device cpu|cuda] [--tasks FAMILY] [--repeats R]
           [--curvatures default exact+cg10 analytic+pcg5 adapted-fisher:0.25] [--skip-adaptation]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import safemaml  # noqa: E402,F401
from safemaml import config as config_io  # noqa: E402
from safemaml.engine import learner as trainer  # noqa: E402
from safemaml.engine.adapt import adapt_loop, adapt_vmap  # noqa: E402
from safemaml.engine.learner import Learner, meta_step, torch_device  # noqa: E402
from safemaml.errors import SafeMamlError  # noqa: E402
from safemaml.runs.train import new_learner  # noqa: E402


def sync() -> None:
    """Wait for the GPU, if one is in use: CUDA runs asynchronously, and a host clock read without this
    would time only the kernel launches."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def reset_peak_rss() -> None:
    """Reset the process's peak RSS (Linux: writing 5 to /proc/self/clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """Peak RSS since the last reset (VmHWM), else since the process started (ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepClock:
    """Times the two costly parts of a TRPO step by wrapping the functions meta_step calls: meta-loss
    evaluations (the gradient's forward pass and every line-search candidate) and Fisher-vector products
    (CG's iterations and the step's scaling). The rest of the step is the gradient's backward pass."""

    def __init__(self) -> None:
        self.loss_calls = self.loss_s = self.fvp_calls = self.fvp_s = 0.0
        self._meta_loss, self._make_fvp = trainer.meta_loss, trainer.curvature_fvp
        trainer.meta_loss, trainer.curvature_fvp = self.meta_loss, self.make_fvp

    def reset(self) -> None:
        self.loss_calls = self.loss_s = self.fvp_calls = self.fvp_s = 0.0

    def meta_loss(self, *args, **kwargs):
        sync()
        start = time.perf_counter()
        out = self._meta_loss(*args, **kwargs)
        sync()
        self.loss_calls, self.loss_s = self.loss_calls + 1, self.loss_s + time.perf_counter() - start
        return out

    def make_fvp(self, *args, **kwargs):
        sync()
        start = time.perf_counter()
        fvp = self._make_fvp(*args, **kwargs)
        sync()
        self.fvp_s += time.perf_counter() - start  # building the product (its first-order graph) counts too

        def timed_fvp(v):
            sync()
            begin = time.perf_counter()
            out = fvp(v)
            sync()
            self.fvp_calls, self.fvp_s = self.fvp_calls + 1, self.fvp_s + time.perf_counter() - begin
            return out

        return timed_fvp


DIRECTIONS = {  # TRPO's direction (issue 28.1): plain CG 10 (the paper's) or the adapted-fisher-preconditioned CG 5
    "cg10": {"meta.cg_precondition": "none", "meta.cg_iters": 10, "meta.cg_step_length": "product"},
    "pcg5": {"meta.cg_precondition": "adapted-fisher", "meta.cg_iters": 5, "meta.cg_step_length": "residual"},
}


def variant(base, name: str):
    """The config of a variant: 'default' (the config as is), or 'CURVATURE[:SUBSAMPLE][+DIRECTION]' with a
    DIRECTION of DIRECTIONS (e.g. analytic+pcg5, exact+cg10)."""
    if name == "default":
        return base
    spec, _, direction = name.partition("+")
    curvature, _, subsample = spec.partition(":")
    changes = {"meta.curvature": curvature, "meta.fvp_subsample": float(subsample or 1.0)}
    if direction and direction not in DIRECTIONS:
        raise SystemExit(f"unknown direction {direction!r}; known: {', '.join(DIRECTIONS)}")
    return config_io.override(base, changes | DIRECTIONS.get(direction, {}))


def label(name: str, cfg) -> str:
    meta = cfg.meta
    direction = ("plain CG" if meta.cg_precondition == "none" else f"{meta.cg_precondition} PCG") + f" {meta.cg_iters}"
    return f"{meta.curvature}, {direction}" + (" (default)" if name == "default" else "")


def adaptation_costs(learner: Learner, repeats: int) -> dict[str, float]:
    """Adaptation plus meta-gradient through it, vmapped and looped, on one real pre-update batch."""
    cfg = learner.cfg
    family = learner.pre_sampler.family
    tasks = family.sample(cfg.meta_batch_size, np.random.default_rng(0))
    pre = learner.pre_sampler.sample(learner.params, tasks, seed=0)
    adv = learner.advantages(pre)
    out = {}
    for name, fn in (("vmap", adapt_vmap), ("loop", adapt_loop)):
        def run(fn=fn):
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
    parser.add_argument("--curvatures", nargs="+", default=["default", "exact+cg10"],
                        help="'default' or CURVATURE[:FVP_SUBSAMPLE][+DIRECTION], e.g. adapted-fisher:0.25, "
                             "analytic+pcg5, exact+cg10")
    parser.add_argument("--skip-adaptation", action="store_true", help="skip the vmap/loop table")
    args = parser.parse_args()
    try:
        cuda = torch_device(args.device).type == "cuda"
    except SafeMamlError as error:
        parser.error(str(error))
    base = config_io.override(config_io.preset(args.tasks), {"device": args.device})
    configs = {name: variant(base, name) for name in args.curvatures}
    print(f"# meta-iteration benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, "
          f"device {args.device}" + (f" ({torch.cuda.get_device_name(args.device)})" if cuda else ""))
    if cuda:
        print("# on CUDA the clock waits for the GPU around meta-loss evaluations and products; the adaptation's GPU"
              " work may end inside the post-update sampling, which then counts it")
    print(f"# {base.tasks}: {base.meta_batch_size} tasks x ({base.fast_batch_size} + {base.post_batch_size}) "
          f"trajectories, TRPO cg_iters={base.meta.cg_iters}; the variants alternate, best of {args.repeats}")
    learners = {name: new_learner(cfg) for name, cfg in configs.items()}  # the same seed: the same first data
    rows: dict[str, list[dict]] = {name: [] for name in configs}
    clock = StepClock()
    for i in range(args.repeats):
        for name, learner in learners.items():
            reset_peak_rss()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            clock.reset()
            metrics = meta_step(learner, i)
            sync()
            gpu_mib = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
            metrics |= {"rss": peak_rss_mib(), "gpu_mib": gpu_mib, "loss_calls": clock.loss_calls,
                        "loss_s": clock.loss_s, "fvp_calls": clock.fvp_calls, "fvp_s": clock.fvp_s}
            rows[name].append(metrics)
    print("| curvature, direction | fvp_subsample | sampling (2 phases) | adaptation | TRPO step | total | total / sampling "
          "| peak RSS |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, cfg in configs.items():
        best = min(rows[name], key=lambda m: m["time_sampling"] + m["time_adapt"] + m["time_optimize"])
        sampling, adaptation, trpo = best["time_sampling"], best["time_adapt"], best["time_optimize"]
        total = sampling + adaptation + trpo
        print(f"| {label(name, cfg)} | {cfg.meta.fvp_subsample:g} | {sampling:.2f} s | {adaptation:.2f} s | {trpo:.2f} s | "
              f"{total:.2f} s | {total / sampling:.2f} | {max(m['rss'] for m in rows[name]):.0f} MiB |", flush=True)
    if cuda:
        print("# peak CUDA memory allocated in a meta-iteration: " + ", ".join(
            f"{name} {max(m['gpu_mib'] for m in rows[name]):.0f} MiB" for name in configs))
    print("\n| curvature, direction | TRPO step | meta-loss evaluations | exact curvature products | the rest (backward, "
          "CG, preconditioner) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, cfg in configs.items():
        best = min(rows[name], key=lambda m: m["time_sampling"] + m["time_adapt"] + m["time_optimize"])
        rest = best["time_optimize"] - best["loss_s"] - best["fvp_s"]
        print(f"| {label(name, cfg)}:{cfg.meta.fvp_subsample:g} | {best['time_optimize']:.2f} s | "
              f"{best['loss_calls']:.0f} × = {best['loss_s']:.2f} s | {best['fvp_calls']:.0f} × = "
              f"{best['fvp_s']:.2f} s | {rest:.2f} s |", flush=True)
    if args.skip_adaptation:
        return
    learner = next(iter(learners.values()))
    costs = adaptation_costs(learner, args.repeats)
    print("\n| adaptation + meta-gradient | vmap | per-task loop | vmap / loop |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| {base.meta_batch_size} tasks | {costs['vmap']:.2f} s | {costs['loop']:.2f} s | "
          f"{costs['vmap'] / costs['loop']:.2f} |")


if __name__ == "__main__":
    main()
