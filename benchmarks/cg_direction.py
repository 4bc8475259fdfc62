"""How few exact curvature products can TRPO's search direction take (issue 28)?

On meta-batches recorded from the training runs (halfcheetah-vel-maml-500 at iterations 0, 100 and 500,
nav2d-maml-100 at 0 and 100: the batch that training iteration N samples, from the checkpoint of N finished
iterations; N = 0 is the seed's initial policy), TRPO's system (F + cI) d = g is solved by each variant of
conjugate gradient and compared with today's plain CG, meta.cg_iters = 10:

- gain: the meta-loss decrease g.d that d predicts to first order once scaled to the exact KL bound
  (1/2 d'(F + cI)d = max_kl, F the exact curvature). It is sqrt(2 max_kl g'F^-1 g) times the F-cosine
  between d and the converged solve F^-1 g, so the ratio of two variants' gains (column "x today") is the
  ratio of their F-cosines to the converged solve, whether or not a converged solve is at hand;
- cos: Euclidean cosines to the longest solves computed, plain CG and Jacobi-preconditioned CG (as the
  engine's fisher-diagonal) with --reference-iters iterations; their residuals are printed: neither converges;
- res: the relative residual |g - (F + cI)d| / |g|;
- exact: exact products per TRPO step (the direction, plus one for the step length unless the variant takes
  d'(F + cI)d = d.(g - r) from CG's residual r, as meta.cg_step_length = "residual" does); cheap: products of
  the adapted-fisher curvature (J_T = I) on a quarter of the trajectories; cost: exact + cheap products + the
  diagonal, in exact products by their measured times;
- TRPO's line search run on each direction: the candidates it tried (ls), the realised meta-loss decrease
  and KL, and the meta-loss decrease on a held-out meta-batch sampled at the same parameters (fresh tasks
  and trajectories): whether a larger predicted decrease is realised, and carries over to new data.
The rows named "engine's" are the engine's meta.cg_precondition settings; each batch also checks that the
engine's TRPO step with them reaches the same parameters. A second table takes the batch of iteration N + 1
(sampled after today's TRPO step from N) and starts CG from step N's direction (warm start). The summaries
compare every variant with today's over the batches.

Usage: python benchmarks/cg_direction.py [--batches halfcheetah-vel:0,100,500 nav2d:0,100] [--cache DIR]
       [--reference-iters 50]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tomllib

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from curvature_direction import loss_decrease_at_kl, meta_batch, meta_gradient  # noqa: E402
from torch import Tensor  # noqa: E402

import safemaml  # noqa: E402,F401
from safemaml import config as config_io  # noqa: E402
from safemaml.config import TrainConfig  # noqa: E402
from safemaml.engine.curvature import (  # noqa: E402
    DIAGONAL_SUBSAMPLE,
    INNER_ITERS,
    adapted_fisher_diagonal,
    make_fvp,
    preconditioner,
)
from safemaml.engine.learner import Learner, derive_seed  # noqa: E402
from safemaml.engine.metaopt import (  # noqa: E402
    PRECONDITIONER_FLOOR,
    conjugate_gradient,
    fisher_preconditioner,
    line_search,
    preconditioned_cg,
    trpo_step,
)
from safemaml.engine.metastep import MetaData, meta_loss  # noqa: E402
from safemaml.engine.mlp_curvature import adapted_fisher_fvp  # noqa: E402
from safemaml.engine.policy import Params  # noqa: E402
from safemaml.engine.rollout import Trajectories  # noqa: E402
from safemaml.runs.train import new_learner  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUNS = {"halfcheetah-vel": ROOT / "experiments/runs/halfcheetah-vel-maml-500",
        "nav2d": ROOT / "experiments/runs/nav2d-maml-100"}
HELD_OUT = 1000  # seed phase of the held-out batch (training uses phases 0 and 1)
CHEAP_SUBSAMPLE = DIAGONAL_SUBSAMPLE  # the preconditioners' adapted-fisher products: from a quarter of the trajectories


# ---- recording ---------------------------------------------------------------------------------


@dataclass
class Recorded:
    """Batch N at theta_N, a held-out batch at theta_N, today's CG direction on batch N, and batch N + 1
    at theta_N+1 (today's TRPO step from batch N)."""

    cfg: TrainConfig
    iteration: int
    params: Params
    data: MetaData
    held_out: MetaData
    direction: Tensor
    next_params: Params
    next_data: MetaData


def learner_at(family: str, iteration: int) -> Learner:
    """A learner with the run's config (today's curvature and CG) at its checkpoint of `iteration` iterations."""
    run = RUNS[family]
    cfg = config_io.override(config_io.load(run / "config.toml"),
                             {"meta.curvature": "analytic", "meta.cg_precondition": "none"})
    learner = new_learner(cfg)
    if iteration > 0:
        ckpt = torch.load(run / "checkpoints" / f"iter_{iteration:05d}.pt", map_location="cpu", weights_only=True)
        learner.params = {k: v.to(learner.device) for k, v in ckpt["params"].items()}
    return learner


def sample(learner: Learner, iteration: int, *phase: int) -> MetaData:
    """The meta-batch training iteration `iteration` samples (no phase), or a held-out one (phase given)."""
    cfg = learner.cfg
    tasks = learner.pre_sampler.family.sample(cfg.meta_batch_size, np.random.default_rng([cfg.seed, iteration,
                                                                                            *phase]))
    return meta_batch(learner, tasks, lambda s: derive_seed(cfg.seed, iteration, *phase, s))


def record(family: str, iteration: int) -> Recorded:
    learner = learner_at(family, iteration)
    cfg, params = learner.cfg, learner.params
    data, held_out = sample(learner, iteration), sample(learner, iteration, HELD_OUT)
    theta, g = meta_gradient(learner, params, data)
    product = make_fvp("analytic", learner.spec, cfg.adapt, theta, data)
    direction = conjugate_gradient(lambda v: product(v) + cfg.meta.cg_damping * v, g, cfg.meta.cg_iters)

    def make_fvp_now(theta: Params):
        return make_fvp("analytic", learner.spec, cfg.adapt, theta, data)

    learner.params, _ = trpo_step(params, evaluator(learner, data), cfg.meta, make_fvp_now)
    return Recorded(cfg, iteration, params, data, held_out, direction, learner.params,
                    sample(learner, iteration + 1))


def evaluator(learner: Learner, data: MetaData) -> Callable[[Params], tuple[Tensor, Tensor]]:
    def evaluate(theta: Params) -> tuple[Tensor, Tensor]:
        loss, kl, _ = meta_loss(learner.spec, learner.cfg.adapt, learner.objective, theta, data)
        return loss, kl
    return evaluate


def _pack(data: MetaData) -> dict:
    return {"pre": dataclasses.asdict(data.pre), "post": dataclasses.asdict(data.post), "pre_adv": data.pre_adv,
            "post_adv": data.post_adv, "sampling_params": data.sampling_params}


def _unpack(d: dict) -> MetaData:
    return MetaData(Trajectories(**d["pre"]), Trajectories(**d["post"]), d["pre_adv"], d["post_adv"],
                    d["sampling_params"])


def recorded(family: str, iteration: int, cache: Path | None) -> Recorded:
    """record(), or its copy in `cache` (written there the first time)."""
    path = cache / f"{family}-{iteration}.pt" if cache else None
    if path is not None and path.is_file():
        s = torch.load(path, weights_only=True)
        return Recorded(config_io.from_dict(tomllib.loads(s["config"])), s["iteration"], s["params"],
                        _unpack(s["data"]), _unpack(s["held_out"]), s["direction"], s["next_params"],
                        _unpack(s["next_data"]))
    rec = record(family, iteration)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": config_io.dumps(rec.cfg), "iteration": rec.iteration, "params": rec.params,
                    "data": _pack(rec.data), "held_out": _pack(rec.held_out), "direction": rec.direction,
                    "next_params": rec.next_params, "next_data": _pack(rec.next_data)}, path)
    return rec


