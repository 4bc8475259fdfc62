"""Optuna studies over an objective's parameters, with the training seed as the unit.

A trial draws the objective's parameters (beta, delta, multipliers), trains one run per seed
(DIR/runs/trial-NNNN/seed-S) and evaluates every run on the same tasks with the same
evaluation seed (common random numbers across trials). Its values are the means over seeds
of the post-update return (maximised) and the violation rate V-hat (minimised); the Eq. 6
certificate is an Optuna constraint. Per-seed values, run directories and the settings are
user attributes of the trial.

Coordination is Optuna's storage alone: an SQLite file DIR/study.db by default, any RDB URL
(postgresql://...) or a JournalStorage file. Workers killed mid-trial are found by the
storage's heartbeat and their trials retried (Optuna's RetryHeartbeatStaleTrialCallback);
a retry continues the runs of the trial it retries from their last.pt.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, Trial, TrialState

from safemaml import config as config_io
from safemaml.config import EvalRequest, TrainConfig
from safemaml.errors import SafeMamlError
from safemaml.measure.metrics import clopper_pearson_lower
from safemaml.studies import checks as study_checks
from safemaml.studies import space as study_space
from safemaml.studies.settings import METRIC_NAMES, METRICS, SEED_KEYS, STUDY_EVALUATION, StudySettings

SETTINGS_ATTR = "safemaml_settings"
MAX_RETRY = 3  # a trial whose worker dies is run again at most this many times
MAX_CONSECUTIVE_FAILURES = 3  # a worker stops when this many trials in a row fail
# ---- settings (safemaml.studies.settings) -------------------------------------------------------


def can_certify(evaluation: EvalRequest) -> bool:
    """Whether `repeats` rounds can certify p_T >= 1 - beta at all (all rounds won, alpha = 0.05)."""
    repeats, beta, _ = evaluation.resolved(STUDY_EVALUATION).levels()
    return bool(clopper_pearson_lower(repeats, repeats, 0.05) >= 1.0 - beta)


def declared_space(objective: str, fixed: dict[str, Any] | None = None) -> dict[str, BaseDistribution]:
    """Every parameter the objective's search_space (define-by-run) draws in some trial, as Optuna distributions
    (safemaml.studies.space); with `fixed`, in the trials those fixed values leave."""
    from objectives import available

    registry = available()
    if objective not in registry:
        raise SafeMamlError(f"unknown objective {objective!r}; known: {', '.join(registry)}")
    return study_space.declared(registry[objective].search_space, fixed)


def parse_range(item: str) -> tuple[str, BaseDistribution]:
    """'eta=0.1:10:log', 'margin=0:0.5', 'k=1:5:int' or 'update=dual,pid' -> (name, distribution)."""
    name, sep, text = item.partition("=")
    name = name.strip()
    if not sep or not name:
        raise SafeMamlError(f"--search expects NAME=LOW:HIGH[:log|:int] or NAME=A,B,..., got {item!r}")
    if ":" not in text:
        choices = [config_io.parse_value(c.strip()) for c in text.split(",") if c.strip()]
        if len(choices) < 2:
            raise SafeMamlError(f"--search {item!r}: give LOW:HIGH or at least two choices A,B")
        return name, CategoricalDistribution(choices)
    parts = text.split(":")
    kind = parts[2] if len(parts) == 3 else ""
    if len(parts) not in (2, 3) or kind not in ("", "log", "int"):
        raise SafeMamlError(f"--search {item!r}: expected LOW:HIGH, LOW:HIGH:log or LOW:HIGH:int")
    try:
        low, high = (int(p) if kind == "int" else float(p) for p in parts[:2])
    except ValueError:
        raise SafeMamlError(f"--search {item!r}: LOW and HIGH must be numbers") from None
    study_checks.finite_bounds(item, low, high)
    if not low < high:
        raise SafeMamlError(f"--search {item!r}: LOW must be below HIGH")
    if kind == "log" and low <= 0:
        raise SafeMamlError(f"--search {item!r}: a log range needs LOW > 0")
    return name, IntDistribution(int(low), int(high)) if kind == "int" else FloatDistribution(low, high, log=kind == "log")


def _corners(space: dict[str, BaseDistribution]) -> list[dict[str, Any]]:
    """Low and high ends of every range (others at their low end): checked before any training."""
    def low(d: Any) -> Any:
        return d.choices[0] if isinstance(d, CategoricalDistribution) else d.low

    base = {k: low(d) for k, d in space.items()}
    points = [base]
    for name, dist in space.items():
        values = dist.choices[1:] if isinstance(dist, CategoricalDistribution) else [cast(Any, dist).high]
        points += [{**base, name: v} for v in values]
    return points


def is_config_key(name: str) -> bool:
    """A searched name with a dot is a training setting (e.g. adapt.fast_lr), not an objective parameter."""
    return "." in name


def resolve_space(objective: str, search: list[str], fix: list[str],
                  base: TrainConfig | None = None) -> tuple[dict[str, BaseDistribution], dict[str, Any]]:
    """The objective's declared space, narrowed or widened by --search and fixed by --fix.

    A dotted name (adapt.fast_lr, policy.init_std) searches a training setting of `base` instead of
    an objective parameter: MAML's own knobs can be tuned like an objective's. Every point at a
    corner of the space is checked by constructing the objective and the config, so a range they
    refuse (e.g. beta up to 1) is an error now, before any training.
    """
    from objectives import available, make_objective

    space = declared_space(objective)
    study_checks.unique_names(search, "--search")
    study_checks.unique_names(fix, "--fix")
    known = set(available()[objective].parameters())
    fixed: dict[str, Any] = {}
    for item in fix:
        name, sep, text = item.partition("=")
        if not sep:
            raise SafeMamlError(f"--fix expects NAME=VALUE, got {item!r}")
        fixed[name.strip()] = config_io.parse_value(text.strip())
    searched = dict(parse_range(item) for item in search)
    both = set(searched) & set(fixed)
    if both:
        raise SafeMamlError(f"{', '.join(sorted(both))}: given to both --search and --fix")
    space.update(searched)
    for name in [*space, *fixed]:
        if is_config_key(name):
            if name.startswith("objective."):
                raise SafeMamlError(f"--search/--fix {name}: give objective parameters without 'objective.'")
            if base is None:
                raise SafeMamlError(f"{name}: training settings can only be searched with a base config")
        elif name not in known:
            raise SafeMamlError(f"objective {objective!r} has no parameter {name!r}; "
                                f"it has: {', '.join(sorted(known))}")
    for name in fixed:
        space.pop(name, None)
    space = study_space.reachable(available()[objective].search_space, space,
                                  {k: v for k, v in fixed.items() if not is_config_key(k)}, searched=list(searched))
    if not space:
        raise SafeMamlError(f"objective {objective!r} (--objective, else the config's) declares nothing to search "
                            "here; give --objective lagrangian|cvar|quantile, or --search NAME=LOW:HIGH "
                            "(e.g. adapt.fast_lr=0.02:0.5:log)")
    for point in _corners(space):
        point = {**point, **fixed}
        make_objective(objective, **{k: v for k, v in point.items() if not is_config_key(k)})
        if base is not None:
            config_io.override(base, {k: v for k, v in point.items() if is_config_key(k)})
    return space, fixed


def make_settings(base: TrainConfig, objective: str, search: list[str], fix: list[str], seeds: int,
                  evaluation: EvalRequest, metric: str = "pareto", prune_every: int = 0) -> StudySettings:
    """Check every input of a study and return its settings; raises SafeMamlError on bad input.

    `evaluation`: its fields left None are STUDY_EVALUATION's; its device is left to each worker."""
    from safemaml.tasks import get_family

    evaluation = dataclasses.replace(evaluation.resolved(STUDY_EVALUATION), device=STUDY_EVALUATION.device)
    study_checks.training_seeds(base.seed, seeds)
    if metric != "pareto" and metric not in METRICS:
        raise SafeMamlError(f"unknown --metric {metric!r}; choose pareto or one of {', '.join(METRICS)}")
    if prune_every < 0 or (prune_every and metric == "pareto"):
        raise SafeMamlError("--prune-every needs a single --metric (Optuna does not prune multi-objective "
                            "studies) and a value >= 1")
    repeats, beta, delta = evaluation.levels()
    if evaluation.trajectories < 1 or repeats < 1:
        raise SafeMamlError("--trajectories and --repeats must be >= 1")
    for name, value in (("beta", beta), ("delta", delta)):
        if not 0 < value < 1:
            raise SafeMamlError(f"--eval-{name} must be in (0, 1), got {value}")
    family = get_family(base.tasks)
    if evaluation.grid:
        from safemaml.runs.evaluate import parse_grid

        parse_grid(evaluation.grid, family)
    study_checks.evaluation(evaluation, family)  # what every trial's evaluation would refuse, refused now
    space, fixed = resolve_space(objective, search, fix, base)
    kept = base.objective_params if base.objective_name == objective else {}  # the config's values act as fixed
    settings_fixed = {k: v for k, v in fixed.items() if is_config_key(k)}
    fixed = {k: v for k, v in fixed.items() if not is_config_key(k)}
    cfg = dataclasses.replace(config_io.override(base, settings_fixed),
                              objective={"name": objective, **kept, **fixed})
    cfg = config_io.from_dict(config_io.to_dict(cfg))  # JSON-able round trip
    study_checks.init(cfg)  # every trial starts from --init: it must load now
    return StudySettings(config=json.loads(json.dumps(config_io.to_dict(cfg))),
                         space={k: distribution_to_json(d) for k, d in space.items()},
                         seeds=tuple(cfg.seed + k for k in range(seeds)), evaluation=evaluation,
                         metric=metric, prune_every=prune_every)


