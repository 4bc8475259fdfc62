"""N local worker processes on one machine (`safemaml compare --workers N`, `safemaml study run --workers N`).

Each worker is a fresh Python process (multiprocessing's spawn: nothing shared with the parent but its
arguments), pinned to its own share of the cores this process may use (os.sched_getaffinity: what a SLURM
allocation or `taskset` grants, not the whole machine), with torch's threads and MuJoCo's stepping threads set
to that share: N × threads ≤ cores, so that the workers do not oversubscribe the machine. The workers meet
only in the storage (safemaml.studies.cells, or the study's Optuna storage); the parent waits for them and passes Ctrl-C or SIGTERM on
as SIGTERM, which each worker handles as Ctrl-C (its cell is queued again at once).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from safemaml.envs.mujoco_batch import usable_cores
from safemaml.errors import SafeMamlError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def shares(workers: int) -> list[list[int]]:
    """The cores of each worker: the usable cores split into `workers` equal, disjoint parts (a remainder
    is left idle rather than given to some workers, so that all run at the same pace)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(usable_cores()))
    if not 1 <= workers <= len(cores):
        raise SafeMamlError(f"--workers must be between 1 and the {len(cores)} cores this process may use, "
                            f"got {workers}")
    each = len(cores) // workers
    return [cores[i * each:(i + 1) * each] for i in range(workers)]


def run(workers: int, target: Callable[..., int], kwargs: dict[str, Any], index_as: str | None = None) -> int:
    """Run target(**kwargs) in `workers` processes, each on its share of the cores; the largest exit code
    (1 for a worker killed by a signal). With `index_as`, worker i also gets the keyword index_as=i."""
    context = multiprocessing.get_context("spawn")
    processes = []
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    try:
        for index, cores in enumerate(shares(workers)):
            os.environ.update({name: str(len(cores)) for name in THREAD_VARIABLES})  # read as torch starts
            own = {**kwargs, index_as: index} if index_as else kwargs
            process = context.Process(target=_child, args=(target, own, cores), name=f"safemaml-worker-{cores[0]}")
            process.start()
            processes.append(process)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process in processes:
            process.join()
        raise
    return max(code if code is not None and code >= 0 else 1 for code in (p.exitcode for p in processes))


def _interrupt_once(signum: int, frame: object) -> None:
    """The first SIGINT or SIGTERM stops the worker as Ctrl-C does; later ones (the parent passing the same
    Ctrl-C on) are ignored, so that the worker can queue its cell again undisturbed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _child(target: Callable[..., int], kwargs: dict[str, Any], cores: list[int]) -> None:
    signal.signal(signal.SIGINT, _interrupt_once)
    signal.signal(signal.SIGTERM, _interrupt_once)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    import torch

    torch.set_num_threads(len(cores))
    try:
        code = target(**kwargs)
    except SafeMamlError as exc:
        print(f"safemaml: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
