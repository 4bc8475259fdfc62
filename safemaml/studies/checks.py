"""A study's request, checked whole before its storage is created or touched.

What used to be found only inside a trial (an evaluation that cannot be made, an --init that does not
load) left FAIL trials and Optuna's warnings in a new study.db; what was accepted silently (a name given
twice to --search, --fix or --enqueue, --prune-every 0, an infinite bound) made a study other than the one
asked for. Each is one line here, before anything is written.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from safemaml.checks import MAX_SEED, int_arg, optional, seed_arg
from safemaml.errors import SafeMamlError

MAX_SAMPLER_SEED = 2**31 - 1  # TPESampler takes seeds < 2**32; a continued study adds its number of trials


def unique_names(items: list[str], flag: str, separator: str | None = None) -> None:
    """NAME=... items name each parameter once (`--search eta=... --search eta=...` is refused; with
    `separator`, also within one item: `--enqueue eta=1,eta=2`)."""
    seen: set[str] = set()
    for item in items:
        parts = item.split(separator) if separator else [item]
        inside: set[str] = set()
        for part in parts:
            name = part.partition("=")[0].strip()
            if name in (inside if separator else seen):
                raise SafeMamlError(f"{flag} names {name} more than once{f' in {item!r}' if separator else ''}")
            (inside if separator else seen).add(name)


def finite_bounds(item: str, low: Any, high: Any) -> None:
    """A --search range's bounds are finite numbers (Optuna cannot sample an infinite range)."""
    if not all(math.isfinite(v) for v in (low, high)):
        raise SafeMamlError(f"--search {item!r}: LOW and HIGH must be finite numbers")


def training_seeds(seed: int, seeds: int) -> None:
    """Every training seed of a trial (seed, seed + 1, ...) within what torch takes."""
    int_arg(seeds, "--seeds", 1)
    if seed + seeds - 1 > MAX_SEED:
        raise SafeMamlError(f"--seed {seed} with --seeds {seeds}: the training seeds must be <= {MAX_SEED}")


def worker_options(prune_every: int | None, sampler_seed: int | None) -> None:
    """--prune-every >= 1 when given (0 would silently not prune), --sampler-seed within TPE's range."""
    optional(int_arg, prune_every, "--prune-every", 1)
    optional(int_arg, sampler_seed, "--sampler-seed", 0, MAX_SAMPLER_SEED)


def evaluation(request: Any, family: Any) -> None:
    """The study's evaluation can be made: what evaluate_run would refuse in every trial, refused now."""
    from safemaml.runs.evaluate import choose_tasks

    seed_arg(request.seed, "--eval-seed")
    seed_arg(request.task_seed, "--task-seed")
    if request.grid != "default" or request.sample is not None:
        choose_tasks(family, request.grid, request.sample, request.task_seed)


def init(cfg: Any) -> None:
    """--init loads and has the policy's shape (every trial would start from it)."""
    if not cfg.init:
        return
    import torch

    from safemaml.engine.learner import initial_params, policy_spec
    from safemaml.tasks import get_family

    initial_params(cfg, policy_spec(cfg, get_family(cfg.tasks)), torch.device("cpu"))


def storage_before_open(directory: Path, storage: str | None, settings_given: bool, heartbeat: int,
                        grace: int) -> None:
    """Refusals that need no storage: made before DIR or study.db is created."""
    if not 1 <= heartbeat < grace <= 60:
        raise SafeMamlError(f"need 1 <= heartbeat ({heartbeat} s) < grace period ({grace} s) <= 60")
    if directory.exists() and not directory.is_dir():
        raise SafeMamlError(f"{directory} is a file, not a study folder")
    foreign = _foreign(directory, storage)
    if foreign:  # e.g. a run or a comparison: study.db and runs/ would be mixed into it
        raise SafeMamlError(f"{directory} holds {', '.join(foreign[:3])}, which no study writes; choose another DIR")
    if storage is None and not settings_given and not (directory / "study.db").is_file():
        raise SafeMamlError(f"{directory} holds no study to continue; start one with `safemaml study run "
                            f"{directory} --objective O ...` (or give --storage URL for a study kept elsewhere)")


STUDY_FILES = {"study.db", "study.db-journal", "study.db-wal", "study.db-shm", "runs", "trials.csv", "importances.json"}


def _foreign(directory: Path, storage: str | None) -> list[str]:
    """Names in DIR that neither the study (its SQLite file, runs/, a journal given as --storage) nor `study show`
    (trials.csv, figures) writes."""
    if not directory.is_dir():
        return []
    journal = Path(storage).name if storage and "://" not in storage else None
    return sorted(p.name for p in directory.iterdir() if p.name not in STUDY_FILES and p.name != journal
                  and not p.name.endswith((".png", ".tmp")))


def storage_reachable(storage: str | None, must_exist: bool, directory: Path | None = None) -> None:
    """A --storage that names a file: its folder exists (or is `directory`, which `study run` makes), and (to show
    a study) the file itself, so that neither an empty SQLite file nor a journal is created only to say that no
    study is there."""
    if storage is None:
        return
    path = Path(storage[len("sqlite:///"):]) if storage.startswith("sqlite:///") else \
        None if "://" in storage else Path(storage)
    if path is None:
        return
    if not path.parent.is_dir() and (directory is None or path.parent.resolve() != directory.resolve()):
        raise SafeMamlError(f"--storage {storage}: folder {str(path.parent)!r} does not exist")
    if must_exist and not path.is_file():
        raise SafeMamlError(f"--storage {storage}: no such file, so no study to show")