# ---- storage -------------------------------------------------------------------------------------


def storage_url(directory: Path, url: str | None) -> str:
    return url or f"sqlite:///{(directory / 'study.db').resolve()}"


def open_storage(url: str, heartbeat: int = 10, grace: int = 30) -> optuna.storages.BaseStorage:
    """An Optuna storage: an RDB URL (sqlite:///, postgresql://, ...) with heartbeat and retry of
    stale trials, or a path to a JournalStorage file. Unreachable storages are one-line errors."""
    if not 1 <= heartbeat < grace <= 60:
        raise SafeMamlError(f"need 1 <= heartbeat ({heartbeat} s) < grace period ({grace} s) <= 60")
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        path = Path(url)
        if not path.parent.is_dir():
            raise SafeMamlError(f"journal storage {url!r}: folder {str(path.parent)!r} does not exist")
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if url.startswith("postgresql"):
        kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    for attempt in range(3):  # workers starting together may race to create the tables
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=heartbeat, grace_period=grace,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
        except ImportError:  # Optuna's "Failed to import DB access module"
            hint = "; pip install 'safemaml[postgres]'" if url.startswith("postgres") else ""
            raise SafeMamlError(f"storage {_safe(url)}: its database driver is not installed{hint}") from None
        except Exception as exc:  # sqlalchemy: unknown dialect, refused connection, bad credentials
            if attempt < 2 and "nosuchmodule" not in type(exc).__name__.lower() and "refused" not in str(exc):
                time.sleep(1.0)
                continue
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SafeMamlError(f"storage {_safe(url)} cannot be used: {reason}") from None
    raise AssertionError("unreachable")


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        rest = f"{user}:***@{rest.split('@', 1)[1]}"
    return scheme + sep + rest


