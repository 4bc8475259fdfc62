"""The `safemaml` command: a thin layer over the Python API (safemaml.api), one subcommand per job.

Bad input is one line on stderr and exit 2; a fault (full disk, read-only folder, a run that
diverged) is one line and exit 1; Ctrl-C is one line and exit 130. Never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

from safemaml.checks import check_output_file
from safemaml.cli import options
from safemaml.errors import SafeMamlError


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (no usage dump) that points to --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SafeMamlError(f"{message} (see `{self.prog} --help`)")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, when it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        has_default = action.default is not None and action.default is not False and action.default != argparse.SUPPRESS
        if has_default and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


# ---- train -------------------------------------------------------------------------------

# the training settings that train and compare take as flags (the rest through --set); each flag's type,
# default and help come from its field in safemaml.config
SHARED_TRAIN_KEYS = ("tasks", "iterations", "seed", "objective.beta", "objective.delta")
TRAIN_KEYS = (*SHARED_TRAIN_KEYS, "objective.name", "device", "meta_batch_size", "fast_batch_size",
              "post_batch_size", "adapt.fast_lr", "adapt.first_order", "meta.name", "meta.max_kl", "checkpoint_every",
              "init")
COMPARE_TRAIN_KEYS = (*SHARED_TRAIN_KEYS, "init")
EVALUATE_FIELDS = ("sample", "task_seed", "grid", "trajectories", "repeats", "seed", "beta", "delta", "device")


@cache
def train_options() -> list[options.Option]:
    return options.train_options(*TRAIN_KEYS)


@cache
def evaluate_options() -> list[options.Option]:
    return options.eval_options(*EVALUATE_FIELDS)


@cache
def compare_eval_options() -> list[options.Option]:
    """compare's evaluation flags; beta and delta are the objective's (--beta, --delta), the tasks p(T)'s."""
    return options.eval_options("trajectories", "repeats", "seed", flags={"seed": "eval-seed"})


def _overrides(args: argparse.Namespace) -> dict:
    """The dotted settings of the train flags given, the objective's flags, then --set."""
    settings = options.given(args, train_options())
    settings.update(args.objective_flags)
    settings.update(options.set_items(args.set))
    return settings


def _extra_flags(extra: list[str]) -> dict[str, object]:
    """`--name value` pairs left over by argparse: candidates for the objective's parameters."""
    from safemaml.config import parse_value

    settings, i = {}, 0
    while i < len(extra):
        flag = extra[i]
        if not flag.startswith("--") or len(flag) == 2:
            raise SafeMamlError(f"unexpected argument {flag!r} (see `safemaml train --help`)")
        name, sep, value = flag[2:].partition("=")
        if not sep:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise SafeMamlError(f"{flag} expects a value")
            value, i = extra[i + 1], i + 1
        settings[name] = parse_value(value)
        i += 1
    return settings


def _objective_flags(extra: dict[str, object], objective: str, parser: argparse.ArgumentParser) -> dict:
    """Check the leftover flags against the objective's parameters; unknown ones are named as flags."""
    if not extra:
        return {}
    from objectives import available

    registry = available()
    params = list(registry[objective].parameters()) if objective in registry else []
    out = {}
    for name, value in extra.items():
        key = name.replace("-", "_")
        if key in params:
            out[f"objective.{key}"] = value
            continue
        owners = [n for n, cls in registry.items() if key in cls.parameters()]
        if owners:
            raise SafeMamlError(f"--{name} is a parameter of objective {', '.join(owners)}, not of {objective!r} "
                                f"(choose it with --objective {owners[0]})")
        options = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
        options += [f"--{p.replace('_', '-')}" for p in params]
        close = difflib.get_close_matches(f"--{name}", options, n=1)
        hint = f"; did you mean {close[0]}?" if close else "; see `safemaml train --help`"
        raise SafeMamlError(f"unknown option --{name}{hint}")
    return out


def _train_config(args: argparse.Namespace, parser: argparse.ArgumentParser):
    from safemaml import api

    base_settings = {k: v for k, v in options.given(args, train_options()).items() if k != "tasks"}
    base_settings.update(options.set_items(args.set))
    objective = base_settings.get("objective.name") or api.resolve_config(args.config, tasks=args.tasks).objective_name
    args.objective_flags = _objective_flags(args.extra, str(objective), parser)
    return api.resolve_config(args.config, _overrides(args), tasks=args.tasks)


