"""What sharing a comparison's cells through a storage costs (issue 27, docs/scaling.md).

A comparison the size of the HalfCheetahVel one (7 arms x 6 seeds, p(T) and the band) is queued in a fresh
storage; one process then claims each cell, records heartbeats, stores the cell's results (the committed
HalfCheetahVel cvar/seed-0 evaluation summaries and per-task Γ, so the payload has the real size) and completes
it, as safemaml.studies.cells does; then the tables and figures are written from the storage alone, as
`safemaml compare show` does. Printed per storage: milliseconds per cell (claim to complete, heartbeat, and the
storage's own reading: what a worker does between two cells) and the seconds to write the tables, side by
side with the median HalfCheetahVel cell (24 minutes, experiments/results/comparison-halfcheetah-vel/timings.txt)
as a fraction. No training runs: the cells' work is what the timings file measured.

    python benchmarks/cell_storage.py [--postgres postgresql://USER@HOST/DB]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HCV = ROOT / "experiments" / "results" / "comparison-halfcheetah-vel"
CELL_MINUTES = 24.0  # median of the 36 cells without a stop or resume in HCV/timings.txt (train + p(T) + band)
ARMS = ["maml", "maml-alpha", "maml-std", "lagrangian", "cvar", "quantile", "cvar-neutral"]


def payload() -> dict:
    """A cell's results as run_cell returns them, from the committed HalfCheetahVel cvar/seed-0 evaluations."""
    from safemaml.runs.compare import _row, task_gammas

    run = HCV / "compare" / "cvar" / "seed-0"
    sets = {}
    for suffix, folder in (("", "eval"), ("-band", "eval-band")):
        summary = json.loads((run / folder / "summary.json").read_text())
        sets[suffix] = {"row": _row(summary), "task_gammas": task_gammas(run / folder).tolist(), "summary": summary,
                        "seconds": 600.0}
    return {"trained_iterations": 20, "train_seconds": 600.0, "torch_threads": 1, "task_sets": sets, "seconds": 1440.0}


def comparison():
    """7 nav2d arms x 6 seeds with the band (a request of the HalfCheetahVel comparison's shape)."""
    from safemaml import config as config_io
    from safemaml.config import EvalRequest
    from safemaml.runs.compare import Comparison

    cfg = config_io.preset("nav2d")
    arms = {name: {"objective.name": "maml"} for name in ARMS}
    return Comparison.make(cfg, arms, EvalRequest(repeats=60), seeds=list(range(6)), band="-0.5:0.5:0.5")


def measure(url: str, out: Path) -> dict[str, float]:
    import optuna

    from safemaml.studies import cells

    storage, name = cells.open_cell_storage(url), f"bench-{uuid.uuid4().hex[:8]}"
    study, comp = cells.open_comparison(storage, name, comparison())
    cells.queue_missing(study, comp)
    result, per_cell, beats = payload(), [], []
    for _ in comp.cells():
        start = time.perf_counter()
        cells.fail_stale(study)
        trial = cells.claim(study, comp)
        assert trial is not None
        for _ in range(3):
            t = time.perf_counter()
            study._storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
            beats.append(time.perf_counter() - t)
        study._storage.set_trial_user_attr(trial._trial_id, cells.RESULT_ATTR, result)
        study._storage.set_trial_state_values(trial._trial_id, cells.TrialState.COMPLETE, values=[0.0])
        per_cell.append(time.perf_counter() - start - sum(beats[-3:]))
    start = time.perf_counter()
    cells.finish(study, comp, out, url)
    tables = time.perf_counter() - start
    optuna.delete_study(study_name=name, storage=storage)
    return {"cell_ms": 1e3 * statistics.median(per_cell), "cell_max_ms": 1e3 * max(per_cell),
            "heartbeat_ms": 1e3 * statistics.median(beats), "tables_s": tables, "cells": len(per_cell)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="also measure a PostgreSQL storage at this URL")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        storages = {"sqlite (the default)": f"sqlite:///{tmp}/comparison.db"}
        if args.postgres:
            storages["postgresql"] = args.postgres
        print(f"{'storage':22s} {'cells':>5s} {'ms/cell':>8s} {'max':>7s} {'ms/beat':>8s} {'tables s':>9s} "
              f"{'overhead / 24-min cell':>23s}")
        for name, url in storages.items():
            m = measure(url, Path(tmp) / name.split()[0])
            share = (m["cell_ms"] / 1e3 + m["tables_s"] / m["cells"]) / (CELL_MINUTES * 60)
            print(f"{name:22s} {m['cells']:5d} {m['cell_ms']:8.1f} {m['cell_max_ms']:7.1f} {m['heartbeat_ms']:8.2f} "
                  f"{m['tables_s']:9.2f} {share:23.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
