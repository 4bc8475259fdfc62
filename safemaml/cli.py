"""The `safemaml` command: one subcommand per job; bad input is one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
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


REPO_EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"

# flag -> dotted config key; None values are not overrides
TRAIN_FLAGS = {"tasks": "tasks", "iterations": "iterations", "seed": "seed", "device": "device",
               "meta_batch_size": "meta_batch_size", "fast_batch_size": "fast_batch_size",
               "post_batch_size": "post_batch_size", "fast_lr": "adapt.fast_lr", "first_order": "adapt.first_order",
               "meta_optimizer": "meta.name", "max_kl": "meta.max_kl", "objective": "objective.name",
               "beta": "objective.beta", "delta": "objective.delta", "checkpoint_every": "checkpoint_every", "init": "init"}


def _parse_value(text: str):
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _overrides(args: argparse.Namespace) -> dict:
    settings = {key: getattr(args, flag) for flag, key in TRAIN_FLAGS.items() if getattr(args, flag) is not None}
    settings.update(args.objective_flags)
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SafeMamlError(f"--set expects KEY=VALUE, got {item!r}")
        settings[key.strip()] = _parse_value(value.strip())
    return settings


def _base_config(args: argparse.Namespace):
    from safemaml import config as config_io

    if args.config:
        return config_io.load(args.config)
    candidate = REPO_EXPERIMENTS / f"{args.tasks or 'halfcheetah-vel'}.toml"
    if candidate.is_file():
        return config_io.load(candidate)
    from safemaml.tasks import get_family

    get_family(args.tasks)  # a clear error for unknown families
    return config_io.TrainConfig(tasks=args.tasks)


def cmd_train(args: argparse.Namespace) -> int:
    """Meta-train a policy; writes config, metrics.csv and checkpoints into the run directory."""
    from objectives import make_objective
    from safemaml import config as config_io
    from safemaml.tasks import get_family
    from safemaml.trainer import train

    if args.resume:
        out = Path(args.resume)
        cfg = config_io.load(out / "config.toml") if (out / "config.toml").is_file() else None
        if cfg is None:
            raise SafeMamlError(f"{out} is not a run directory (no config.toml)")
        allowed = {k: v for k, v in _overrides(args).items() if k in ("iterations", "device")}
        if len(allowed) != len(_overrides(args)):
            raise SafeMamlError("--resume accepts only --iterations and --device; the rest comes from the run")
        cfg = config_io.override(cfg, allowed)
    else:
        cfg = config_io.override(_base_config(args), _overrides(args))
        out = Path(args.out or f"runs/{cfg.tasks}-{cfg.objective_name}-seed{cfg.seed}")
    get_family(cfg.tasks)
    _device(cfg.device)
    make_objective(cfg.objective_name, **cfg.objective_params)  # validate before touching the run directory
    train(cfg, out, resume=bool(args.resume), quiet=args.quiet)
    print(f"run directory: {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Train and evaluate several objectives with the same config, seeds and evaluation tasks."""
    from objectives import make_objective
    from safemaml import config as config_io
    from safemaml.compare import compare

    cfg = config_io.override(_base_config(args), _overrides(args))
    for name in args.objectives:
        make_objective(name, **{k: v for k, v in cfg.objective_params.items() if k in ("beta", "delta")})
    if cfg.objective_params.keys() - {"beta", "delta"}:
        raise SafeMamlError("compare shares only beta and delta between objectives; set others per run with train")
    if args.seeds is not None and args.seed is not None:
        raise SafeMamlError("give --seed or --seeds, not both")
    rows = compare(cfg, args.objectives, Path(args.out), args.trajectories, args.repeats, args.eval_seed, args.quiet,
                   seeds=args.seeds)
    print((Path(args.out) / "comparison.md").read_text(), end="")
    return 0 if rows else 1


def cmd_report(args: argparse.Namespace) -> int:
    """Draw a run's learning curve (pre- and post-update return per meta-iteration) as PNG."""
    from safemaml.report import learning_curve

    run = Path(args.run)
    if not (run / "metrics.csv").is_file():
        raise SafeMamlError(f"{run} is not a run directory (no metrics.csv)")
    out = Path(args.out) if args.out else run / "learning_curve.png"
    learning_curve(run / "metrics.csv", out, title=args.title or run.name)
    print(f"written: {out}")
    return 0