def enqueue_points(study: optuna.Study, settings: StudySettings, items: list[str]) -> int:
    """Queue trials at given points of the search space (`--enqueue adapt.fast_lr=0.05`), run before the
    sampler's own: a grid over a one-dimensional knob, or a preset's value, that a few random-start trials
    may miss. A name left out is sampled; a point already tried or queued is not queued again, so a
    continued study can repeat the flag. A point whose trials all failed (retries used up) is queued
    again. Returns how many trials were queued."""
    added = 0
    for point in enqueue_point_list(settings, items):
        if not _holds_point(study, point):
            study.enqueue_trial(point)
            added += 1
    return added


def enqueue_point_list(settings: StudySettings, items: list[str]) -> list[dict[str, Any]]:
    """The --enqueue points, each checked against the study's space (a bad one refused before the study is
    created or any point queued)."""
    space = settings.distributions
    points = []
    for item in items:
        study_checks.unique_names([item], "--enqueue", ",")
        point = {}
        for part in item.split(","):
            name, sep, text = part.partition("=")
            name = name.strip()
            if not sep or not name:
                raise SafeMamlError(f"--enqueue expects NAME=VALUE[,NAME=VALUE...], got {item!r}")
            if name not in space:
                raise SafeMamlError(f"--enqueue {name}: this study does not search it; it searches "
                                    f"{', '.join(sorted(space))}")
            point[name] = _in_space(name, config_io.parse_value(text.strip()), space[name])
        points.append(point)
    return points


