"""The cost of `safemaml study run --workers 2` on a tiny study (issue 27.2, docs/scaling.md).

A 4-trial nav2d cvar study with trials of a second or two, so that what is not training shows: run in turn,
`repeats` times, as one process and as --workers 2 (each worker on one core, one torch thread). Printed per
variant: the median wall time and CPU time (the command's processes together) and the finished trials. The
trials' parameters differ between the two (two workers share the sampling), so only the cost is compared.

    python benchmarks/study_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

FLAGS = ["--tasks", "nav2d", "--objective", "cvar", "--iterations", "2", "--set", "meta_batch_size=2",
         "--set", "fast_batch_size=2", "--set", "post_batch_size=2", "--set", "policy.hidden=[8,8]",
         "--trajectories", "2", "--grid=-0.5:0.5:0.5", "--seeds", "1", "--trials", "4", "--sampler-seed", "0",
         "--quiet"]
VARIANTS = {"one process": [], "--workers 2": ["--workers", "2"]}


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of the command and every process it started)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=os.environ | {"OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def finished(folder: Path) -> int:
    study = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder}/study.db")
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    trials: dict[str, list[int]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            for i, (name, extra) in enumerate(VARIANTS.items()):
                out = Path(tmp) / f"s{k}{i}"
                times[name].append(timed([sys.executable, "-m", "safemaml.cli.main", "study", "run", str(out),
                                          *FLAGS, *extra]))
                trials[name].append(finished(out))
    print(f"{'variant':14s} {'wall s':>7s} {'cpu s':>7s}  finished trials   (medians of {args.repeats})")
    for name, values in times.items():
        wall, cpu = statistics.median(w for w, _ in values), statistics.median(c for _, c in values)
        print(f"{name:14s} {wall:7.1f} {cpu:7.1f}  {trials[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