# ---- the variants ------------------------------------------------------------------------------


class Counted:
    """A matrix-vector product that counts its calls."""

    def __init__(self, product: Callable[[Tensor], Tensor]):
        self.product, self.calls = product, 0

    def __call__(self, v: Tensor) -> Tensor:
        self.calls += 1
        return self.product(v)


@dataclass
class System:
    """TRPO's system on one batch: g, the exact damped product A, the cheap damped product M (adapted-fisher on
    a quarter of the trajectories), the damping c, the adapted-Fisher diagonals by subsample, the previous
    step's direction (for a warm start), and the seconds each kind of product takes."""

    g: Tensor
    A: Counted
    M: Counted
    damping: float
    diagonal: dict[float, Tensor]
    seconds: dict[str, float]
    previous: Tensor | None = None

    def preconditioner(self, subsample: float = 1.0, floor: float = PRECONDITIONER_FLOOR) -> Callable[[Tensor], Tensor]:
        """The engine's M^-1 for meta.cg_precondition = "fisher-diagonal" (floor: its floor)."""
        return fisher_preconditioner(self.diagonal[subsample], self.damping, floor)


Solve = Callable[[System], tuple[Tensor, Tensor | None]]  # direction, and CG's residual if it gives one


@dataclass
class Variant:
    name: str
    solve: Solve
    diagonal: float | None = None  # the subsample of the adapted-Fisher diagonal it uses (its cost)


