"""The run folder, in one place: its files, how they are written, and who may write them.

    RUN/config.toml            the resolved config (what the run did)
    RUN/metrics.csv            one row per finished meta-iteration
    RUN/last.pt                the state after the last finished iteration
    RUN/checkpoints/iter_N.pt  every `checkpoint_every` iterations
    RUN/eval/                  evaluations (returns.csv.gz, tasks.csv, summary.json, figure.png)
    RUN/.lock                  the writer's lock (an OS lock: released when the process dies)

Rules kept here so train, evaluate, compare, report and studies share them:
- one writer at a time (`RunDir.lock`, fcntl.flock, non-blocking: a second writer is refused);
- every file is written to a temporary name and renamed, so a crash never leaves half a file;
- a checkpoint is a dict of plain tensors and numbers, loadable with torch.load(weights_only=True);
  anything else is refused with one line that says what the file is not;
- operating-system failures (full disk, read-only folder, a file where a folder should be)
  become one-line RunFault messages that name the path and the fix.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safemaml.errors import RunFault, SafeMamlError
from safemaml.files import (  # noqa: F401
    CHECKPOINT_KEYS,
    CHECKPOINTS,
    LAST,
    check_params,
    checkpoint_bytes,
    commit,
    ensure_folder,
    load_checkpoint,
    os_error_message,
    os_errors,
    save_checkpoint,
    stage_bytes,
    write_bytes_atomic,
    write_text_atomic,
)

CONFIG, METRICS, LOCK = "config.toml", "metrics.csv", ".lock"


# ---- metrics ------------------------------------------------------------------------------


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv as floats; a one-line error for an empty or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise SafeMamlError(f"no metrics at {path}")
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "iteration" not in reader.fieldnames:
                raise SafeMamlError(f"{path} has no finished meta-iteration yet, or is not a safemaml "
                                    "metrics.csv (no 'iteration' column)")
            rows = [{k: float(v) for k, v in row.items()} for row in _whole_rows(reader, path)]
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        if isinstance(exc, SafeMamlError):
            raise
        raise SafeMamlError(f"{path} is not a safemaml metrics.csv (a value that is not a number)") from None
    except OSError as exc:
        raise RunFault(os_error_message(exc, path)) from None
    if not rows:
        raise SafeMamlError(f"{path} has no finished meta-iteration yet")
    return rows


def _whole_rows(reader: csv.DictReader, path: Path) -> Iterator[dict[str, str]]:
    """The rows of a metrics.csv with every column; a row cut short is refused, except the last line when it
    has no line end yet (a row being written, or one a crash cut: it is not an iteration last.pt holds)."""
    rows = list(reader)
    for number, row in enumerate(rows):
        if None in row.values() or None in row:
            if number == len(rows) - 1 and not path.read_bytes().endswith(b"\n"):
                return
            raise SafeMamlError(f"{path} is damaged: the row of line {number + 2} does not have one value per "
                                "column")
        yield row


class MetricsLog:
    """metrics.csv, one row per meta-iteration with the given leading fields, then the objective's
    own (`objective_*`, fixed by the first row). On resume the rows from `keep_below` on (written
    after the checkpoint) are dropped — but only when the first new row is written, so a resume
    that fails before that leaves the file as it was."""

    def __init__(self, path: Path, fields: list[str], keep_below: int | None = None):
        self.path, self.leading, self.fields = path, fields, None
        self.pending: list[dict] | None = []  # rows to rewrite before the first append; None: done
        if keep_below:  # a resume keeps rows 0..keep_below-1, checked: never padded, never a row lost
            from safemaml.runs.integrity import metrics_rows

            self.fields, self.pending = metrics_rows(path, keep_below)

    def append(self, metrics: dict[str, float]) -> None:
        if self.fields is None:
            self.fields = self.leading + sorted(k for k in metrics if k.startswith("objective_"))
        row = {k: (int(metrics[k]) if k == "iteration" else f"{metrics.get(k, float('nan')):.6g}")
               for k in self.fields}
        if self.pending is not None:  # the first write: the whole file, atomically
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows([*self.pending, row])
            write_text_atomic(self.path, buffer.getvalue())
            self.pending = None
            return
        with os_errors(self.path), self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(row)


# ---- the folder ---------------------------------------------------------------------------


class RunDir:
    """A run folder and the rules for reading and writing it."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    config_path = property(lambda self: self.path / CONFIG)
    metrics_path = property(lambda self: self.path / METRICS)
    last_path = property(lambda self: self.path / LAST)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def has_checkpoint(self) -> bool:
        """True once an iteration has finished (last.pt exists)."""
        return self.last_path.is_file()

    def require_run(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise SafeMamlError(f"{self.path} is a file, not a run folder")
        if not self.is_run():
            raise SafeMamlError(f"{self.path} is not a run folder (no {CONFIG})")

    def read_config(self):
        from safemaml import config as config_io

        self.require_run()
        return config_io.load(self.config_path)

    def write_config(self, cfg) -> None:
        from safemaml import config as config_io

        write_text_atomic(self.config_path, config_io.dumps(cfg))

    def checkpoint_path(self, iteration: int) -> Path:
        """checkpoints/iter_N.pt, N = the number of finished iterations."""
        return self.checkpoints / f"iter_{iteration + 1:05d}.pt"

    def load_last(self) -> dict[str, Any]:
        """last.pt; if it is damaged, the message points to the newest kept checkpoint."""
        try:
            return load_checkpoint(self.last_path)
        except SafeMamlError as exc:
            kept = sorted(self.checkpoints.glob("iter_*.pt")) if self.checkpoints.is_dir() else []
            if not kept or isinstance(exc, RunFault):
                raise
            raise SafeMamlError(f"{exc}; to continue from the newest kept checkpoint: cp {kept[-1]} "
                                f"{self.last_path}") from None

    def finished_iterations(self) -> int:
        return int(self.load_last()["iteration"]) + 1 if self.has_checkpoint() else 0

    def read_metrics(self) -> list[dict[str, float]]:
        return read_metrics(self.metrics_path)

    def metrics_log(self, fields: list[str], keep_below: int | None) -> MetricsLog:
        return MetricsLog(self.metrics_path, fields, keep_below)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's writer lock for the block; a second writer gets a one-line refusal.

        fcntl.flock on RUN/.lock: the kernel releases it when the process exits or is killed, so
        the file left behind is never a stale lock."""
        ensure_folder(self.path)
        with os_errors(self.path / LOCK):
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise SafeMamlError(f"{self.path} is in use by another safemaml process (pid {holder}); wait for it "
                                    "to finish or choose another folder") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    def foreign_files(self) -> list[str]:
        """Names in the folder that a run which never finished an iteration does not write."""
        ours = {CONFIG, METRICS, LOCK, CHECKPOINTS, "tensorboard"}
        return sorted(p.name for p in self.path.iterdir() if p.name not in ours and not p.name.endswith(".tmp")) \
            if self.path.is_dir() else []

    def discard_unstarted(self, created: bool) -> None:
        """Remove what a run that never finished an iteration wrote (and the folder, if this process
        created it), so that the same command can start it again from a clean folder."""
        if self.has_checkpoint():
            return
        for name in (CONFIG, METRICS):
            with contextlib.suppress(OSError):
                (self.path / name).unlink()
        with contextlib.suppress(OSError):
            self.checkpoints.rmdir()  # only if empty
        if created:
            self.remove_if_empty()

    def remove_if_empty(self) -> None:
        """Remove the folder if nothing but the lock file is in it."""
        if self.path.is_dir() and {p.name for p in self.path.iterdir()} <= {LOCK}:
            with contextlib.suppress(OSError):
                (self.path / LOCK).unlink(missing_ok=True)
                self.path.rmdir()


@contextlib.contextmanager
def replaced_folder(out: Path) -> Iterator[Path]:
    """Write a folder's files into OUT.tmp and swap it in at the end: a failure leaves OUT as it was
    and removes the half-written OUT.tmp."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SafeMamlError(f"{out} is a file, not a folder; choose another --out")
    tmp = out.with_name(out.name + ".tmp")
    try:
        with os_errors(out):
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        yield tmp
        with os_errors(out):
            old = out.with_name(out.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            if out.exists():
                os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:  # an OSError from the caller's writes
        shutil.rmtree(tmp, ignore_errors=True)
        raise RunFault(os_error_message(exc, out)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