def _holds_point(study: optuna.Study, point: dict[str, Any]) -> bool:
    """Whether a trial that has not failed was, or is queued to be, run at `point` (Optuna's own
    skip_if_exists also counts FAIL trials, so a point lost to interruptions could never be queued again)."""
    alive = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    for trial in study.get_trials(deepcopy=False, states=alive):
        params = trial.system_attrs.get("fixed_params", trial.params)
        if all(name in params and params[name] == value for name, value in point.items()):
            return True
    return False


def _in_space(name: str, value: Any, dist: Any) -> Any:
    if isinstance(dist, CategoricalDistribution):
        if value not in dist.choices:
            raise SafeMamlError(f"--enqueue {name}={value}: not one of the searched choices {list(dist.choices)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not dist.low <= value <= dist.high:
        raise SafeMamlError(f"--enqueue {name}={value}: outside the searched range {dist.low}:{dist.high}")
    return value


def load_or_create(storage, name: str, settings: StudySettings | None, pruner=None,
                   sampler_seed: int | None = None) -> tuple[optuna.Study, StudySettings]:
    """Create the study with these settings, or load it and check that the settings agree.

    `settings` None means "continue with the stored settings". Optuna's default sampler (TPE);
    `sampler_seed` makes a single worker's sequence of trials reproducible. A continued study's sampler is
    seeded with sampler_seed + its number of trials: with the bare seed, TPE's random start would propose
    the first trials' parameters again (the runs are deterministic, so those trials would be exact repeats).
    """
    exists = name in optuna.get_all_study_names(storage)
    if not exists and settings is None:
        raise SafeMamlError(f"no study {name!r} in this storage; start one with `safemaml study run DIR "
                            f"--objective O ...`")
    stored = None
    if exists:
        study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        text = study.user_attrs.get(SETTINGS_ATTR)
        stored = StudySettings.from_json(text) if text else None
        if stored is None and settings is None:
            raise SafeMamlError(f"study {name!r} has no safemaml settings")
        settings = settings or stored
    assert settings is not None  # given, or stored (checked above)
    directions = [METRICS[m] for m in settings.metrics]
    if not exists:
        study = optuna.create_study(study_name=name, storage=storage, directions=cast(Any, directions), pruner=pruner,
                                    load_if_exists=True)
    if sampler_seed is not None:
        study.sampler = optuna.samplers.TPESampler(seed=sampler_seed + len(study.trials))
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, settings.to_json())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAMES[m] for m in settings.metrics])  # read by optuna-dashboard
    elif stored != settings:
        raise SafeMamlError(f"study {name!r} was made with other settings ({_difference(stored, settings)}); "
                            "continue it with `safemaml study run DIR --trials N` alone, or use another DIR")
    if [d.name.lower() for d in study.directions] != directions:
        raise SafeMamlError(f"study {name!r} optimises other directions")
    return study, settings


def _difference(a: StudySettings, b: StudySettings) -> str:
    da, db = json.loads(a.to_json()), json.loads(b.to_json())
    keys = [k for k in da if da[k] != db[k]]
    if "config" in keys:
        keys.remove("config")
        keys += [f"config.{k}" for k in da["config"] if da["config"][k] != db["config"].get(k)]
    return "differs in " + ", ".join(keys)


# ---- one trial -------------------------------------------------------------------------------------


class TrialFailed(Exception):
    """A trial that could not finish (a diverged training): FAIL, with the reason on the trial."""


def suggest(trial: Trial, settings: StudySettings) -> dict[str, Any]:
    """The trial's parameters, define-by-run: those the objective's search_space asks for in this trial's branch
    (e.g. lambda_lr only under dual ascent), each from the study's distribution, then the other names the study
    searches (safemaml.studies.space.draw). A retried trial gets its original's values."""
    from objectives import available

    base = settings.base
    cls = available()[base.objective_name]
    return study_space.draw(trial, settings.distributions, cls.search_space,
                            {**cls.parameters(), **base.objective_params})