def cmd_objectives(args: argparse.Namespace) -> int:
    """List every registered objective with its parameters, defaults and a one-line description."""
    from objectives import available

    for name, cls in available().items():
        print(f"{name}: {cls.description}")
        params = ", ".join(f"{k}={v!r}" for k, v in cls.parameters().items())
        print(f"    {params}")
    return 0


def _objective_flags(extra: list[str]) -> dict:
    """`--name value` pairs left over by argparse: parameters of the chosen objective."""
    settings, i = {}, 0
    while i < len(extra):
        flag = extra[i]
        if not flag.startswith("--"):
            raise SafeMamlError(f"unexpected argument {flag!r}")
        name, sep, value = flag[2:].partition("=")
        if not sep:
            if i + 1 >= len(extra):
                raise SafeMamlError(f"{flag} expects a value")
            value, i = extra[i + 1], i + 1
        settings[f"objective.{name.replace('-', '_')}"] = _parse_value(value)
        i += 1
    return settings


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Before/after returns of a trained run on a task grid: CSVs, metrics summary and figure."""
    from safemaml.evaluate import evaluate_run

    _device(args.device)
    summary = evaluate_run(Path(args.run), Path(args.out) if args.out else None, args.grid, args.trajectories,
                           args.repeats, args.seed, args.beta, args.delta, args.device)
    out = Path(args.out) if args.out else Path(args.run) / "eval"
    print(f"{summary['tasks']} tasks x {args.repeats} x {args.trajectories} trajectories, "
          f"after {summary['iteration']} meta-iterations")
    for key in ("pre_return", "post_return", "mean_gamma", "cvar_gamma", "frac_negative", "violation_rate",
                "certified_fraction", "certified"):
        print(f"  {key:20s} {summary[key]: .4g}")
    print(f"written: {out}/returns.csv, tasks.csv, summary.json, figure.png")
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

    p = sub.add_parser("train", help=cmd_train.__doc__)
    p.add_argument("--config", help="TOML config (default: experiments/FAMILY.toml, the paper's setting)")
    p.add_argument("--tasks", help="task family (default halfcheetah-vel)")
    p.add_argument("--objective", help="meta-objective (see `safemaml objectives`)")
    p.add_argument("--beta", type=float, help="per-task tolerance of Eq. 6")
    p.add_argument("--delta", type=float, help="fraction of tasks allowed to violate")
    p.add_argument("--iterations", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--meta-batch-size", type=int)
    p.add_argument("--fast-batch-size", type=int)
    p.add_argument("--post-batch-size", type=int)
    p.add_argument("--fast-lr", type=float)
    p.add_argument("--first-order", action="store_const", const=True)
    p.add_argument("--meta-optimizer", choices=["trpo", "adam"])
    p.add_argument("--max-kl", type=float)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--init", metavar="RUN", help="start from the policy of RUN (a run directory or checkpoint)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config value, e.g. adapt.num_steps=2")
    p.add_argument("--out", help="run directory (default runs/FAMILY-OBJECTIVE-seedS)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help=cmd_evaluate.__doc__)
    p.add_argument("run", help="run directory")
    p.add_argument("--grid", help="START:STOP:STEP of task parameters (default: the family's grid)")
    p.add_argument("--trajectories", type=int, default=20)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--delta", type=float, default=0.1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="output folder (default RUN/eval)")
    p.set_defaults(func=cmd_evaluate)

    sub.add_parser("objectives", help=cmd_objectives.__doc__).set_defaults(func=cmd_objectives)

    p = sub.add_parser("report", help=cmd_report.__doc__)
    p.add_argument("run")
    p.add_argument("--out")
    p.add_argument("--title")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help=cmd_compare.__doc__)
    p.add_argument("--objectives", nargs="+", default=["maml", "lagrangian", "cvar", "quantile"])
    p.add_argument("--config")
    p.add_argument("--tasks")
    p.add_argument("--iterations", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="train every objective on each seed: per-seed rows and a test paired over seeds")
    p.add_argument("--beta", type=float)
    p.add_argument("--delta", type=float)
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--init", metavar="RUN", help="start every objective from the policy of RUN")
    p.add_argument("--trajectories", type=int, default=20)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--eval-seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_compare, **{k: None for k in TRAIN_FLAGS if k not in
                                        ("tasks", "iterations", "seed", "beta", "delta", "init")})

    from safemaml.study_cli import add_parser as add_study_parser

    add_study_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra and args.command != "train":
            raise SafeMamlError(f"unrecognized arguments: {' '.join(extra)}")
        args.objective_flags = _objective_flags(extra) if extra else {}
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
