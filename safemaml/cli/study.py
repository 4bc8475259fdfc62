"""`safemaml study run DIR` and `safemaml study show DIR`: the command-line face of safemaml.studies.study.

`add_parser(sub)` registers the `study` subcommand on the main parser (called from cli.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from functools import cache
from pathlib import Path

from safemaml.cli import options
from safemaml.errors import SafeMamlError
from safemaml.studies.settings import DEFAULT_SEEDS, STUDY_EVALUATION, StudySettings

TRAIN_KEYS = ("tasks", "iterations", "seed", "init")  # overrides of the base config, as for train


@cache
def _train_options() -> list[options.Option]:
    return options.train_options(*TRAIN_KEYS)


@cache
def _eval_options() -> list[options.Option]:
    """The evaluation of every run; beta and delta are the target every trial is measured at (not its objective's)."""
    return options.eval_options("sample", "task_seed", "grid", "trajectories", "repeats", "seed", "beta", "delta",
                                flags={"seed": "eval-seed", "beta": "eval-beta", "delta": "eval-delta"},
                                defaults=STUDY_EVALUATION)


@cache
def _study_options() -> list[options.Option]:
    return [options.field_option(StudySettings, name) for name in ("metric", "prune_every")]


def setting_flags() -> tuple[str, ...]:
    """The settings flags (their dests): given on a continued study, they must agree with the stored settings."""
    own = [o.dest for o in (*_train_options(), *_eval_options(), *_study_options())]
    return ("config", "set", "objective", "seeds", "search", "fix", *own)


def _storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="study folder: study.db (unless --storage), runs/, trials.csv, figures")
    p.add_argument("--storage", help="any Optuna storage: postgresql://USER:PASSWORD@HOST/DB (workers on several "
                                     "machines), a JournalStorage file path; default sqlite:///DIR/study.db")
    p.add_argument("--study-name", help="default: the name of DIR")


