"""A comparison's request, checked whole before anything is written, and the folder it may write into.

`check` refuses, in one line, everything about a comparison that is wrong before the first run is
trained: evaluation options, seeds beyond what torch takes, an --init that cannot be loaded, an arm
that changes what every arm must share (the task family, the seed, the number of iterations: the
tables compare arms on the same tasks and seeds after the same training).

`claim` compares the request with the one OUT was made with (OUT/comparison-request.json, written
before the first training) and refuses another one with one line that names the difference: its runs
would be continued with other settings, their evaluations replaced and the tables mixed. The same
request continues (a stopped comparison resumes), and so does the same request with other --seeds:
each seed is its own run folder (experiments/comparison.sh runs two halves of the seeds, then all).
A folder from before this file existed is checked against what it holds: each run's config.toml,
each evaluation's request, config.json and the arms of comparison.csv.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

from safemaml import config as config_io
from safemaml.checks import MAX_SEED, float_arg, int_arg, optional, seed_arg, str_arg
from safemaml.config import TrainConfig
from safemaml.errors import SafeMamlError
from safemaml.files import ensure_folder, os_errors

REQUEST_FILE = "comparison-request.json"
SHARED = ("tasks", "seed", "iterations")  # settings an arm may not change: the tables compare arms on these
WORKER_OWN = ("device",)  # where a run trains, not what it is: a comparison may continue on another device
VERSION = 1
# the default storage of the comparison's cells (safemaml.studies.cells): SQLite's file and its side files
STORAGE_FILES = ("comparison.db", "comparison.db-journal", "comparison.db-wal", "comparison.db-shm")


def check(cfg: TrainConfig, configs: dict[str, TrainConfig], seeds: list[int] | None, evaluation: dict[str, Any],
          band: str | None) -> None:
    """Everything about the comparison that can be refused before a run folder is touched. `evaluation`: the
    fields of the evaluation request (trajectories, repeats, seed, ...; None where not given)."""
    check_evaluation(evaluation)
    for seed in seeds or []:
        int_arg(seed, "--seeds", 0, MAX_SEED)
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise SafeMamlError(f"--seeds must be distinct, got {' '.join(map(str, seeds))}")
    base = config_io.to_dict(cfg)
    for name, arm in configs.items():
        data = config_io.to_dict(arm)
        for key in SHARED:
            if data[key] != base[key]:
                raise SafeMamlError(f"arm {name!r} changes {key} ({base[key]} -> {data[key]}): every arm is trained "
                                    f"with the base's {', '.join(SHARED)} (set them for all arms, not in an arm)")
        _check_init(arm, name)
    if band is not None:
        from safemaml.runs.evaluate import parse_grid
        from safemaml.tasks import get_family

        parse_grid(band, get_family(cfg.tasks), flag="--band")


def check_evaluation(evaluation: dict[str, Any]) -> None:
    """The evaluation options' types and ranges (the flags' names in the messages)."""
    for key, low in (("trajectories", 1), ("repeats", 1), ("sample", 1)):
        optional(int_arg, evaluation.get(key), f"--{key}", low)
    for key, flag in (("seed", "--eval-seed"), ("task_seed", "--task-seed")):
        optional(seed_arg, evaluation.get(key), flag)
    for key in ("beta", "delta"):
        value = optional(float_arg, evaluation.get(key), f"--{key}")
        if value is not None and not 0 < value < 1:
            raise SafeMamlError(f"--{key} must be in (0, 1), got {value}")
    optional(str_arg, evaluation.get("grid"), "--grid")


def _check_init(cfg: TrainConfig, arm: str) -> None:
    """The --init policy loads and has the arm's shape (what training would find only at its start)."""
    if not cfg.init:
        return
    import torch

    from safemaml.engine.learner import initial_params, policy_spec
    from safemaml.tasks import get_family

    try:
        initial_params(cfg, policy_spec(cfg, get_family(cfg.tasks)), torch.device("cpu"))
    except SafeMamlError as exc:
        raise SafeMamlError(f"arm {arm!r}: {exc}" if "arm" not in str(exc) else str(exc)) from None


def record(cfg: TrainConfig, configs: dict[str, TrainConfig], seeds: list[int] | None, evaluation: dict[str, Any],
           band: str | None) -> dict[str, Any]:
    """What makes two comparisons the same: every arm's training config (the seed aside where --seeds names
    them), the arms' order, the evaluation (its device aside) and the band, and whether runs are per seed."""
    def training(c: TrainConfig) -> dict[str, Any]:
        data = config_io.to_dict(c)
        for key in (*WORKER_OWN, *(("seed",) if seeds is not None else ())):
            data.pop(key)
        return json.loads(json.dumps(data, default=list))

    return {"version": VERSION, "arms": {name: training(c) for name, c in configs.items()},
            "order": list(configs), "per_seed": seeds is not None,
            "evaluation": {k: v for k, v in evaluation.items() if k not in WORKER_OWN}, "band": band}


def difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The first few settings in which two records differ, as `key (old -> new)`; other arms first."""
    if old.get("order") != new.get("order") and isinstance(old.get("order"), list):
        return f"arms ({', '.join(map(str, old['order']))} -> {', '.join(new['order'])})"
    a, b = _flat(old), _flat(new)
    keys = [k for k in [*a, *(k for k in b if k not in a)] if a.get(k, "absent") != b.get(k, "absent")]
    shown = [f"{k} ({a.get(k, 'absent')} -> {b.get(k, 'absent')})" for k in keys[:3]]
    return ", ".join(shown) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out |= _flat(value, f"{prefix}{key}.")
        return out
    return {prefix[:-1]: data}


def claim(out: Path, request: dict[str, Any]) -> None:
    """Refuse OUT if it holds another comparison (or anything else); else record the request in it, before
    the first training. The same request (any --seeds) continues. Workers that start together on one OUT
    (compare --workers, several compare commands) may all find it without a request: the first to record
    one wins, and the others compare theirs with it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SafeMamlError(f"--out {out} is a file, not a folder")
    path = out / REQUEST_FILE
    if path.is_file():
        _check_stored(out, path, request)
        return
    if out.is_dir() and any(out.iterdir()):
        _check_legacy(out, request)
    ensure_folder(out)
    if not _create(path, json.dumps(request, indent=2, sort_keys=True) + "\n"):
        _check_stored(out, path, request)  # another worker recorded its request a moment ago


def _check_stored(out: Path, path: Path, request: dict[str, Any]) -> None:
    try:
        stored = json.loads(path.read_text())
        assert isinstance(stored, dict)
    except (OSError, ValueError, AssertionError):
        raise SafeMamlError(f"{path} is damaged (not the JSON compare writes); choose another --out") from None
    if stored != request:
        raise SafeMamlError(f"{out} holds a comparison made with other settings ({difference(stored, request)}); "
                            "rerun it with its own settings, or choose another --out")


def _create(path: Path, text: str) -> bool:
    """Write `path` whole unless it exists (a temporary file of this process's own, then a hard link, which
    fails where the name is taken); False if another writer created it first."""
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with os_errors(path):
            tmp.write_text(text)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _check_legacy(out: Path, request: dict[str, Any]) -> None:
    """A non-empty OUT without a request file: accepted only where all it holds agrees with the request."""
    arms = request["order"]
    tables = {f"comparison{kind}{band}.{ext}" for kind in ("", "_objectives") for band in ("", "-band")
              for ext in ("csv", "png")} | {"comparison.md"}
    known = {*arms, "config.json", *tables, *STORAGE_FILES, REQUEST_FILE}  # the request: one written meanwhile
    foreign = sorted(p.name for p in out.iterdir() if p.name not in known and not p.name.endswith(".tmp"))
    if foreign:
        raise SafeMamlError(f"{out} holds {', '.join(foreign[:3])}, which no comparison of these arms writes "
                            f"(arms: {', '.join(arms)}); choose another --out")
    for name in arms:
        single, per_seed = (out / name / "config.toml").is_file(), any((out / name).glob("seed-*"))
        if (single and request["per_seed"]) or (per_seed and not request["per_seed"]):
            raise SafeMamlError(f"{out} holds a comparison made {'without' if single else 'with'} --seeds; "
                                "choose another --out")
    table = out / "comparison.csv"
    if table.is_file():
        with table.open(newline="") as f:
            held = list(dict.fromkeys(r.get("objective", "") for r in csv.DictReader(f)))
        if held != arms:
            raise SafeMamlError(f"{out} holds a comparison of other arms ({', '.join(held)} -> {', '.join(arms)}); "
                                "choose another --out")
    for name in arms:
        runs = [out / name] if not request["per_seed"] else sorted((out / name).glob("seed-*"))
        for run in runs:
            if (run / "config.toml").is_file():
                _check_legacy_run(out, run, name, request)


def _check_legacy_run(out: Path, run: Path, arm: str, request: dict[str, Any]) -> None:
    from safemaml.runs import evaluate

    saved = config_io.to_dict(config_io.load(run / "config.toml"))
    for key in (*WORKER_OWN, *(("seed",) if request["per_seed"] else ())):
        saved.pop(key)
    saved = json.loads(json.dumps(saved, default=list))
    if saved != request["arms"][arm]:
        raise SafeMamlError(f"{out} holds a comparison made with other settings (arm {arm}: "
                            f"{difference(saved, request['arms'][arm])}); choose another --out")
    wanted = {k: v for k, v in request["evaluation"].items() if k not in ("beta", "delta") and v is not None}
    wanted.setdefault("repeats", evaluate.DEFAULT_ROUNDS)
    for folder, grid in (("eval", wanted.get("grid")), ("eval-band", request["band"])):
        try:
            made = json.loads((run / folder / "summary.json").read_text())["request"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # no evaluation yet, or one that compare will not reuse and replaces
        if folder == "eval-band" and grid is None:
            continue
        ours = {**wanted, "grid": grid}
        theirs = {k: made.get(k) for k in ours}
        if theirs != ours:
            raise SafeMamlError(f"{out} holds evaluations made with other settings ({run.name}/{folder}: "
                                f"{difference(theirs, ours)}); choose another --out")
