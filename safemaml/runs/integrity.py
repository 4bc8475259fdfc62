"""Damaged run files, refused or repaired exactly: what a resume and an evaluation check before writing.

A run is written in this order each iteration: config.toml (on a resume's first iteration), one row
appended to metrics.csv, then last.pt renamed into place. So what a crash can leave is a metrics.csv with
rows beyond last.pt (the last one possibly cut mid-row): those are dropped, and the file then holds
exactly what an uninterrupted run holds. Anything else (a row missing or cut before last.pt's iteration,
a file reduced to its header, a config.toml that is not last.pt's) cannot come from a crash and cannot be
repaired from what is on disk: it is refused with one line that names the newest kept checkpoint the
metrics still cover, from which the run can continue exactly.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from safemaml.errors import RunFault, SafeMamlError
from safemaml.files import os_error_message

EVALUATION_FILES = {"returns.csv.gz", "returns.csv", "tasks.csv", "summary.json", "figure.png"}


def metrics_rows(path: Path, done: int) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows 0..done-1 of a metrics.csv, as a resume keeps them; a one-line refusal
    where the file cannot hold exactly what an uninterrupted run of `done` iterations holds."""
    try:
        text = path.read_text() if path.is_file() else ""
    except (OSError, UnicodeDecodeError) as exc:
        reason = os_error_message(exc, path) if isinstance(exc, OSError) else "not text"
        raise SafeMamlError(f"{path} cannot be read ({reason})") from None
    lines = text.splitlines(keepends=True)
    if not lines:
        _missing(path, done, 0, "is empty or missing")
    header = next(csv.reader([lines[0]]))
    if "iteration" not in header or header[0] != "iteration":
        raise SafeMamlError(f"{path} is not a safemaml metrics.csv (its first column is not 'iteration')")
    rows: list[dict[str, str]] = []
    for number, line in enumerate(lines[1:], start=2):
        values = next(csv.reader([line]), [])
        try:
            iteration = int(float(values[0]))
        except (ValueError, IndexError):
            iteration = None
        complete = line.endswith("\n") and len(values) == len(header) and _numbers(values)
        if iteration is not None and iteration >= done:
            break  # written after last.pt: dropped, cut or not
        if not complete or iteration != len(rows):
            what = "is cut short" if not line.endswith("\n") or len(values) != len(header) else \
                "holds a value that is not a number" if not _numbers(values) else f"is iteration {iteration}"
            _missing(path, done, len(rows), f"line {number} {what}")
        rows.append(dict(zip(header, values, strict=True)))
    if len(rows) < done:
        _missing(path, done, len(rows), "ends early")
    return header, rows


def _numbers(values: list[str]) -> bool:
    try:
        [float(v) for v in values]
    except ValueError:
        return False
    return True


def _missing(path: Path, done: int, good: int, what: str) -> None:
    """Refuse: metrics.csv holds only `good` of the `done` rows last.pt stands for."""
    run = path.parent
    kept = sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("iter_*.pt")
                  if p.stem.split("_")[1].isdigit())
    usable = [n for n in kept if 0 < n <= good]
    where = (f"continue from the newest checkpoint it covers: cp {run / 'checkpoints' / f'iter_{usable[-1]:05d}.pt'} "
             f"{run / 'last.pt'}" if usable else "no kept checkpoint is covered by it; train the run again")
    raise SafeMamlError(f"{path} {what}: it holds {good} of the {done} rows of last.pt's iterations, and a "
                        f"resume would pad or lose rows; {where}")


def rewrite_metrics(path: Path, header: list[str], rows: list[dict[str, str]]) -> str:
    """The text of a metrics.csv holding exactly `rows` (what MetricsLog writes first on a resume)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, header, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def check_config_matches_checkpoint(config_text: str, checkpoint: dict[str, Any], run: Path) -> None:
    """config.toml describes the run last.pt continues: the same settings, the iterations and the device
    aside (a resume may change both). A config.toml edited by hand is refused, not trained with."""
    from safemaml import config as config_io

    saved = checkpoint.get("config")
    if not isinstance(saved, str):
        return  # a checkpoint from before checkpoints held their config
    ours = config_io.to_dict(_parse(config_text, run / "config.toml"))
    theirs = config_io.to_dict(_parse(saved, run / "last.pt"))
    differ = config_difference(theirs, ours, ("last.pt", "config.toml"))
    if differ:
        raise SafeMamlError(f"{run / 'config.toml'} is not the config {run / 'last.pt'} was trained with ({differ}); "
                            "put the run's own config.toml back (last.pt holds it under 'config')")


def config_difference(old: dict[str, Any], new: dict[str, Any], names: tuple[str, str] = ("", "")) -> str:
    """The first setting two configs differ in, iterations and device aside, as `key: A in OLD, B in NEW` (empty
    when they agree)."""
    a, b = _flat(old), _flat(new)
    keys = sorted(k for k in a.keys() | b.keys() if k not in ("iterations", "device") and a.get(k) != b.get(k))
    if not keys:
        return ""
    more = "" if len(keys) == 1 else f" and {len(keys) - 1} more"
    old_name, new_name = names[0] or "the run", names[1] or "this request"
    return f"{keys[0]}: {a.get(keys[0])} in {old_name}, {b.get(keys[0])} in {new_name}{more}"


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"policy": {"hidden": (8, 8)}} -> {"policy.hidden": (8, 8)}: differences named by their dotted key."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        out |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return out


def _parse(text: str, where: Path):
    import tomllib

    from safemaml import config as config_io

    try:
        return config_io.from_dict(tomllib.loads(text), where=where.name)
    except tomllib.TOMLDecodeError as exc:
        raise SafeMamlError(f"{where}: invalid TOML: {exc}") from None


def valid_rounds(data: dict[str, np.ndarray], tasks: int, trajectories: int, repeats: int) -> bool:
    """Whether kept rounds (pre [K, r, n], held [K, r], post [K, r, n]) fit the request: their shapes, at most
    `repeats` rounds, finite returns. Anything else is discarded and sampled again (the rounds are seeded by
    their index, so the evaluation is then exactly what an uninterrupted one writes)."""
    pre, held, post = data["pre"], data["held"], data["post"]
    rounds = pre.shape[1] if pre.ndim == 3 else -1
    return (pre.shape == post.shape == (tasks, rounds, trajectories) and held.shape == (tasks, rounds)
            and 0 <= rounds <= repeats and all(np.isfinite(a).all() for a in (pre, held, post)))


def check_evaluation_out(run: Path, out: Path) -> None:
    """An evaluation replaces OUT when it is complete: OUT must be absent, empty or an evaluation folder, and
    never the run itself, a folder that holds it or a run (they would be replaced by the evaluation)."""
    run, out = Path(run).resolve(), Path(out)
    where = out.resolve()
    if where == run or run.is_relative_to(where):
        raise SafeMamlError(f"--out {out} is the run folder or holds it; the evaluation would replace the run "
                            "(choose a folder such as RUN/eval)")
    if out.exists() and not out.is_dir():
        raise SafeMamlError(f"--out {out} is a file, not a folder; choose another --out")
    if not out.is_dir():
        return
    try:
        names = {p.name for p in out.iterdir()}
    except OSError as exc:
        raise RunFault(os_error_message(exc, out)) from None
    if names and "summary.json" not in names or names - EVALUATION_FILES:
        foreign = sorted(names - EVALUATION_FILES) or sorted(names)
        raise SafeMamlError(f"--out {out} holds {', '.join(foreign[:3])}, which is not an evaluation; the evaluation "
                            "replaces its folder, so choose an empty or new one")
