"""Arguments checked at the door: types and ranges of what the API and the commands are given.

A caller of the Python API who passes a number where a path belongs, or a tuple where a grid string
belongs, gets a SafeMamlError that names the argument (as the command-line flags do), never a
TypeError or AttributeError from deep inside. Seeds are bounded: torch's generators take at most
64-bit seeds and sampling adds small offsets, so a seed is an integer in [0, MAX_SEED].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safemaml.errors import SafeMamlError

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes < 2**64; room for the offsets sampling adds


def _what(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def path_arg(value: Any, name: str) -> Path:
    """A path given as str or os.PathLike, not empty."""
    if isinstance(value, bool) or not isinstance(value, (str, Path)) and not hasattr(value, "__fspath__"):
        raise SafeMamlError(f"{name} must be a path (str or pathlib.Path), got {_what(value)}")
    if not str(value).strip():
        raise SafeMamlError(f"{name} must name a folder, got an empty string")
    return Path(value)


def int_arg(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    """An int (not a bool, not a float) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SafeMamlError(f"{name} must be an integer, got {_what(value)}")
    if low is not None and value < low:
        raise SafeMamlError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise SafeMamlError(f"{name} must be <= {high}, got {value}")
    return value


def seed_arg(value: Any, name: str = "seed") -> int:
    return int_arg(value, name, 0, MAX_SEED)


def float_arg(value: Any, name: str) -> float:
    """A finite real number (an int is accepted and converted)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SafeMamlError(f"{name} must be a number, got {_what(value)}")
    if not math.isfinite(value):
        raise SafeMamlError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def bool_arg(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise SafeMamlError(f"{name} must be True or False, got {_what(value)}")
    return value


def str_arg(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise SafeMamlError(f"{name} must be a string, got {_what(value)}")
    return value


def optional(check, value: Any, name: str, *args: Any) -> Any:
    """`check(value, name, *args)` unless value is None."""
    return None if value is None else check(value, name, *args)


def check_eval_request(request: Any) -> None:
    """Every field of an evaluation request (safemaml.config.EvalRequest) has its type and range, so that
    `safemaml.evaluate(run, grid=(0, 1, 0.5))` is a SafeMamlError that names `grid`."""
    optional(str_arg, request.grid, "grid")
    optional(int_arg, request.sample, "sample", 1)
    seed_arg(request.task_seed, "task_seed")
    int_arg(request.trajectories, "trajectories", 1)
    optional(int_arg, request.repeats, "repeats", 1)
    seed_arg(request.seed, "seed")
    for name in ("beta", "delta"):
        value = optional(float_arg, getattr(request, name), name)
        if value is not None and not 0 < value < 1:
            raise SafeMamlError(f"{name} must be in (0, 1), got {value}")
    str_arg(request.device, "device")


def check_output_file(out: Path, formats: Sequence[str], kind: str, example: str, joiner: str = ", ") -> None:
    """Refuse, before any work, an output file name that cannot be written: a format not in `formats`, a
    folder, or a missing parent folder (`kind` names the file in the message, `example` a good name)."""
    if out.suffix.lower() not in formats:
        raise SafeMamlError(f"--out {out}: the {kind}'s name must end in {joiner.join(formats)}")
    if out.is_dir():
        raise SafeMamlError(f"--out {out} is a folder; name a file such as {out / example}")
    if not out.parent.is_dir():
        raise SafeMamlError(f"--out {out}: the folder {out.parent} does not exist")
