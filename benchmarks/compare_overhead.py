"""The cost of `safemaml compare`'s storage and --workers on a tiny comparison (issue 27, docs/scaling.md).

A 2-arm x 2-seed nav2d comparison with cells of a second or two, so that what is not training shows: run in
turn, `repeats` times, as (1) compare() in one process without a storage, (2) `safemaml compare` with its
default storage and one worker, (3) the same with --workers 2. Printed per variant: the median wall time and
CPU time (the command's processes together), and whether the three wrote the same comparison.csv.

    python benchmarks/compare_overhead.py [--repeats 3]
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

FLAGS = ["--tasks", "nav2d", "--objectives", "maml", "cvar", "--seeds", "0", "1", "--iterations", "2", "--beta", "0.3",
         "--delta", "0.5", "--set", "meta_batch_size=2", "--set", "fast_batch_size=2", "--set", "post_batch_size=2",
         "--set", "policy.hidden=[8,8]", "--trajectories", "2", "--repeats", "3", "--quiet"]
IN_PROCESS = """
import sys
from pathlib import Path
from safemaml import api
from safemaml.config import EvalRequest
from safemaml.runs.compare import compare
cfg = api.resolve_config(None, {"iterations": 2, "objective.beta": 0.3, "objective.delta": 0.5, "meta_batch_size": 2,
                                "fast_batch_size": 2, "post_batch_size": 2, "policy.hidden": [8, 8]}, tasks="nav2d")
compare(cfg, ["maml", "cvar"], Path(sys.argv[1]), EvalRequest(trajectories=2, repeats=3), quiet=True, seeds=[0, 1])
"""
VARIANTS = {
    "in one process, no storage": lambda out: [sys.executable, "-c", IN_PROCESS, str(out)],
    "storage, 1 worker": lambda out: [sys.executable, "-m", "safemaml.cli.main", "compare", *FLAGS, "--out", str(out)],
    "storage, --workers 2": lambda out: [sys.executable, "-m", "safemaml.cli.main", "compare", *FLAGS, "--out",
                                         str(out), "--workers", "2"],
}


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of the command and every process it started)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=os.environ | {"OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            for i, (name, command) in enumerate(VARIANTS.items()):
                out = Path(tmp) / f"{k}-{i}"
                times[name].append(timed(command(out)))
                tables[name] = (out / "comparison.csv").read_bytes()
    print(f"{'variant':28s} {'wall s':>7s} {'cpu s':>7s}   (medians of {args.repeats})")
    for name, values in times.items():
        wall, cpu = statistics.median(w for w, _ in values), statistics.median(c for _, c in values)
        print(f"{name:28s} {wall:7.1f} {cpu:7.1f}")
    print("comparison.csv the same in all three:", len(set(tables.values())) == 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
