"""Bias of the penalty-gradient estimators at finite samples, on the exactly computable bandit.

Reuses the set-up of tests/test_gradients.py (four bandit tasks, fixed post-update policies): the mean
of each objective's gradient estimate over many independent meta-batches of n = m trajectories per task,
against the finite-difference gradient of the population penalty. Prints, per objective and n, the
largest elementwise error and the projection ratio <mean estimate, reference> / |reference|^2 (1 = no bias),
both relative to the largest reference component, with the Monte Carlo standard error.

    python benchmarks/gradient_bias.py --sizes 20 80 --repeats 400
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_gradients as bandit  # noqa: E402

from objectives import make_objective  # noqa: E402
from objectives.cvar import cvar_weights  # noqa: E402
from objectives.quantile import upper_quantile  # noqa: E402


def setups(scale: float):
    """(name, objective, population penalty) with the penalties of tests/test_gradients.py."""
    cvar = make_objective("cvar", beta=0.2, delta=0.5, eta=1.0, return_scale=scale)
    quantile = make_objective("quantile", beta=0.2, delta=0.5, eta=1.0, temperature=0.1, return_scale=scale)
    q0 = upper_quantile(bandit._population_gamma(bandit.PHI0), 0.8)
    omega = quantile.task_weights(q0, torch.tensor(scale, dtype=torch.float64))
    return [("cvar", cvar, lambda g: cvar_weights(cvar_weights(g, 0.2)[0], 0.5)[0].clamp_min(0) / scale),
            ("quantile", quantile, lambda g: (omega * upper_quantile(g, 0.8).clamp_min(0)).sum() / scale)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 80])
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--scale", type=float, default=bandit.SCALE, help="return scale s (fixed)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"s = {args.scale}, {args.repeats} meta-batches per size")
    print("objective  n=m  max error/max|ref|  projection ratio  stderr/max|ref|")
    for name, objective, penalty in setups(args.scale):
        reference = bandit._finite_difference(penalty)
        worst = reference.abs().max()
        for n in args.sizes:
            mean, stderr = bandit._estimate(objective, repeats=args.repeats, n=n, m=n)
            error = float((mean - reference).abs().max() / worst)
            ratio = float((mean * reference).sum() / (reference * reference).sum())
            print(f"{name:9s} {n:4d}  {error:18.3f}  {ratio:16.3f}  {float(stderr.max() / worst):15.3f}", flush=True)


if __name__ == "__main__":
    main()
