"""A comparison's cells, one per (arm, seed), as units of work shared through an Optuna storage.

Any number of `safemaml compare` processes, on one machine or several, given the same request and the same
storage, work through the same cells; when the last cell is done, any of them (or `safemaml compare show`)
writes the tables from the storage alone. The storage is an Optuna RDB storage: SQLite in DIR by default (one
machine), PostgreSQL for several (safemaml.studies.study.open_storage).

In the storage a comparison is one Optuna study (named after DIR unless `--name` says otherwise):

- its user attributes hold the request (safemaml.runs.compare.Comparison as JSON) and its record
  (safemaml.runs.compare_request.record, what makes two comparisons the same); a process with another request
  is refused before it does anything;
- each cell is a trial, queued WAITING with user attributes `arm` and `seed`. A worker claims one by moving it
  WAITING -> RUNNING, a single row update under the database's row lock (Optuna's own way of handing out
  queued trials), so two workers cannot both claim it; it records a heartbeat at once and then every
  `heartbeat` seconds while it trains and evaluates, and completes the trial with the cell's results as user
  attribute RESULT_ATTR (the per-seed rows, per-task Γ and evaluation summaries: safemaml.runs.compare.run_cell).

A worker that dies stops heartbeating: the next worker that looks after the grace period fails its trial and
queues a retry (Optuna's RetryHeartbeatStaleTrialCallback, up to safemaml.studies.study.MAX_RETRY times; after
that, or after a cell failed with an error, running the command again queues it again). The retry continues
the cell's run folder from its last.pt where that folder is on the retrying machine's disk, and starts afresh
where it is not. Two workers that queue the same missing cell at the same moment make two trials for it: of a
cell's trials only the lowest-numbered one that is not FAIL may run, so a worker that claims another fails it
as surplus at once, before any training. A worker whose heartbeat lapsed (its trial failed by another worker,
say after the database was unreachable for longer than the grace period) stops its cell at the next beat and
leaves it to the retry: no cell is trained twice to completion.

A journal file (Optuna's JournalStorage) keeps no heartbeats, so a dead worker's cell could never be retried;
it is refused here.
"""

from __future__ import annotations

import _thread
import json
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from safemaml.errors import RunFault, SafeMamlError
from safemaml.runs import compare_request
from safemaml.runs.compare import Comparison, cell_name, run_cell, write_tables
from safemaml.studies.study import MAX_CONSECUTIVE_FAILURES, _safe, open_storage

REQUEST_ATTR = "safemaml_comparison_record"  # what makes two comparisons the same (compare_request.record)
COMPARISON_ATTR = "safemaml_comparison"  # the latest command's request in full (its seeds): what `show` tabulates
RESULT_ATTR = "result"
ALIVE = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)
POLL_SECONDS = 2.0  # how often a worker with nothing to claim looks again while other workers finish
Cell = tuple[str, int]


def default_storage(out: Path) -> str:
    """The storage of a comparison on one machine: an SQLite file in its folder."""
    return f"sqlite:///{(out / compare_request.STORAGE_FILES[0]).resolve()}"


def check_storage(url: str, heartbeat: int, grace: int) -> None:
    """What open_cell_storage refuses without touching anything: a journal file, heartbeat and grace times."""
    if not 1 <= heartbeat < grace <= 60:
        raise SafeMamlError(f"need 1 <= --heartbeat ({heartbeat} s) < --grace ({grace} s) <= 60")
    if "://" not in url:
        raise SafeMamlError(f"--storage {url!r}: compare needs a database URL (sqlite:///FILE, "
                            "postgresql://USER@HOST/DB): a journal file keeps no heartbeats, so a dead worker's "
                            "cell could not be retried")