def run_directory(directory: Path, trial: Trial | FrozenTrial, seed: int) -> Path:
    """DIR/runs/trial-NNNN/seed-S, NNNN the number of the trial, or of the trial it retries
    (Optuna's retry callback records it as the system attribute "failed_trial")."""
    frozen = trial if isinstance(trial, FrozenTrial) else trial.study.get_trials(deepcopy=False)[trial.number]
    number = frozen.system_attrs.get("failed_trial", trial.number)
    return directory / "runs" / f"trial-{number:04d}" / f"seed-{seed}"


def _training_metric(run: Path, metric: str, since: int) -> float:
    """Mean of `metric` in metrics.csv over iterations >= since (the training batches' estimate)."""
    import csv

    with (run / "metrics.csv").open() as f:
        values = [float(r[metric]) for r in csv.DictReader(f) if int(float(r["iteration"])) >= since]
    return float(sum(values) / len(values)) if values else float("nan")


def _stops(iterations: int, every: int) -> list[int]:
    return list(range(every, iterations, every)) + [iterations] if every else [iterations]


def evaluate_seed(run: Path, evaluation: EvalRequest, device: str) -> dict[str, float]:
    """The per-seed metrics of `run`'s evaluation on this worker's device (an earlier one of the same request and
    checkpoint is reused: a retried trial does not evaluate its finished runs again)."""
    from safemaml.runs.evaluate import evaluate_run

    summary = evaluate_run(run, dataclasses.replace(evaluation, device=device), reuse=True)
    return {k: float("nan") if summary[k] is None else float(summary[k]) for k in SEED_KEYS if k in summary}


def run_trial(trial: Trial, settings: StudySettings, directory: Path, device: str, quiet: bool) -> list[float]:
    """Train every seed with the trial's parameters, evaluate each, set values, attributes and constraint."""
    import torch

    from safemaml.runs.train import train_or_resume

    params = suggest(trial, settings)
    base = config_io.override(settings.base, {"device": device, **{
        k if is_config_key(k) else f"objective.{k}": v for k, v in params.items()}})
    runs = {seed: run_directory(directory, trial, seed) for seed in settings.seeds}
    trial.set_user_attr("host", f"{socket.gethostname()} pid {os.getpid()}")
    trial.set_user_attr("torch_threads", torch.get_num_threads())
    trial.set_user_attr("config", config_io.dumps(base))
    for seed, run in runs.items():
        trial.set_user_attr(f"run_dir seed {seed}", str(run.relative_to(directory)))
    done = 0
    try:
        for stop in _stops(base.iterations, settings.prune_every):
            for seed, run in runs.items():  # resumed from last.pt where a run is there (a retried trial's)
                train_or_resume(config_io.override(base, {"seed": seed, "iterations": stop}), run, quiet,
                                same_except=("iterations", "device"))
            if settings.prune_every:
                value = sum(_training_metric(r, settings.metric, done) for r in runs.values()) / len(runs)
                trial.report(value, stop)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"training {settings.metric} {value:.4g} after {stop} iterations")
            done = stop
    except SafeMamlError as exc:  # e.g. non-finite loss: this trial fails, the study goes on
        trial.set_user_attr("fail_reason", str(exc))
        raise TrialFailed(str(exc)) from None
    per_seed = {seed: evaluate_seed(run, settings.evaluation, device) for seed, run in runs.items()}
    for seed, values in per_seed.items():
        for key, value in values.items():
            trial.set_user_attr(f"{key} seed {seed}", value)
    means = {k: sum(v[k] for v in per_seed.values()) / len(per_seed) for k in per_seed[settings.seeds[0]]}
    for key, value in means.items():
        trial.set_user_attr(f"{key} mean", value)
    if can_certify(settings.evaluation):  # feasible (<= 0) when every seed certifies Eq. 6
        worst = min(v["certified_fraction"] for v in per_seed.values())
        trial.set_constraint("eq6_uncertified", (1.0 - settings.evaluation.levels()[2]) - worst)
    return [means[m] for m in settings.metrics]


# ---- the worker loop -------------------------------------------------------------------------------