def add_parser(sub) -> None:
    """Register `study run` and `study show` on the subparsers `sub` of the main parser."""
    about = "Optuna studies over an objective's parameters, the seed as unit."
    study = sub.add_parser("study", help=about, description=about)
    actions = study.add_subparsers(dest="study_command", parser_class=type(study), required=True, metavar="ACTION",
                                   help="run: create or continue the study; show: its results; pick: a comparison's "
                                        "arms from studies")

    about = "Create the study or continue it until --trials trials are finished."
    p = actions.add_parser("run", help=about, description=about)
    _storage_args(p)
    p.add_argument("--trials", type=int, required=True, help="finished (complete or pruned) trials to reach")
    options.add_options(p, options.train_options("objective.name"), unset=True)  # the objective searched
    p.add_argument("--seeds", type=int, help=f"training seeds per trial: the config's seed, +1, ... (default: "
                                             f"{DEFAULT_SEEDS})")
    p.add_argument("--search", action="append", metavar="NAME=RANGE",
                   help="narrow or widen the search: eta=0.1:10:log, margin=0:0.5, k=1:5:int, update=dual,pid")
    p.add_argument("--fix", action="append", metavar="NAME=VALUE", help="fix a parameter, e.g. beta=0.1")
    p.add_argument("--enqueue", action="append", metavar="NAME=VALUE[,...]",
                   help="queue a trial at this point of the search space before the sampler's (repeatable)")
    options.add_options(p, _study_options(), unset=True)
    options.add_config_options(p)
    options.add_options(p, _train_options(), unset=True)
    options.add_options(p, options.train_options("device"))  # this worker's device, not a setting of the study
    options.add_options(p, _eval_options(), unset=True)
    p.add_argument("--heartbeat", type=int, default=10, help="seconds between a worker's heartbeats")
    p.add_argument("--grace", type=int, default=30, help="seconds without heartbeat before a trial is "
                                                          "failed and retried (<= 60)")
    p.add_argument("--sampler-seed", type=int, help="seed of the TPE sampler (one worker: reproducible trials)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="local worker processes, each on its share of the cores (N x threads <= cores); default 1")
    p.add_argument("--quiet", action="store_true", help="no training progress lines")
    p.set_defaults(func=cmd_study_run, parser=p)

    about = "Trials table, Pareto front, importances; trials.csv and PNG figures."
    p = actions.add_parser("show", help=about, description=about)
    _storage_args(p)
    p.add_argument("--out", help="folder for trials.csv and figures (default DIR)")
    p.set_defaults(func=cmd_study_show, parser=p)

    about = ("Write a comparison's arms file (--arms of compare) from its tuning studies by a named rule "
             "(safemaml.studies.pick): the first arm is maml, then the control's and each study's pick.")
    p = actions.add_parser("pick", help=about, description=about)
    p.add_argument("--studies", nargs="+", required=True, metavar="DIR", help="one constrained objective's study each")
    p.add_argument("--control", metavar="DIR", help="the study of MAML's inner step (the maml-alpha arm)")
    p.add_argument("--rule", default="median-floor", help="the pre-registered rule (safemaml.studies.pick.RULES)")
    p.add_argument("--out", required=True, metavar="FILE", help="the arms file to write (must not exist)")
    p.set_defaults(func=cmd_study_pick, parser=p)


def _settings_from_args(args: argparse.Namespace) -> StudySettings:
    """The study's settings from the flags, through train's own config resolution (api.resolve_config with
    the flags' overrides). The device is left out: it belongs to each worker, not to the study."""
    from safemaml import api
    from safemaml.studies.study import make_settings

    settings = {k: v for k, v in options.overrides(args, _train_options()).items() if k != "tasks"}
    base = api.resolve_config(args.config, settings, tasks=args.tasks)  # tasks: the family's preset first
    objective = args.objective or base.objective_name
    evaluation = dataclasses.replace(STUDY_EVALUATION, **options.given(args, _eval_options()))
    return make_settings(base, objective, args.search or [], args.fix or [],
                         DEFAULT_SEEDS if args.seeds is None else args.seeds, evaluation,
                         **options.given(args, _study_options()))


def _open(args: argparse.Namespace, heartbeat: int = 10, grace: int = 30):
    from safemaml.studies.study import open_storage, storage_url

    directory = Path(args.dir)
    if args.storage is None and args.study_command == "show" and not (directory / "study.db").is_file():
        raise SafeMamlError(f"{directory} holds no study.db; give --storage URL for a study kept elsewhere")
    from safemaml.studies import checks as study_checks

    show = args.study_command == "show"
    study_checks.storage_reachable(args.storage, show, None if show else directory)  # before any file is made
    if args.study_command == "run":  # `show` makes DIR only for its output, once the study is found
        directory.mkdir(parents=True, exist_ok=True)
    return directory, open_storage(storage_url(directory, args.storage), heartbeat, grace)


def cmd_study_run(args: argparse.Namespace) -> int:
    """Create or continue the study in DIR; every check happens before the first training."""
    from optuna.pruners import MedianPruner

    from safemaml.studies import checks as study_checks
    from safemaml.studies import pool
    from safemaml.studies.study import (
        configure_logging,
        continue_hint,
        enqueue_point_list,
        enqueue_points,
        finished,
        load_or_create,
        pool_worker,
        run_study,
        running_elsewhere,
        storage_url,
    )

    if args.trials < 1:
        raise SafeMamlError(f"--trials must be >= 1, got {args.trials}")
    pool.shares(args.workers)  # --workers within the cores, before anything is written
    given = any(getattr(args, f) is not None for f in setting_flags())
    study_checks.worker_options(args.prune_every, args.sampler_seed)
    settings = _settings_from_args(args) if given else None  # None: continue with the stored settings
    from safemaml.engine.learner import torch_device

    torch_device(args.device)
    study_checks.storage_before_open(Path(args.dir), args.storage, given, args.heartbeat, args.grace)
    if settings is not None:
        enqueue_point_list(settings, args.enqueue or [])  # refused before the study is created
    configure_logging(args.quiet)
    directory, storage = _open(args, args.heartbeat, args.grace)
    name = args.study_name or directory.resolve().name
    # the pruner acts only where trials report intermediate values: single-metric studies with --prune-every
    study, settings = load_or_create(storage, name, settings, MedianPruner(n_startup_trials=3),
                                     args.sampler_seed)
    queued = enqueue_points(study, settings, args.enqueue or [])
    if queued:
        print(f"study {name}: {queued} trial(s) queued by --enqueue", file=sys.stderr)
    hint = continue_hint(directory, args.storage, name, args.trials)
    before = finished(study)
    code = 0
    if args.workers == 1:
        ran = run_study(study, settings, directory, args.trials, args.device, args.quiet, hint)
        where = f"{ran} run here"
    else:
        try:
            code = pool.run(args.workers, pool_worker, {
                "url": storage_url(directory, args.storage), "name": name, "directory": str(directory),
                "trials": args.trials, "device": args.device, "quiet": args.quiet, "hint": hint,
                "heartbeat": args.heartbeat, "grace": args.grace, "sampler_seed": args.sampler_seed},
                index_as="worker")
        except KeyboardInterrupt:  # each worker has queued its trial again
            raise KeyboardInterrupt(f"interrupted; finished trials are saved. Continue with: {hint}") from None
        where = f"{finished(study) - before} run by {args.workers} workers"
    running = running_elsewhere(study)
    elsewhere = f", {running} running in another worker" if running else ""
    print(f"study {name}: {finished(study)} finished trials ({where}, {before} before){elsewhere}; "
          f"see `safemaml study show {directory}" + (" --storage ..." if args.storage else "") + "`")
    return code


def cmd_study_show(args: argparse.Namespace) -> int:
    """Print the trials table, Pareto front or best trial and importances; write trials.csv and figures."""
    import optuna

    from safemaml.studies.report import show
    from safemaml.studies.study import load_or_create

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directory, storage = _open(args)
    name = args.study_name or directory.resolve().name
    study, settings = load_or_create(storage, name, None)
    (Path(args.out) if args.out else directory).mkdir(parents=True, exist_ok=True)
    print(show(study, settings, Path(args.out) if args.out else directory), end="")
    return 0



def cmd_study_pick(args: argparse.Namespace) -> int:
    """Pick each arm's parameters from its study by the named rule and write the arms file."""
    import optuna

    from safemaml.studies.pick import pick_arms

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    control = Path(args.control) if args.control else None
    print(pick_arms([Path(d) for d in args.studies], control, Path(args.out), args.rule), end="")
    return 0