def open_cell_storage(url: str, heartbeat: int = 10, grace: int = 30) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats and retries of stale trials; a journal file is refused (no heartbeats)."""
    check_storage(url, heartbeat, grace)
    return open_storage(url, heartbeat, grace)


# ---- the comparison's study ----------------------------------------------------------------------------


def open_comparison(storage: optuna.storages.BaseStorage, name: str,
                    comparison: Comparison | None, wait: float = 20.0) -> tuple[optuna.Study, Comparison]:
    """Create the comparison's study with this request, or load it and check that the request is the same.

    The same means compare_request's record: other --seeds (or another device) are the same comparison, as
    they are for its folder; each command works through its own seeds' cells, and `compare show` writes the
    tables of the latest command's seeds. `comparison` None (compare show) means "the stored request". Workers
    that start together race to create the study: one does and writes the request, the others wait for it up
    to `wait` seconds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        exists = name in optuna.get_all_study_names(storage)
        if not exists and comparison is None:
            raise SafeMamlError(f"the storage holds no comparison {name!r}")
        created = False
        if not exists:
            try:
                study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
                created = True
            except optuna.exceptions.DuplicatedStudyError:  # another worker created it a moment ago
                pass
        if not created:
            study = optuna.load_study(study_name=name, storage=storage)
    if created:
        assert comparison is not None
        study.set_user_attr(COMPARISON_ATTR, comparison.to_json())
        study.set_user_attr(REQUEST_ATTR, _record(comparison))  # last: the others wait for it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["post-update return on p(T)"])  # read by optuna-dashboard
        return study, comparison
    record, stored = _stored_request(study, name, wait)
    if comparison is None:
        return study, stored
    _refuse_another(record, comparison, name)
    if comparison.to_json() != stored.to_json():  # other seeds: `compare show` follows the latest command
        study.set_user_attr(COMPARISON_ATTR, comparison.to_json())
    return study, comparison


def check_request(storage: optuna.storages.BaseStorage, name: str, comparison: Comparison) -> None:
    """Refuse, reading only, a storage whose comparison `name` was made with another request."""
    if name in optuna.get_all_study_names(storage):
        record = optuna.load_study(study_name=name, storage=storage).user_attrs.get(REQUEST_ATTR)
        if record is not None:
            _refuse_another(record, comparison, name)


def _refuse_another(record: str, comparison: Comparison, name: str) -> None:
    if record != _record(comparison):
        difference = compare_request.difference(json.loads(record), json.loads(_record(comparison)))
        raise SafeMamlError(f"comparison {name!r} in this storage was made with another request ({difference}); "
                            "run it with its own settings, or choose another --out or --name")


def _record(comparison: Comparison) -> str:
    return json.dumps(comparison.record(), sort_keys=True)


def _stored_request(study: optuna.Study, name: str, wait: float) -> tuple[str, Comparison]:
    deadline = time.monotonic() + wait
    while True:
        record, text = study.user_attrs.get(REQUEST_ATTR), study.user_attrs.get(COMPARISON_ATTR)
        if record is not None and text is not None:
            return record, Comparison.from_json(text)
        if study.trials or time.monotonic() > deadline:
            raise SafeMamlError(f"the storage holds a study {name!r} that is not a comparison; choose another "
                                "--name")
        time.sleep(0.2)
        study = optuna.load_study(study_name=name, storage=study._storage)


def _cell(trial: FrozenTrial) -> Cell | None:
    arm, seed = trial.user_attrs.get("arm"), trial.user_attrs.get("seed")
    return (arm, seed) if isinstance(arm, str) and isinstance(seed, int) else None


def trials_by_cell(study: optuna.Study, comparison: Comparison) -> dict[Cell, list[FrozenTrial]]:
    """Every cell's trials in the order they were made (a trial of no cell of this request is left out)."""
    out: dict[Cell, list[FrozenTrial]] = {cell: [] for cell in comparison.cells()}
    for trial in study.get_trials(deepcopy=False):
        cell = _cell(trial)
        if cell in out:
            out[cell].append(trial)
    return out


def queue_missing(study: optuna.Study, comparison: Comparison) -> int:
    """Queue every cell that has no trial waiting, running or complete; the number queued."""
    missing = [cell for cell, trials in trials_by_cell(study, comparison).items()
               if not any(t.state in ALIVE for t in trials)]
    for arm, seed in missing:
        study.enqueue_trial({}, user_attrs={"arm": arm, "seed": seed})
    return len(missing)