def cmd_train(args: argparse.Namespace) -> int:
    """Meta-train a policy into a run folder (config.toml, metrics.csv, last.pt, checkpoints/).

    With no flags, the paper's setting of the chosen family (a preset shipped with safemaml;
    `--print-config` shows it). Objective parameters are flags too: `--eta 2.0` for cvar
    (`safemaml objectives` lists every objective's parameters and defaults).
    """
    from safemaml import api
    from safemaml import config as config_io

    if args.resume:
        if args.print_config or args.config or args.out or args.extra or args.set or any(
                key not in ("iterations", "device") for key in options.given(args, train_options())):
            raise SafeMamlError("--resume accepts only --iterations, --device, --tensorboard and --quiet; "
                                "the rest comes from the run")
        api.resume(args.resume, args.iterations, args.device, quiet=args.quiet, tensorboard=args.tensorboard)
        out = Path(args.resume)
    else:
        cfg = _train_config(args, args.parser)
        if args.print_config:
            api.validate(cfg)
            print(config_io.dumps(cfg), end="")
            return 0
        if args.out is not None and not args.out.strip():
            raise SafeMamlError("--out must name a folder, got an empty string")
        out = Path(args.out) if args.out else api.default_out(cfg)
        api.train(cfg, out, quiet=args.quiet, tensorboard=args.tensorboard)
    if not args.quiet:
        print(f"run folder: {out}\nnext: safemaml evaluate {_q(out)}    # before/after returns on the task grid\n"
              f"      safemaml report {_q(out)}      # learning curve")
    return 0


# ---- the other commands --------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Before/after returns of a trained run on tasks drawn from p(T), or a grid (CSVs, summary, figure).

    Writes RUN/eval/returns.csv.gz, tasks.csv, summary.json and figure.png (docs/metrics.md explains
    every column); the folder is replaced only once everything is written. beta and delta default
    to the run's objective.
    """
    from safemaml import api
    from safemaml.measure import schema

    request = options.eval_request(args, evaluate_options())
    out = Path(args.out) if args.out else Path(args.run) / "eval"
    stamp = _summary_stamp(out)
    summary = api.evaluate(args.run, args.out, request, reuse=args.reuse)
    kept = stamp is not None and stamp == _summary_stamp(out)  # --reuse found this evaluation there
    print(f"{summary['tasks']} tasks ({summary['task_set']}) x {summary['repeats']} rounds x {request.trajectories} "
          f"trajectories, after {summary['iteration']} meta-iterations; beta = {summary['beta']:g}, "
          f"delta = {summary['delta']:g}")
    measured = [m for m in schema.EVALUATION if m not in schema.CERTIFICATE]
    for key in (*measured, *schema.CERTIFICATE):  # the certificate last: the test's power, the bound, the verdict
        value = summary[key]
        if isinstance(value, bool):
            print(f"  {key:20s} {'yes' if value else 'no'}")
        else:
            print(f"  {key:20s} {'n/a' if value is None else format(value, ' .4g')}")
    figure = "figure.png" if summary.get("figure") else "no figure.png (matplotlib is not installed)"
    if kept:
        print(f"kept: {out} already held this evaluation (the same last.pt bytes and request), not evaluated again")
    else:
        print(f"written: {out}/returns.csv.gz, tasks.csv, summary.json, {figure}")
    return 0


def _summary_stamp(out: Path) -> tuple[int, int] | None:
    """OUT/summary.json's file and time of writing (None if it is not there): tells a reused evaluation
    from a new one (a new one replaces the folder, so the file is another)."""
    try:
        stat = (out / "summary.json").stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def cmd_compare(args: argparse.Namespace) -> int:
    """Train and evaluate several objectives with the same config, seeds and evaluation tasks."""
    from objectives import make_objective
    from safemaml import api
    from safemaml.cli import compare as compare_cli
    from safemaml.runs.compare import Comparison, arm_configs, load_arms

    if args.action == "show":
        return compare_cli.cmd_show(args, args.parser)
    if args.protocol:
        from safemaml.cli import protocol

        compare_cli.only_flags(args, args.parser, {"protocol", "workers", "dry_run"},
                               "compare --protocol FILE takes --workers and --dry-run")
        from safemaml.studies import pool

        pool.shares(args.workers)
        return protocol.run(Path(args.protocol), args.workers, args.dry_run, parse, main)
    if not args.out:
        raise SafeMamlError("compare needs --out DIR (or `compare show DIR`)")
    if args.arms and args.objectives:
        raise SafeMamlError("give --objectives or --arms, not both")
    names = args.objectives or ["maml", "lagrangian", "cvar", "quantile"]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SafeMamlError(f"--objectives names {', '.join(duplicates)} more than once")
    args.objective_flags = {}
    cfg = api.resolve_config(args.config, _overrides(args), tasks=args.tasks)
    arms = load_arms(Path(args.arms)) if args.arms else {n: {"objective.name": n} for n in names}
    if not args.arms:
        for name in names:
            make_objective(name, **{k: v for k, v in cfg.objective_params.items() if k in ("beta", "delta")})
        if cfg.objective_params.keys() - {"beta", "delta"}:
            raise SafeMamlError("compare shares only beta and delta between objectives; set others with --arms")
    api.validate(cfg)
    for arm in arm_configs(cfg, arms).values():
        api.validate(arm)
    if args.seeds is not None and args.seed is not None:
        raise SafeMamlError("give --seed or --seeds, not both")
    if args.band is not None:
        from safemaml.runs.evaluate import parse_grid
        from safemaml.tasks import get_family

        parse_grid(args.band, get_family(cfg.tasks), flag="--band")  # a bad band is refused before any training
    comparison = Comparison.make(cfg, arms, options.eval_request(args, compare_eval_options()), args.seeds, args.band)
    return compare_cli.run(comparison, args)  # the cells as units of work shared through a storage


FIGURE_FORMATS = (".png", ".pdf", ".svg")


def cmd_report(args: argparse.Namespace) -> int:
    """Draw a run's learning curve (pre- and post-update return per meta-iteration)."""
    import os

    from safemaml.measure.figures import learning_curve
    from safemaml.runs import rundir

    run = rundir.RunDir(args.run)
    if run.path.exists() and not run.path.is_dir():
        raise SafeMamlError(f"{run} is a file, not a run folder")
    rows = run.read_metrics()  # a one-line error for a missing, empty, damaged or foreign metrics.csv
    missing = [k for k in ("pre_return", "post_return") if k not in rows[0]]
    if missing:
        raise SafeMamlError(f"{run.metrics_path} is not a safemaml metrics.csv (no {', '.join(missing)} column)")
    out = Path(args.out) if args.out else run.path / "learning_curve.png"
    check_output_file(out, FIGURE_FORMATS, "figure", "learning_curve.png")
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    try:
        with rundir.os_errors(out):
            learning_curve(rows, tmp, title=args.title or run.path.resolve().name)
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
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
    """Sample K tasks x n trajectories with a fresh policy and report control steps per second."""
    import numpy as np

    from safemaml.engine.learner import torch_device
    from safemaml.engine.policy import PolicySpec
    from safemaml.engine.rollout import Sampler
    from safemaml.tasks import get_family

    family = get_family(args.tasks)
    device = torch_device(args.device)
    from safemaml.checks import seed_arg

    seed_arg(args.seed, "--seed")
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