def hutchinson(system: System, samples: int, seed: int = 0) -> Tensor:
    """diag(M) estimated as the mean of z * M z over Rademacher z (Hutchinson), from `samples` cheap products."""
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros_like(system.g)
    for _ in range(samples):
        z = (2 * torch.randint(0, 2, system.g.shape, generator=gen) - 1).to(system.g)
        total += z * system.M(z)
    return total / samples - system.damping  # the estimate of diag(M - cI), like adapted_fisher_diagonal


def warm(iters: int, precondition: bool = False) -> Solve:
    """CG from x0 = s d_prev, s minimising the quadratic along d_prev (one product): CG on A y = g - A x0
    (Jacobi-preconditioned as the engine's fisher-diagonal if `precondition`)."""
    def solve(s: System) -> tuple[Tensor, Tensor | None]:
        assert s.previous is not None
        ax0 = s.A(s.previous)
        scale = (s.g @ s.previous) / (s.previous @ ax0)
        pre = s.preconditioner(DIAGONAL_SUBSAMPLE) if precondition else None
        y, r = preconditioned_cg(s.A, s.g - scale * ax0, iters, pre)
        return scale * s.previous + y, r
    return solve


def inner(outer: int, inner_iters: int, precondition: bool = False) -> Solve:
    """Flexible PCG whose M^-1 r is `inner_iters` iterations of CG on M (Jacobi-preconditioned with the diagonal
    from a quarter of the trajectories if `precondition`)."""
    def solve(s: System) -> tuple[Tensor, Tensor | None]:
        pre = s.preconditioner(CHEAP_SUBSAMPLE) if precondition else None
        return preconditioned_cg(s.A, s.g, outer, lambda r: preconditioned_cg(s.M, r, inner_iters, pre)[0],
                                 flexible=True)
    return solve


def jacobi_pcg(iters: int, subsample: float = 1.0, floor: float = PRECONDITIONER_FLOOR) -> Solve:
    return lambda s: preconditioned_cg(s.A, s.g, iters, s.preconditioner(subsample, floor))


def plain(iters: int, rtol: float = 0.0) -> Solve:
    return lambda s: preconditioned_cg(s.A, s.g, iters, rtol=rtol)


ENGINE = (f"(ii) Jacobi PCG 8, engine's fisher-diagonal (diagonal from 1/{1 / DIAGONAL_SUBSAMPLE:g} of the "
          f"trajectories, floor {PRECONDITIONER_FLOOR:g})")