def finished(study: optuna.Study) -> int:
    """Trials that count towards --trials: COMPLETE or PRUNED."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def running_elsewhere(study: optuna.Study) -> int:
    """Trials that live workers are running now, counted only where the storage keeps heartbeats (RDB):
    there a dead worker's trial is first failed and queued again, so what is left RUNNING is alive. A
    journal file has no heartbeat, so its RUNNING trials may be dead ones and count as 0."""
    heartbeat = getattr(study._storage, "get_heartbeat_interval", None)  # as Optuna's fail_stale_trials reads it
    if heartbeat is None or not heartbeat():
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def continue_hint(directory: Path, url: str | None, name: str, trials: int) -> str:
    storage = f" --storage {_safe(url)}" if url else ""
    study = f" --study-name {name}" if name != directory.name else ""
    return f"safemaml study run {directory}{storage}{study} --trials {trials}"


def run_study(study: optuna.Study, settings: StudySettings, directory: Path, trials: int, device: str = "cpu",
              quiet: bool = True, hint: str = "") -> int:
    """Run trials in this process until the study has `trials` finished ones; returns how many it ran.

    Several processes may run this on one storage: each counts, before every trial, the finished ones and
    those other live workers are running, so a worker does not start a trial that would take the study
    past N (two workers checking at the same instant still can). If a trial running elsewhere then fails,
    the study ends one short; running the command again completes it.
    """
    ran, failures = 0, 0
    while finished(study) + running_elsewhere(study) < trials:
        last: list[FrozenTrial] = []
        started: list[int] = []

        def objective(trial: Trial) -> list[float]:
            started.append(trial.number)  # noqa: B023  (called within this iteration)
            try:
                return run_trial(trial, settings, directory, device, quiet)
            except KeyboardInterrupt:  # not the run's "resume with train --resume": the study is what goes on
                raise KeyboardInterrupt("interrupted; the trial is queued again") from None

        try:
            study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=[lambda s, t: last.append(t)],  # noqa: B023
                           gc_after_trial=False)
        except KeyboardInterrupt:
            if started:
                _requeue_interrupted(study, started[-1])
            # the study's command, not the trial's run's `train --resume`, is how to go on: the last line says so
            raise KeyboardInterrupt(f"interrupted; finished trials are saved. Continue with: {hint}") from None
        ran += 1
        failures = failures + 1 if last and last[-1].state == TrialState.FAIL else 0
        if last:
            _report_trial(last[-1], settings)
        if failures >= MAX_CONSECUTIVE_FAILURES:
            raise SafeMamlError(f"{failures} trials in a row failed (last: "
                                f"{last[-1].user_attrs.get('fail_reason', '?')}); see `safemaml study show`")
    return ran


def _requeue_interrupted(study: optuna.Study, number: int) -> None:
    """Optuna marks a trial stopped by Ctrl-C FAIL; queue it again with Optuna's retry callback (as
    for a dead worker) so that continuing the study resumes its runs from their last.pt."""
    trial = study.get_trials(deepcopy=True)[number]
    if trial.state == TrialState.FAIL:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)


def _report_trial(trial: FrozenTrial, settings: StudySettings) -> None:
    if trial.state == TrialState.COMPLETE:
        values = ", ".join(f"{METRIC_NAMES[m]} {v:.4g}" for m, v in zip(settings.metrics, trial.values))
        print(f"trial {trial.number}: {values}", file=sys.stderr)
    else:
        reason = trial.user_attrs.get("fail_reason", "")
        print(f"trial {trial.number}: {trial.state.name} {reason}".rstrip(), file=sys.stderr)



def configure_logging(quiet: bool) -> None:
    """Optuna's log without tracebacks: a failed trial's reason is on the trial (see `study show`)."""
    import logging

    def drop_traceback(record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True

    optuna.logging.set_verbosity(optuna.logging.WARNING if quiet else optuna.logging.INFO)
    for handler in logging.getLogger("optuna").handlers:
        handler.addFilter(drop_traceback)


def pool_worker(url: str, name: str, directory: str, trials: int, device: str, quiet: bool, hint: str,
                heartbeat: int, grace: int, sampler_seed: int | None, worker: int) -> int:
    """One of `study run --workers N` local processes (safemaml.studies.pool): open the stored study and
    run trials until it has `trials` finished ones. Worker i seeds its sampler with sampler_seed + 1000 i,
    so that the workers do not propose the same first points."""
    from optuna.pruners import MedianPruner

    configure_logging(quiet)
    seed = None if sampler_seed is None else sampler_seed + 1000 * worker
    study, settings = load_or_create(open_storage(url, heartbeat, grace), name, None,
                                     MedianPruner(n_startup_trials=3), seed)
    run_study(study, settings, Path(directory), trials, device, quiet, hint)
    return 0