# ---- the parser ------------------------------------------------------------------------------


def _command(sub, name: str, func: Callable, **kwargs) -> argparse.ArgumentParser:
    doc = inspect.cleandoc(func.__doc__ or "")
    p = sub.add_parser(name, help=doc.splitlines()[0], description=doc, **kwargs)
    p.set_defaults(func=func, parser=p)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="safemaml", description="Measure and reduce negative adaptation in MAML for RL.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, required=True, metavar="COMMAND")

    p = _command(sub, "train", cmd_train)
    options.add_config_options(p)
    options.add_options(p, train_options(), unset=True)
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/FAMILY-OBJECTIVE-seedS)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint "
                                                   "(with --iterations: to that many in all)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as TOML and exit without training")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log the metrics.csv columns to RUN/tensorboard (needs safemaml[tensorboard])")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.epilog = ("objective parameters: pass --NAME VALUE for any parameter of the chosen objective, e.g.\n"
                "  safemaml train --objective cvar --eta 2.0\n`safemaml objectives` lists them with defaults.")

    p = _command(sub, "evaluate", cmd_evaluate)
    p.add_argument("run", metavar="RUN", help="run folder")
    options.add_options(p, evaluate_options())
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN/eval)")
    p.add_argument("--reuse", action="store_true",
                   help="keep --out as it is when it already holds this evaluation (the same last.pt bytes and "
                        "request); evaluate otherwise (for scripts that are rerun after a stop)")

    p = _command(sub, "compare", cmd_compare)
    p.add_argument("--objectives", nargs="+", metavar="NAME",
                   help="objectives to train, each once; the first is the reference of the Wilcoxon tests "
                        "(default: maml lagrangian cvar quantile)")
    p.add_argument("--arms", metavar="FILE",
                   help="instead of --objectives: a TOML file of arms, [arms.NAME] tables of the settings each "
                        "changes (tuned parameters, controls); the first is the reference")
    options.add_config_options(p)
    options.add_options(p, options.train_options(*COMPARE_TRAIN_KEYS), unset=True)
    p.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="train every objective on each seed: per-seed rows and a test paired over seeds")
    options.add_options(p, compare_eval_options())
    p.add_argument("--band", metavar="START:STOP:STEP",
                   help="also evaluate every run on this grid (e.g. where the paper saw negative adaptation): "
                        "RUN/eval-band and a second set of tables")
    p.add_argument("--out", metavar="DIR", help="folder for OBJECTIVE/ runs and comparison.md (required)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--protocol", metavar="FILE",
                   help="run a whole comparison protocol from a TOML file: the MAML base, the tuning studies, the "
                        "arms by a named rule, the comparison (safemaml.cli.protocol; with --workers, --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="with --protocol: print its commands, run nothing")
    from safemaml.cli import compare as compare_cli

    compare_cli.add_options(p)

    p = _command(sub, "report", cmd_report)
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("--out", metavar="FILE", help="figure file, .png/.pdf/.svg (default: RUN/learning_curve.png)")
    p.add_argument("--title", help="figure title (default: the run folder's name)")

    _command(sub, "objectives", cmd_objectives)
    _command(sub, "tasks", cmd_tasks)
    p = _command(sub, "sample", cmd_sample)
    p.add_argument("--tasks", default="halfcheetah-vel", metavar="FAMILY", help="task family (see `safemaml tasks`)")
    p.add_argument("--num-tasks", type=int, default=40, metavar="K", help="tasks")
    p.add_argument("--trajectories", type=int, default=20, metavar="N", help="trajectories per task")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")

    from safemaml.cli.render import add_parser as add_render_parser
    from safemaml.cli.study import add_parser as add_study_parser

    add_render_parser(sub)
    add_study_parser(sub)
    return parser


NUMBER_LIKE = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


PLAIN_NEGATIVE = re.compile(r"^-\d+$|^-\d*\.\d+$")  # what argparse itself reads as a value, also in a list


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--grid -0.5:0.5:0.25` -> `--grid=-0.5:0.5:0.25`: argparse would take the value for an option. Plain
    numbers (`--seeds -1 0`) are left to argparse, which reads them as values: joined, the list would lose them."""
    out: list[str] = []
    for token in argv:
        if (out and out[-1].startswith("--") and "=" not in out[-1] and NUMBER_LIKE.match(token)
                and not PLAIN_NEGATIVE.match(token)):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _did_you_mean(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> SafeMamlError:
    flag = extra[0]
    options = [s for a in args.parser._actions for s in a.option_strings] if hasattr(args, "parser") else []
    close = difflib.get_close_matches(flag.split("=")[0], options, n=1)
    hint = f"; did you mean {close[0]}?" if close else f" (see `safemaml {args.command} --help`)"
    kind = "option" if flag.startswith("-") else "argument"
    return SafeMamlError(f"unknown {kind} {flag}{hint}")


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line `argv` (without the program name) parsed and checked; SafeMamlError if it is not valid."""
    parser = build_parser()
    args, extra = parser.parse_known_args(_join_negative_values(argv))
    if extra and args.command != "train":
        raise _did_you_mean(parser, args, extra)
    args.extra = _extra_flags(extra) if args.command == "train" else {}
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """The `safemaml` command. SIGTERM (a scheduler's stop, `kill`) stops it as Ctrl-C does: a run keeps its
    last finished iteration and says how to resume, a study queues its trial again."""
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    from safemaml.runs.rundir import os_error_message

    try:
        args = parse(list(sys.argv[1:] if argv is None else argv))
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except SafeMamlError as exc:
        print(f"safemaml: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a fault outside the run-folder writers (which already say it in one line)
        print(f"safemaml: error: {os_error_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"safemaml: {exc.args[0] if exc.args else 'interrupted'}", file=sys.stderr)
        return 130
    except MemoryError:  # a request larger than this machine (e.g. millions of trajectories per round)
        print("safemaml: error: not enough memory for this request; ask for fewer tasks, rounds or trajectories",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