TWO_LEVEL = f"(ii) flexible PCG 5, engine's adapted-fisher (M^-1 by {INNER_ITERS} inner Jacobi PCG)"


def main_variants(today: int) -> list[Variant]:
    floor = f"floor {PRECONDITIONER_FLOOR:g}"
    return [
        Variant(f"plain CG {today} (today)", lambda s: (conjugate_gradient(s.A, s.g, today), None)),
        Variant(f"plain CG {today}, step length from the residual", plain(today)),
        Variant("plain CG 6", plain(6)),
        Variant("plain CG 20", plain(20)),
        Variant(f"(iv) plain CG, at most {today}, stop at |r| <= 0.5 |g|", plain(today, rtol=0.5)),
        Variant("(ii) Jacobi PCG 6, adapted-Fisher diagonal, no floor", jacobi_pcg(6, floor=0.0), 1.0),
        Variant("(ii) Jacobi PCG 8, adapted-Fisher diagonal, no floor", jacobi_pcg(8, floor=0.0), 1.0),
        Variant(f"(ii) Jacobi PCG 8, adapted-Fisher diagonal from all trajectories, {floor}", jacobi_pcg(8), 1.0),
        *[Variant(ENGINE.replace("PCG 8", f"PCG {k}"), jacobi_pcg(k, DIAGONAL_SUBSAMPLE), DIAGONAL_SUBSAMPLE)
          for k in (6, 8, 10)],
        Variant(f"(ii) Jacobi PCG 8, Hutchinson diagonal from 20 cheap products, {floor}",
                lambda s: preconditioned_cg(s.A, s.g, 8, fisher_preconditioner(hutchinson(s, 20), s.damping))),
        Variant("(ii) flexible PCG 4, M^-1 by 10 inner CG on adapted-fisher", inner(4, 10)),
        *[Variant(TWO_LEVEL.replace("PCG 5", f"PCG {k}"), inner(k, INNER_ITERS, True), CHEAP_SUBSAMPLE)
          for k in (4, 5)],
    ]


def warm_variants(today: int) -> list[Variant]:
    return [
        Variant(f"plain CG {today} (today)", lambda s: (conjugate_gradient(s.A, s.g, today), None)),
        Variant(f"(iii) warm start from step N's direction, {today - 1} CG iterations", warm(today - 1)),
        Variant(ENGINE, jacobi_pcg(8, DIAGONAL_SUBSAMPLE), DIAGONAL_SUBSAMPLE),
        Variant("(ii)+(iii) warm start, then Jacobi PCG 7 as the engine's", warm(7, True), DIAGONAL_SUBSAMPLE),
    ]


# ---- measuring ---------------------------------------------------------------------------------