def fail_stale(study: optuna.Study) -> None:
    """Fail the trials of workers whose heartbeat is older than the grace period, and queue their retries."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def results(study: optuna.Study, comparison: Comparison) -> dict[Cell, dict]:
    """The results of the cells that are done (one COMPLETE trial each; the first if ever more)."""
    out = {}
    for cell, trials in trials_by_cell(study, comparison).items():
        done = [t for t in trials if t.state == TrialState.COMPLETE and RESULT_ATTR in t.user_attrs]
        if done:
            out[cell] = done[0].user_attrs[RESULT_ATTR]
    return out


# ---- claiming and running one cell ----------------------------------------------------------------------


def claim(study: optuna.Study, comparison: Comparison) -> FrozenTrial | None:
    """Claim the first waiting cell (in the request's order: seed by seed, arm by arm); None if none waits."""
    storage = study._storage
    for cell, trials in trials_by_cell(study, comparison).items():
        for trial in trials:
            if trial.state != TrialState.WAITING or not storage.set_trial_state_values(trial._trial_id,
                                                                                       TrialState.RUNNING):
                continue
            cast(Any, storage).record_heartbeat(trial._trial_id)  # an RDB storage: BaseHeartbeat
            earlier = [t for t in trials_by_cell(study, comparison)[cell]
                       if t.number < trial.number and t.state in ALIVE]
            if earlier:  # the cell was queued twice at once: the lower trial is its own
                storage.set_trial_user_attr(trial._trial_id, "surplus", f"cell held by trial {earlier[0].number}")
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                continue
            return storage.get_trial(trial._trial_id)
    return None


class Heartbeat:
    """Records the claimed trial's heartbeat every `interval` seconds in a thread while the cell runs.

    If the trial is no longer RUNNING (another worker failed it after a lapse longer than the grace period and
    queued its retry), it sets `lost` and interrupts the main thread with SIGINT (KeyboardInterrupt there,
    even inside a sleep): the cell is left to the retry instead of being trained twice. While the block runs,
    SIGINT is handled here: for a lost cell it raises KeyboardInterrupt; any other SIGINT (Ctrl-C) gets what
    the handler before it would have done (ignored in a background job, Ctrl-C's KeyboardInterrupt else)."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="safemaml-heartbeat", daemon=True)
        self._previous: Any = None
        self._main = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> Heartbeat:
        if self._main:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._main:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.lost or self._previous in (signal.SIG_DFL, None):
            raise KeyboardInterrupt
        if callable(self._previous):
            self._previous(signum, frame)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.storage.get_trial(self.trial_id).state != TrialState.RUNNING:
                    self.lost = True
                    if self._main:
                        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
                    else:
                        _thread.interrupt_main()
                    return
                cast(Any, self.storage).record_heartbeat(self.trial_id)
            except Exception:  # noqa: BLE001  the database unreachable for a moment: try at the next beat
                continue


def requeue(study: optuna.Study, trial_id: int) -> None:
    """Fail an interrupted cell's trial and queue its retry at once (not after the grace period)."""
    storage = study._storage
    try:
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return
    except optuna.exceptions.UpdateFinishedTrialError:  # failed by another worker already, which queued the retry
        return
    RetryHeartbeatStaleTrialCallback(max_retry=None)(study, storage.get_trial(trial_id))


@dataclass
class Report:
    """What one worker did: cells it finished, cells that failed here (name -> reason)."""

    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)


def run_claimed(study: optuna.Study, comparison: Comparison, trial: FrozenTrial, out: Path, quiet: bool,
                heartbeat: float, report: Report, say: Callable[[str], None]) -> str:
    """Run a claimed cell to its results: "done", "failed" (a diverged training: FAIL with its reason) or
    "lost" (taken over by another worker). Ctrl-C fails it and queues its retry before the interrupt goes on."""
    storage, cell = study._storage, _cell(trial)
    assert cell is not None
    name = cell_name(comparison, *cell)
    storage.set_trial_user_attr(trial._trial_id, "host", f"{socket.gethostname()} pid {os.getpid()}")
    say(f"cell {name}: claimed (trial {trial.number})")
    start = time.monotonic()
    beat = Heartbeat(storage, trial._trial_id, heartbeat)
    try:
        with beat:
            result = run_cell(comparison, out, *cell, quiet=quiet)
    except KeyboardInterrupt:
        if beat.lost:
            report.lost.append(name)
            say(f"cell {name}: taken over by another worker after a lapse of this worker's heartbeat; left to it")
            return "lost"
        requeue(study, trial._trial_id)
        raise
    except SafeMamlError as exc:
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", str(exc))
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        report.failed[name] = str(exc)
        say(f"cell {name}: failed: {exc}")
        return "failed"
    result["seconds"] = round(time.monotonic() - start, 3)
    try:
        storage.set_trial_user_attr(trial._trial_id, RESULT_ATTR, result)
        storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE,
                                       values=[result["task_sets"][""]["row"]["post_return"]])
    except optuna.exceptions.UpdateFinishedTrialError:  # failed by another worker since the last beat
        report.lost.append(name)
        return "lost"
    report.done.append(name)
    say(f"cell {name}: done in {result['seconds'] / 60:.1f} min")
    return "done"


