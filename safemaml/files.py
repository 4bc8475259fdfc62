"""Files written safely, and checkpoint files: the lowest layer that reads and writes disk.

- every file is written to a temporary name, flushed and renamed, so a crash never leaves half a file;
- a checkpoint is a dict of plain tensors and numbers, loadable with torch.load(weights_only=True);
  anything else is refused with one line that says what the file is not;
- operating-system failures (full disk, read-only folder, a file where a folder should be)
  become one-line RunFault messages that name the path and the fix.
The run folder's layout and its rules (one writer, resume) are safemaml.runs.rundir.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from safemaml.errors import RunFault, SafeMamlError

LAST, CHECKPOINTS = "last.pt", "checkpoints"
RETURNS = "returns.csv.gz"  # an evaluation's per-trajectory returns, gzip-compressed (about 4x smaller)
OLD_RETURNS = "returns.csv"  # what evaluations wrote before 2026-12-06; still read
CHECKPOINT_KEYS = ("iteration", "params", "optimizer", "objective", "config")


def returns_file(folder: Path) -> Path | None:
    """The per-trajectory returns of the evaluation in `folder` (returns.csv.gz, or an older returns.csv), or None."""
    for name in (RETURNS, OLD_RETURNS):
        if (folder / name).is_file():
            return folder / name
    return None


def open_returns(path: Path) -> IO[str]:
    """A returns file opened as text for csv.DictReader, whichever way it was written (gzip by its suffix)."""
    return gzip.open(path, "rt", newline="") if path.suffix == ".gz" else path.open(newline="")


@contextlib.contextmanager
def write_gzip_text(path: Path) -> Iterator[IO[str]]:
    """A text file written gzip-compressed with no timestamp and no name in its header, so that the same
    content gives the same bytes (an evaluation rerun on the same machine is byte-identical)."""
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed, \
            io.TextIOWrapper(packed, newline="") as text:
        yield text


def os_error_message(exc: OSError, path: Path | str | None = None) -> str:
    """One line for an operating-system failure: what happened to which path, and what to do."""
    where = path or exc.filename or "?"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device while writing {where}; free some space and run the command again"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {where}: the folder is read-only or not ours ({exc.strerror}); make it writable or " \
               "choose another folder"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{where}: a file stands where a folder is needed; choose another --out"
    if exc.errno == errno.EISDIR:
        return f"{where} is a folder, not a file"
    return f"{exc.strerror or exc} ({where})"


@contextlib.contextmanager
def os_errors(path: Path | str | None = None) -> Iterator[None]:
    """Turn OSError inside the block into a one-line RunFault."""
    try:
        yield
    except OSError as exc:
        raise RunFault(os_error_message(exc, path)) from None


def stage_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to PATH.tmp (flushed to disk) and return that name; `commit` renames it over
    `path`. On failure PATH.tmp is removed and nothing else has changed."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise RunFault(os_error_message(exc, path)) from None
        raise
    return tmp


def commit(tmp: Path, path: Path) -> None:
    with os_errors(path):
        os.replace(tmp, path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through PATH.tmp and a rename: `path` is never half-written."""
    commit(stage_bytes(path, data), path)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def ensure_folder(path: Path) -> None:
    """mkdir -p with a one-line error for a file in the way or a read-only parent."""
    if path.exists() and not path.is_dir():
        raise SafeMamlError(f"{path} is a file, not a folder; choose another --out")
    with os_errors(path):
        path.mkdir(parents=True, exist_ok=True)


# ---- checkpoints --------------------------------------------------------------------------


def checkpoint_bytes(state: dict[str, Any]) -> bytes:
    """A checkpoint serialised in memory (a full disk then fails at the write, with its errno)."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write a checkpoint atomically: a full disk leaves the old file and no tmp."""
    write_bytes_atomic(path, checkpoint_bytes(state))


def load_checkpoint(path: Path, keys: tuple[str, ...] = CHECKPOINT_KEYS) -> dict[str, Any]:
    """A checkpoint written by `save_checkpoint` (holding at least `keys`; a policy to start from
    needs only "params"), or a one-line SafeMamlError saying what is wrong."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise SafeMamlError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):  # a class or function reference: code that would run on load
            raise SafeMamlError(f"{path} is not a safemaml checkpoint: it holds objects other than tensors and "
                                "numbers, which are never loaded (they could run code)") from None
        raise SafeMamlError(f"{path} is not a safemaml checkpoint (damaged or not a torch file)") from None
    except OSError as exc:
        raise RunFault(os_error_message(exc, path)) from None
    except Exception:  # truncated, empty, random bytes: torch raises RuntimeError, EOFError, ValueError...
        raise SafeMamlError(f"{path} is not a safemaml checkpoint (empty, truncated or not a torch file)") from None
    if not isinstance(state, dict) or any(k not in state for k in keys):
        missing = [k for k in keys if not isinstance(state, dict) or k not in state]
        raise SafeMamlError(f"{path} is not a safemaml checkpoint (no {', '.join(missing)})")
    params = state["params"]
    if not isinstance(params, dict) or not all(isinstance(v, torch.Tensor) for v in params.values()):
        raise SafeMamlError(f"{path} is not a safemaml checkpoint (its params are not tensors)")
    return state


def check_params(params: dict, like: dict, path: Path) -> None:
    """The checkpoint's policy must have the shapes of `like` (this run's policy) and be finite."""
    import torch

    shapes = {k: tuple(v.shape) for k, v in params.items()}
    wanted = {k: tuple(v.shape) for k, v in like.items()}
    if shapes != wanted:
        raise SafeMamlError(f"{path} holds a policy of another shape than this run's (another task family or "
                            "policy size)")
    if not all(bool(torch.isfinite(v).all()) for v in params.values()):
        raise SafeMamlError(f"{path} holds non-finite parameters; use an earlier checkpoint from "
                            f"{path.parent / CHECKPOINTS if path.name == LAST else path.parent}")