def _median_seconds(work: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class Batch:
    """A recorded batch ready for the variants: theta, TRPO's system there, and the meta-loss on the batch
    and on its held-out batch (None: none) with their values at theta."""

    cfg: TrainConfig
    theta: Params
    system: System
    evaluate: Callable[[Params], tuple[Tensor, Tensor]]
    loss_before: float
    held_out: Callable[[Params], tuple[Tensor, Tensor]] | None
    held_out_before: float


def prepare(learner: Learner, params: Params, data: MetaData, held_out: MetaData | None,
            previous: Tensor | None) -> Batch:
    cfg = learner.cfg
    theta, g = meta_gradient(learner, params, data)
    c = cfg.meta.cg_damping
    exact = make_fvp("analytic", learner.spec, cfg.adapt, theta, data)
    cheap = adapted_fisher_fvp(learner.spec, theta, data, CHEAP_SUBSAMPLE)
    system = System(g, Counted(lambda v: exact(v) + c * v), Counted(lambda v: cheap(v) + c * v), c, {}, {},
                    previous)
    reference = make_fvp("adapted-fisher", learner.spec, cfg.adapt, theta, data, CHEAP_SUBSAMPLE)(g)
    system.seconds["cheap error"] = ((cheap(g) - reference).norm() / reference.norm()).item()
    system.seconds["exact"] = _median_seconds(lambda: system.A.product(g))
    system.seconds["cheap"] = _median_seconds(lambda: system.M.product(g))
    for f in (1.0, CHEAP_SUBSAMPLE):
        system.seconds[f"diagonal {f:g}"] = _median_seconds(
            lambda f=f: adapted_fisher_diagonal(learner.spec, theta, data, f))
        system.diagonal[f] = adapted_fisher_diagonal(learner.spec, theta, data, f)
    evaluate = evaluator(learner, data)
    held = None if held_out is None else evaluator(learner, held_out)
    with torch.no_grad():
        before = evaluate(theta)[0].item()
        held_before = float("nan") if held is None else held(theta)[0].item()
    return Batch(cfg, theta, system, evaluate, before, held, held_before)


@dataclass
class Row:
    name: str
    exact: int
    cheap: int
    cost: float  # in exact products
    gain: float
    direction: Tensor
    residual: float
    step_error: float  # |d.(g - r) - d'Ad| / d'Ad when the step length comes from the residual, else 0
    ls_steps: float
    realised: float
    kl: float
    held_out: float
    new_params: Params


def measure(batch: Batch, variant: Variant) -> Row:
    """Solve with `variant` (products counted), then judge d with the exact product and TRPO's line search."""
    s, meta = batch.system, batch.cfg.meta
    s.A.calls = s.M.calls = 0
    d, r = variant.solve(s)
    exact, cheap = s.A.calls + (r is None), s.M.calls
    ad = s.A.product(d)
    dfd = (d @ ad).item()
    used = dfd if r is None else (d @ (s.g - r)).item()
    cost = exact + cheap * s.seconds["cheap"] / s.seconds["exact"]
    if variant.diagonal is not None:
        cost += s.seconds[f"diagonal {variant.diagonal:g}"] / s.seconds["exact"]
    step = d * (meta.max_kl / max(0.5 * used, 1e-12)) ** 0.5
    new, info = line_search(batch.theta, batch.evaluate, step, batch.loss_before, meta)
    held = float("nan")
    if batch.held_out is not None:
        with torch.no_grad():
            held = batch.held_out_before - batch.held_out(new)[0].item()
    return Row(variant.name, exact, cheap, cost, loss_decrease_at_kl(s.g, d, dfd, meta.max_kl), d,
               ((s.g - ad).norm() / s.g.norm()).item(), abs(used - dfd) / dfd, info["ls_steps"],
               batch.loss_before - info["loss_after"], info["kl"], held, new)


def references(batch: Batch, iters: int) -> dict[str, Row]:
    """The longest solves: plain CG and Jacobi PCG with `iters` iterations (products not counted)."""
    solves = {"CG": lambda s: preconditioned_cg(s.A, s.g, iters),
              "PCG": lambda s: preconditioned_cg(s.A, s.g, iters, s.preconditioner(DIAGONAL_SUBSAMPLE))}
    return {name: measure(batch, Variant(f"{name} {iters}", solve, DIAGONAL_SUBSAMPLE if name == "PCG" else None))
            for name, solve in solves.items()}


ENGINE_SETTINGS = {"fisher-diagonal": 8, "adapted-fisher": 5}  # meta.cg_precondition -> the cg_iters checked


def engine_difference(learner: Learner, params: Params, data: MetaData, precondition: str, row: Row) -> float:
    """The largest |difference| between the parameters of the engine's TRPO step with meta.cg_precondition =
    `precondition`, cg_step_length = "residual" and ENGINE_SETTINGS' cg_iters (wired as safemaml.engine.learner
    does) and those `row`, the benchmark's copy of that setting, reached."""
    meta = dataclasses.replace(learner.cfg.meta, cg_precondition=precondition, cg_step_length="residual",
                               cg_iters=ENGINE_SETTINGS[precondition])
    adapt, spec = learner.cfg.adapt, learner.spec
    new, _ = trpo_step(params, evaluator(learner, data), meta,
                       lambda theta: make_fvp("analytic", spec, adapt, theta, data),
                       lambda theta: preconditioner(precondition, spec, theta, data, meta.fvp_subsample,
                                                    meta.cg_damping))
    return max((new[k] - row.new_params[k]).abs().max().item() for k in new)


# ---- reporting ---------------------------------------------------------------------------------


def _cos(a: Tensor, b: Tensor) -> float:
    return (a @ b / a.norm() / b.norm()).item()


def print_batch(title: str, batch: Batch, rows: list[Row], against: dict[str, Tensor]) -> None:
    s = batch.system
    print(f"\n### {title}: {s.g.numel():,} parameters, |g| = {s.g.norm():.4g}\n")
    print(f"Seconds: exact product {s.seconds['exact']:.3f}, adapted-fisher product on 1/4 of the trajectories "
          f"{s.seconds['cheap']:.4f} (relative difference from make_fvp's {s.seconds['cheap error']:.1e}), "
          f"adapted-Fisher diagonal {s.seconds['diagonal 1']:.3f} (on 1/4: {s.seconds['diagonal 0.25']:.3f}); "
          f"load average {os.getloadavg()[0]:.1f}.")
    errors = [r.step_error for r in rows if r.step_error > 0]
    if errors:
        print(f"Step length from CG's residual: |d.(g - r) - d'Ad| / d'Ad at most {max(errors):.1e}.")
    today = rows[0]
    print(f"\n| variant | exact | cheap | cost | gain | x today | {' | '.join(against)} | res | ls "
          "| realised decrease | KL | held-out decrease |")
    print("| --- |" + " ---: |" * (10 + len(against)))
    for r in rows:
        cosines = " | ".join(f"{_cos(r.direction, d):.3f}" for d in against.values())
        print(f"| {r.name} | {r.exact} | {r.cheap} | {r.cost:.2f} | {r.gain:.5f} | {r.gain / today.gain:.3f} | "
              f"{cosines} | {r.residual:.3f} | {r.ls_steps:.0f} | {r.realised:.5f} | {r.kl:.5f} | "
              f"{r.held_out:.5f} |", flush=True)


def print_summary(title: str, results: list[list[Row]]) -> None:
    """Per variant over the batches: against today's (each batch's first row)."""
    print(f"\n### Summary: {title}, {len(results)} batches, against each batch's first row (today's)\n")
    print("| variant | exact products (max) | cost (mean) | gain x today: min [mean] | realised decrease x today: "
          "min [mean] | held-out decrease minus today's: mean | gain >= today's on every batch with fewer exact "
          "products | and realised decrease >= today's too |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for i, name in enumerate(r.name for r in results[0]):
        rows, today = [b[i] for b in results], [b[0] for b in results]
        gains = [r.gain / t.gain for r, t in zip(rows, today, strict=True)]
        realised = [r.realised / t.realised if t.realised > 0 else float("nan")
                    for r, t in zip(rows, today, strict=True)]
        held = [r.held_out - t.held_out for r, t in zip(rows, today, strict=True)]
        fewer = all(r.exact < t.exact for r, t in zip(rows, today, strict=True))
        wins = fewer and all(g >= 1 for g in gains)
        also = wins and all(r >= 1 for r in realised)
        print(f"| {name} | {max(r.exact for r in rows)} | {statistics.mean(r.cost for r in rows):.2f} | "
              f"{min(gains):.3f} [{statistics.mean(gains):.3f}] | {min(realised):.3f} "
              f"[{statistics.mean(realised):.3f}] | {statistics.mean(held):+.5f} | {'yes' if wins else 'no'} | "
              f"{'yes' if also else 'no'} |")


def parse_batches(specs: list[str], cache: Path | None) -> list[tuple[str, int]]:
    """FAMILY:N,N,... -> [(family, N)], each checked: a known run and a checkpoint (or a cached recording)."""
    out = []
    for spec in specs:
        family, _, numbers = spec.partition(":")
        if family not in RUNS or not numbers:
            raise ValueError(f"--batches {spec!r}: want FAMILY:N[,N...] with FAMILY one of {', '.join(RUNS)}")
        for text in numbers.split(","):
            if not text.isdigit():
                raise ValueError(f"--batches {spec!r}: {text!r} is not an iteration number")
            n = int(text)
            cached = cache is not None and (cache / f"{family}-{n}.pt").is_file()
            checkpoint = RUNS[family] / "checkpoints" / f"iter_{n:05d}.pt"
            if n > 0 and not cached and not checkpoint.is_file():
                raise ValueError(f"--batches {spec!r}: no checkpoint {checkpoint}")
            out.append((family, n))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", nargs="+", default=["halfcheetah-vel:0,100,500", "nav2d:0,100"],
                        metavar="FAMILY:N,N")
    parser.add_argument("--cache", type=Path, help="keep the recorded batches here and reuse them")
    parser.add_argument("--reference-iters", type=int, default=50, metavar="N")
    args = parser.parse_args()
    try:
        if args.reference_iters < 1:
            raise ValueError("--reference-iters must be >= 1")
        batches = parse_batches(args.batches, args.cache)
    except ValueError as exc:
        parser.exit(2, f"cg_direction.py: {exc}\n")
    print(f"# CG directions (benchmarks/cg_direction.py), torch {torch.__version__}, {torch.get_num_threads()} "
          f"thread(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    cold, warmed = [], []
    for family, n in batches:
        rec = recorded(family, n, args.cache)
        learner = new_learner(rec.cfg)
        batch = prepare(learner, rec.params, rec.data, rec.held_out, None)
        refs = references(batch, args.reference_iters)  # "PCG": Jacobi as the engine's fisher-diagonal
        ref_cg, ref_pcg = refs["CG"], refs["PCG"]
        print(f"\n## {family}, iteration {n}\n\nLongest solves (cosine between them "
              f"{_cos(ref_cg.direction, ref_pcg.direction):.3f}):")
        for ref in (ref_cg, ref_pcg):
            print(f"- {ref.name}: residual {ref.residual:.3f}, gain {ref.gain:.5f}; line search: {ref.ls_steps:.0f} "
                  f"candidates, realised decrease {ref.realised:.5f}, held-out decrease {ref.held_out:.5f}")
        cold.append([measure(batch, v) for v in main_variants(rec.cfg.meta.cg_iters)])
        print_batch(f"{family}, batch of iteration {n}", batch, cold[-1],
                    {f"cos {ref_cg.name}": ref_cg.direction, f"cos Jacobi {ref_pcg.name}": ref_pcg.direction})
        for precondition, name in (("fisher-diagonal", ENGINE), ("adapted-fisher", TWO_LEVEL)):
            row = next(r for r in cold[-1] if r.name == name)
            print(f"\nThe engine's TRPO step with meta.cg_precondition = {precondition}, cg_step_length = residual, "
                  f"cg_iters = {ENGINE_SETTINGS[precondition]} against the row \"{name}\": parameters differ by at "
                  f"most {engine_difference(learner, rec.params, rec.data, precondition, row):.1e}.")
        del batch
        batch = prepare(learner, rec.next_params, rec.next_data, None, rec.direction)
        warmed.append([measure(batch, v) for v in warm_variants(rec.cfg.meta.cg_iters)])
        print_batch(f"{family}, batch of iteration {n + 1}, warm start from step {n}", batch, warmed[-1],
                    {"cos today": warmed[-1][0].direction, f"cos step {n}'s direction": rec.direction})
        del batch
    print_summary("cold starts (batches of iterations N)", cold)
    print_summary("warm starts (batches of iterations N + 1)", warmed)


if __name__ == "__main__":
    main()