# ---- the worker ----------------------------------------------------------------------------------------


def work(study: optuna.Study, comparison: Comparison, out: Path, quiet: bool = False, heartbeat: float = 10.0,
         say: Callable[[str], None] | None = None) -> Report:
    """Work through the comparison's cells until every one is done, or none is left that this worker could
    claim or wait for (the others failed). While the last cells run in other workers it waits, so that it can
    take over a dead worker's cell once its grace period has passed."""
    say = say or (lambda text: None)
    report, failures, waiting_said = Report(), 0, False
    fail_stale(study)
    queue_missing(study, comparison)
    while True:
        fail_stale(study)
        trial = claim(study, comparison)
        if trial is None:
            by_cell = trials_by_cell(study, comparison)
            if all(any(t.state == TrialState.COMPLETE for t in ts) for ts in by_cell.values()):
                return report
            running = [cell_name(comparison, *c) for c, ts in by_cell.items()
                       if any(t.state == TrialState.RUNNING for t in ts)]
            if not running:
                return report
            if not waiting_said:
                say(f"waiting for {len(running)} cell(s) running in other workers: {', '.join(running)}")
                waiting_said = True
            time.sleep(min(heartbeat, POLL_SECONDS))
            continue
        waiting_said = False
        outcome = run_claimed(study, comparison, trial, out, quiet, heartbeat, report, say)
        failures = 0 if outcome == "done" else failures + (outcome == "failed")
        if failures >= MAX_CONSECUTIVE_FAILURES:
            raise RunFault(f"{failures} cells in a row failed here (last: {list(report.failed.values())[-1]})")


def finish(study: optuna.Study, comparison: Comparison, out: Path, url: str) -> list[dict]:
    """Write the tables from the storage when every cell is done; else a one-line fault naming what is missing."""
    done = results(study, comparison)
    missing = [cell for cell in comparison.cells() if cell not in done]
    if not missing:
        return write_tables(comparison, done, out)
    by_cell = trials_by_cell(study, comparison)
    reasons = []
    for cell in missing:
        trials = by_cell[cell]
        last = trials[-1] if trials else None
        why = ("not started" if last is None else last.user_attrs.get("fail_reason") or last.state.name.lower())
        reasons.append(f"{cell_name(comparison, *cell)} ({why})")
    raise RunFault(f"{len(missing)} of {len(comparison.cells())} cells are not done: {'; '.join(reasons[:4])}"
                   f"{'; ...' if len(reasons) > 4 else ''}. Run the same command again to retry them (storage "
                   f"{_safe(url)})")


def status(study: optuna.Study, comparison: Comparison) -> str:
    """One line per cell: its state, the worker that holds or held it, its time."""
    lines = []
    for cell, trials in trials_by_cell(study, comparison).items():
        last = trials[-1] if trials else None
        state = "not queued" if last is None else last.state.name.lower()
        where = f" on {last.user_attrs['host']}" if last is not None and "host" in last.user_attrs else ""
        seconds = last.user_attrs.get(RESULT_ATTR, {}).get("seconds") if last is not None else None
        took = f", {seconds / 60:.1f} min" if seconds is not None else ""
        lines.append(f"  {cell_name(comparison, *cell)}: {state}{where}{took}")
    return "\n".join(lines)


def pool_worker(url: str, name: str, out: str, quiet: bool, heartbeat: int, grace: int) -> int:
    """One of `--workers N` local processes (safemaml.studies.pool): open the storage and work."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, comparison = open_comparison(open_cell_storage(url, heartbeat, grace), name, None)
    report = work(study, comparison, Path(out), quiet, heartbeat, _stderr if not quiet else None)
    return 1 if report.failed else 0


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
