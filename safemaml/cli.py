"""The `safemaml` command: one subcommand per job; bad input is one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Sequence

import numpy as np

from safemaml.errors import SafeMamlError


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (no usage dump) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SafeMamlError(f"{self.prog}: {message}")


def _device(name: str):
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise SafeMamlError(f"unknown device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SafeMamlError(f"device {name!r} requested but CUDA is not available here")
    return device


def cmd_tasks(args: argparse.Namespace) -> int:
    """List every task family: distribution, horizon, observation and action sizes."""
    from safemaml.tasks import all_families

    rows = [f.summary() for f in all_families()]
    cols = ["family", "tasks", "horizon", "obs", "act", "description"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols).rstrip())
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip())
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample K tasks x n trajectories with a fresh policy and report what was measured."""
    from safemaml.policy import PolicySpec
    from safemaml.rollout import Sampler
    from safemaml.tasks import get_family

    family = get_family(args.tasks)
    device = _device(args.device)
    spec = PolicySpec(family.obs_dim, family.act_dim)
    sampler = Sampler(family, spec, args.num_tasks, args.trajectories, device=device)
    params = spec.init(args.seed, device)
    tasks = family.sample(args.num_tasks, np.random.default_rng(args.seed))
    sampler.sample(params, tasks, seed=args.seed)  # warm-up
    start = time.perf_counter()
    traj = sampler.sample(params, tasks, seed=args.seed + 1)
    seconds = time.perf_counter() - start
    returns = traj.returns
    print(f"{family.name}: {args.num_tasks} tasks x {args.trajectories} trajectories x "
          f"{family.horizon} steps on {device}")
    print(f"  {traj.num_steps} control steps in {seconds:.2f} s = {traj.num_steps / seconds:,.0f} steps/s")
    print(f"  return of a random-init policy: mean {returns.mean():.2f}, "
          f"min {returns.min():.2f}, max {returns.max():.2f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="safemaml", description="Measure and reduce negative adaptation in MAML.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, required=True)
    sub.add_parser("tasks", help=cmd_tasks.__doc__).set_defaults(func=cmd_tasks)
    p = sub.add_parser("sample", help=cmd_sample.__doc__)
    p.add_argument("--tasks", default="halfcheetah-vel", help="task family (see `safemaml tasks`)")
    p.add_argument("--num-tasks", type=int, default=40)
    p.add_argument("--trajectories", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_sample)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except SafeMamlError as exc:
        print(f"safemaml: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("safemaml: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
