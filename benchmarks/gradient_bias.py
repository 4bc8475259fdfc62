"""Bias of the penalty-gradient estimators at finite samples, on the exactly computable bandit.

Reuses the set-up of tests/test_gradients.py (four bandit tasks, fixed post-update policies, pathwise
population references from common random numbers), with a fixed return scale s: the mean of each
objective's gradient estimate over many independent meta-batches of n = m trajectories per task,
against the population gradient. Prints, per objective and n, the largest elementwise error and the
projection ratio <mean estimate, reference> / |reference|^2 (1 = no bias), the error and the standard
error relative to the largest reference component.

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


def population(size: int = bandit.POPULATION, seed: int = 1):
    """phi -> Gamma [K, size] from common random numbers (the test module's population fixture)."""
    gen = torch.Generator().manual_seed(seed)
    K = bandit.PHI0.shape[0]
    pre = bandit._returns(bandit.PRE_MU.expand(K, 2), bandit.PRE_LOGSTD.expand(K, 2),
                          torch.randn(K, size, bandit.H, 2, generator=gen, dtype=torch.float64), bandit.GOALS)
    post_eps = torch.randn(K, size, bandit.H, 2, generator=gen, dtype=torch.float64)
    return lambda phi: pre - bandit._returns(phi[:, :2], phi[:, 2:], post_eps, bandit.GOALS)


def setups(scale: float, gamma_of):
    """(name, objective, population penalty) with the penalties of tests/test_gradients.py, s fixed."""
    cvar = make_objective("cvar", beta=0.2, delta=0.5, eta=1.0, return_scale=scale)
    quantile = make_objective("quantile", beta=0.2, delta=0.5, eta=1.0, temperature=0.1, return_scale=scale)
    q0 = upper_quantile(gamma_of(bandit.PHI0), 0.8)
    omega = quantile.task_weights(q0, torch.tensor(scale, dtype=torch.float64))
    return [("cvar", cvar, lambda g: cvar_weights(cvar_weights(g, 0.2)[0], 0.5)[0].clamp_min(0) / scale),
            ("quantile", quantile, bandit._quantile_penalty(omega, q0, scale))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 80])
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--scale", type=float, default=2.0, help="return scale s (fixed)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gamma_of = population()
    print(f"s = {args.scale}, {args.repeats} meta-batches per size")
    print("objective  n=m  max error/max|ref|  projection ratio  stderr/max|ref|")
    for name, objective, penalty in setups(args.scale, gamma_of):
        reference = bandit._pathwise(gamma_of, penalty)
        worst = reference.abs().max()
        for n in args.sizes:
            mean, stderr = bandit._estimate(objective, bandit._make_draws(args.repeats, n, n, seed=n))
            error = float((mean - reference).abs().max() / worst)
            ratio = float((mean * reference).sum() / (reference * reference).sum())
            print(f"{name:9s} {n:4d}  {error:18.3f}  {ratio:16.3f}  {float(stderr.max() / worst):15.3f}", flush=True)


if __name__ == "__main__":
    main()
