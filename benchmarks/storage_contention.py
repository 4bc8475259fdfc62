"""Which local Optuna storage should a one-machine study or comparison use? (issue 27.4, docs/studies.md)

N worker processes (default 2, 4 and 8) run short real trials against one storage while a reader polls it as
`optuna-dashboard` or `safemaml study show` would (every trial with its attributes, every 0.5 s). Each trial
trains nav2d for one meta-iteration (a tiny policy and batch: seconds of CPU, so the storage is hit often)
and writes what a study trial writes: suggested parameters, intermediate values, user attributes, the result.
Storages compared, each on a fresh file:

- sqlite:    SQLite as `safemaml study run` opens it (SQLAlchemy's default journal, a 60 s busy timeout);
- sqlite-wal: the same file in write-ahead-log mode (readers do not block the writer);
- journal:   Optuna's JournalStorage on a file (append-only log with file locks; no heartbeat in Optuna 5).

Printed per storage and N: trials asked for, trials stored COMPLETE, FAIL or left RUNNING, duplicated trial
numbers, exceptions raised in workers and in the reader (with the first message), and throughput (complete
trials per minute of wall time). One run prints every cell side by side.

    python benchmarks/storage_contention.py [--workers 2 4 8] [--trials 4] [--storages sqlite sqlite-wal journal]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sqlite3
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def storage_for(kind: str, folder: Path):
    """An Optuna storage of `kind` on a file in `folder` (made the way the project would make it)."""
    import optuna

    from safemaml.studies.study import open_storage

    if kind == "journal":
        return open_storage(str(folder / "journal.log"))
    path = folder / "study.db"
    if kind == "sqlite-wal" and not path.exists():
        with sqlite3.connect(path) as db:  # WAL is a property of the file: set once, every connection uses it
            db.execute("PRAGMA journal_mode=WAL")
    assert kind in ("sqlite", "sqlite-wal"), kind
    storage = open_storage(f"sqlite:///{path}")
    assert isinstance(storage, optuna.storages.RDBStorage)
    return storage


def trial_body(trial, folder: Path) -> float:
    """One short real trial: nav2d, one meta-iteration, tiny batches; the writes a study trial makes."""
    import safemaml

    lr = trial.suggest_float("adapt.fast_lr", 0.01, 0.5, log=True)
    trial.suggest_float("beta", 0.05, 0.3)
    run = safemaml.train("nav2d", folder / f"run-{os.getpid()}-{trial.number}", iterations=1, meta_batch_size=4,
                         fast_batch_size=4, post_batch_size=4, policy__hidden=[16, 16], adapt__fast_lr=lr)
    post = float(run.metrics["post_return"].iloc[-1])
    for step in range(3):
        trial.report(post, step)
    for key in ("seed_0_post_return", "seed_0_violation_rate", "seed_0_mean_gamma", "host", "pid", "run"):
        trial.set_user_attr(key, post if key.startswith("seed") else str(os.getpid()))
    return post


def worker(kind: str, folder: str, trials: int, errors) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name="bench", storage=storage_for(kind, Path(folder)))
        study.optimize(lambda t: trial_body(t, Path(folder)), n_trials=trials, catch=(Exception,))
    except Exception as exc:  # the storage failed under the worker: count it, keep its first line
        errors.put(("worker", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
        traceback.print_exc(file=sys.stderr)


def reader(kind: str, folder: str, stop, errors) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="bench", storage=storage_for(kind, Path(folder)))
    while not stop.is_set():
        try:
            for t in study.get_trials(deepcopy=False):
                _ = (t.user_attrs, t.intermediate_values, t.params)
        except Exception as exc:
            errors.put(("reader", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
        time.sleep(0.5)


def measure(kind: str, workers: int, trials: int) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        optuna.create_study(study_name="bench", storage=storage_for(kind, Path(folder)),
                            sampler=optuna.samplers.RandomSampler(seed=0))
        errors, stop = ctx.Queue(), ctx.Event()
        poll = ctx.Process(target=reader, args=(kind, folder, stop, errors))
        poll.start()
        start = time.perf_counter()
        procs = [ctx.Process(target=worker, args=(kind, folder, trials, errors)) for _ in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        wall = time.perf_counter() - start
        stop.set()
        poll.join()
        found = optuna.load_study(study_name="bench", storage=storage_for(kind, Path(folder))).get_trials()
        raised = []
        while not errors.empty():
            raised.append(errors.get())
    states = Counter(t.state.name for t in found)
    numbers = Counter(t.number for t in found)
    return {"storage": kind, "workers": workers, "asked": workers * trials, "complete": states["COMPLETE"],
            "fail": states["FAIL"], "running": states["RUNNING"], "duplicates": sum(c - 1 for c in numbers.values()),
            "worker_errors": sum(1 for who, _ in raised if who == "worker"),
            "reader_errors": sum(1 for who, _ in raised if who == "reader"),
            "first_error": raised[0][1][:80] if raised else "", "per_min": 60 * states["COMPLETE"] / wall,
            "wall_s": wall}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--trials", type=int, default=4, help="trials per worker")
    parser.add_argument("--storages", nargs="+", default=["sqlite", "sqlite-wal", "journal"])
    args = parser.parse_args(argv)
    print(f"cpus {os.cpu_count()}; {args.trials} trials per worker; a reader polls every 0.5 s")
    header = (f"{'storage':11s} {'N':>2s} {'asked':>5s} {'done':>4s} {'fail':>4s} {'run':>3s} {'dup':>3s} "
              f"{'w-err':>5s} {'r-err':>5s} {'trials/min':>10s} {'wall s':>7s}  first error")
    print(header)
    for workers in args.workers:
        for kind in args.storages:
            r = measure(kind, workers, args.trials)
            print(f"{r['storage']:11s} {r['workers']:2d} {r['asked']:5d} {r['complete']:4d} {r['fail']:4d} "
                  f"{r['running']:3d} {r['duplicates']:3d} {r['worker_errors']:5d} {r['reader_errors']:5d} "
                  f"{r['per_min']:10.1f} {r['wall_s']:7.1f}  {r['first_error']}", flush=True)


if __name__ == "__main__":
    main()
