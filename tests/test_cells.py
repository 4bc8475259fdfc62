"""`safemaml compare` as workers over a storage (safemaml.studies.cells, safemaml.studies.pool): real Optuna storages
(SQLite, PostgreSQL), real worker processes started, killed and interrupted, real trainings on nav2d (tiny)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import torch
from helpers import interruptible, wait_for

from safemaml.cli.main import main
from safemaml.envs.mujoco_batch import usable_cores

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = ["compare", "--tasks", "nav2d", "--objectives", "maml", "cvar", "--seeds", "0", "1", "--beta", "0.3",
        "--delta", "0.5", "--set", "meta_batch_size=2", "--set", "fast_batch_size=2", "--set", "post_batch_size=2",
        "--set", "policy.hidden=[8,8]", "--trajectories", "2", "--repeats", "3", "--quiet"]
CELLS = [("maml", 0), ("cvar", 0), ("maml", 1), ("cvar", 1)]
POSTGRES_URL = os.environ.get("SAFEMAML_TEST_POSTGRES_URL")
State = optuna.trial.TrialState
COMPLETE, FAIL, RUNNING, WAITING = State.COMPLETE, State.FAIL, State.RUNNING, State.WAITING


def command(*args, iterations=2):
    return [*TINY, "--iterations", str(iterations), *args]


def worker(*args, iterations=2):
    """A `safemaml compare` in its own process, on one thread (as the test suite's other processes)."""
    return subprocess.Popen([sys.executable, "-m", "safemaml.cli.main", *command(*args, iterations=iterations)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})


def trials(out, storage=None, name=None):
    study = optuna.load_study(study_name=name or out.name, storage=storage or f"sqlite:///{out}/comparison.db")
    return study.trials


def cells_of(ts, state=COMPLETE):
    return [(t.user_attrs["arm"], t.user_attrs["seed"]) for t in ts if t.state == state]


def table(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def metrics_rows(out, arm, seed):
    return (out / arm / f"seed-{seed}" / "metrics.csv").read_text().splitlines()


def snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.skipif(not POSTGRES_URL, reason="SAFEMAML_TEST_POSTGRES_URL not set (.ci/run sets it)")
def test_two_workers_share_a_postgresql_comparison_and_show_rebuilds_it_without_runs(tmp_path, capsys):
    name = f"test-{uuid.uuid4().hex[:8]}"
    out, elsewhere = tmp_path / "cmp", tmp_path / "elsewhere"
    try:
        workers = [worker("--out", str(out), "--storage", POSTGRES_URL, "--name", name) for _ in range(2)]
        outputs = [w.communicate(timeout=300) for w in workers]
        assert [w.returncode for w in workers] == [0, 0], [o[1] for o in outputs]
        ts = trials(out, POSTGRES_URL, name)
        assert sorted(cells_of(ts)) == sorted(CELLS)
        assert all("surplus" in t.user_attrs for t in ts if t.state != COMPLETE)
        assert all(t.user_attrs["result"]["trained_iterations"] == 2 for t in ts if t.state == COMPLETE)
        assert all(len(metrics_rows(out, arm, seed)) == 3 for arm, seed in CELLS)
        assert not (out / "comparison.db").exists()
        capsys.readouterr()
        assert main(["compare", "show", str(elsewhere), "--storage", POSTGRES_URL, "--name", name]) == 0
        assert capsys.readouterr().out == (out / "comparison.md").read_text() == outputs[0][0]
        for table_name in ("comparison.csv", "comparison_objectives.csv"):
            assert (elsewhere / table_name).read_bytes() == (out / table_name).read_bytes()
        assert sorted(p.name for p in elsewhere.iterdir() if p.is_dir()) == []  # no run folder there
    finally:
        optuna.delete_study(study_name=name, storage=POSTGRES_URL)


def test_a_killed_workers_cell_is_retried_continues_its_run_and_a_rerun_changes_nothing(tmp_path, capsys):
    out = tmp_path / "cmp"
    beat = ["--heartbeat", "1", "--grace", "2"]
    w = worker("--out", str(out), *beat, iterations=4)
    run = out / "maml" / "seed-0"
    wait_for(run / "last.pt", w)
    w.send_signal(signal.SIGKILL)
    w.wait()
    saved = torch.load(run / "last.pt", weights_only=True)["iteration"] + 1
    kept = metrics_rows(out, "maml", 0)[:saved + 1]
    assert [t.state for t in trials(out)] == [RUNNING] + [WAITING] * 3
    # the same command again: it runs the other cells, then takes the dead worker's cell after the grace period
    again = worker("--out", str(out), *beat, iterations=4)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    ts = trials(out)
    killed = ts[0]
    assert killed.state == FAIL and cells_of(ts[:1], FAIL) == [("maml", 0)]
    retry = [t for t in ts if t.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].state == COMPLETE
    assert retry[0].user_attrs["result"]["trained_iterations"] == 4 - saved  # continued from last.pt
    assert metrics_rows(out, "maml", 0)[:saved + 1] == kept and len(metrics_rows(out, "maml", 0)) == 5
    assert sorted(cells_of(ts)) == sorted(CELLS) and len(ts) == 5
    rows = table(out / "comparison.csv")
    assert [(r["objective"], int(r["seed"])) for r in rows] == CELLS  # complete, no duplicate row
    # a rerun of the finished comparison changes nothing: no file, no trial
    before = snapshot(out)
    capsys.readouterr()
    assert main(command("--out", str(out), *beat, iterations=4)) == 0
    assert capsys.readouterr().out == (out / "comparison.md").read_text()
    assert snapshot(out) == before and len(trials(out)) == 5
    # another comparison into the same folder (and storage) is refused with one line, nothing written
    assert main(command("--out", str(out), "--trajectories", "3", iterations=4)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0] and "trajectories" in err[0], err
    assert snapshot(out) == before and len(trials(out)) == 5


def test_another_comparison_in_the_same_storage_is_refused_before_its_folder_is_touched(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    assert main(command("--out", str(tmp_path / "a"), "--storage", storage, "--name", "c", "--seeds", "0")) == 0
    assert main(command("--out", str(tmp_path / "b"), "--storage", storage, "--name", "c", "--seeds", "0",
                        "--repeats", "4")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "comparison 'c' in this storage was made with another request" in err[0], err
    assert "repeats" in err[0] and not (tmp_path / "b").exists()


@pytest.mark.skipif(usable_cores() < 2, reason="--workers 2 needs two cores")
def test_workers_pool_splits_the_cores_each_cell_once_and_show_rebuilds_it_from_the_storage(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", str(usable_cores()))  # what a worker would take if the pool set nothing
    out = tmp_path / "cmp"
    assert main(command("--out", str(out), "--workers", "2")) == 0
    ts = trials(out)
    assert sorted(cells_of(ts)) == sorted(CELLS)  # every cell complete, none twice
    assert all("surplus" in t.user_attrs for t in ts if t.state != COMPLETE)  # only a cell queued twice at once
    done = [t for t in ts if t.state == COMPLETE]
    assert {t.user_attrs["result"]["torch_threads"] for t in done} == {usable_cores() // 2}  # 2 x threads <= cores
    assert f"pid {os.getpid()}" not in " ".join(t.user_attrs["host"] for t in done)  # ran in the worker processes
    assert all(t.user_attrs["result"]["trained_iterations"] == 2 for t in done)  # trained once, all by its worker
    assert all(len(metrics_rows(out, arm, seed)) == 3 for arm, seed in CELLS)
    assert [(r["objective"], int(r["seed"])) for r in table(out / "comparison.csv")] == CELLS
    # the tables from the storage alone, in a folder without the run folders
    elsewhere = tmp_path / "elsewhere"
    (out / "comparison.db").rename(tmp_path / "moved.db")
    assert main(["compare", "show", str(elsewhere), "--storage", f"sqlite:///{tmp_path / 'moved.db'}",
                 "--name", "cmp"]) == 0
    for name in ("comparison.md", "comparison.csv", "comparison_objectives.csv", "config.json"):
        assert (elsewhere / name).read_bytes() == (out / name).read_bytes(), name
    assert (elsewhere / "comparison.png").stat().st_size > 10_000
    assert not any(p.is_dir() for p in elsewhere.iterdir())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_worker_queues_its_cell_again_at_once(tmp_path, signum):
    out = tmp_path / "cmp"
    w = worker("--out", str(out), iterations=30)
    wait_for(out / "maml" / "seed-0" / "last.pt", w)
    w.send_signal(signum)
    _, err = w.communicate(timeout=60)
    assert w.returncode == 130 and "run the same command to continue" in err and "Traceback" not in err
    ts = trials(out)
    assert ts[0].state == FAIL and ts[-1].state == WAITING
    assert ts[-1].system_attrs["failed_trial"] == 0 and cells_of(ts[-1:], WAITING) == [
        ("maml", 0)]


def test_a_cell_queued_twice_runs_once_and_its_surplus_trial_fails_before_training(tmp_path):
    from helpers import tiny_config

    from safemaml.config import EvalRequest
    from safemaml.runs.compare import Comparison
    from safemaml.studies import cells

    comparison = Comparison.make(tiny_config(), ["maml"], EvalRequest(trajectories=2, repeats=3), seeds=[0])
    study, _ = cells.open_comparison(cells.open_cell_storage(f"sqlite:///{tmp_path / 'c.db'}"), "c", comparison)
    for _ in range(2):  # two workers that found the cell missing at the same moment
        study.enqueue_trial({}, user_attrs={"arm": "maml", "seed": 0})
    first = cells.claim(study, comparison)
    assert first is not None and first.number == 0
    assert cells.claim(study, comparison) is None  # the second trial is claimed, found surplus and failed
    second = study.trials[1]
    assert second.state == FAIL and second.user_attrs["surplus"] == "cell held by trial 0"


def test_a_worker_whose_cell_was_taken_over_stops_it_at_the_next_heartbeat(tmp_path):
    # a worker whose heartbeat lapsed (the database unreachable past the grace period) finds its trial failed by
    # another worker, which queued a retry: it interrupts its own cell instead of training it a second time
    from safemaml.studies import cells

    storage = cells.open_cell_storage(f"sqlite:///{tmp_path / 'c.db'}")
    study = optuna.create_study(storage=storage, study_name="c")
    study.enqueue_trial({}, user_attrs={"arm": "a", "seed": 0})
    trial_id = study.trials[0]._trial_id
    assert study._storage.set_trial_state_values(trial_id, RUNNING)
    beat = cells.Heartbeat(study._storage, trial_id, interval=0.05)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt), beat:
        study._storage.set_trial_state_values(trial_id, FAIL)  # what the other worker's fail_stale_trials does
        time.sleep(30)  # a real SIGINT ends the sleep at the next beat
    assert beat.lost and time.monotonic() - start < 10


@pytest.mark.parametrize("args,message", [
    (["--storage", "journal.log"], "journal file keeps no heartbeats"),
    (["--workers", "0"], "--workers must be between 1 and"),
    (["--workers", "100000"], "--workers must be between 1 and"),
    (["--heartbeat", "40"], "heartbeat"),
    (["--storage", "postgresql://nobody@127.0.0.1:9/nothing"], "cannot be used"),
])
def test_bad_storage_or_worker_flags_are_one_line_exit_2_before_anything_is_written(tmp_path, capsys, args, message):
    out = tmp_path / "cmp"
    assert main(command("--out", str(out), *args)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_show_needs_a_storage_and_takes_no_training_flags(tmp_path, capsys):
    assert main(["compare", "show", str(tmp_path)]) == 2
    assert "holds no comparison.db" in capsys.readouterr().err
    assert main(["compare", "show", str(tmp_path), "--seeds", "0"]) == 2
    assert "compare show takes DIR, --storage and --name only, not --seeds" in capsys.readouterr().err
    assert main(["compare", "show"]) == 2
    assert "needs DIR" in capsys.readouterr().err


def test_a_comparison_stored_as_json_equals_itself():
    from helpers import tiny_config

    from safemaml.config import EvalRequest
    from safemaml.runs.compare import Comparison

    arms = {"maml": {"objective.name": "maml"}, "fixed": {"objective.name": "maml", "policy.learn_std": False}}
    comparison = Comparison.make(tiny_config(), arms, EvalRequest(trajectories=2), seeds=[3, 1], band="-0.5:0.5:0.5")
    again = Comparison.from_json(comparison.to_json())
    assert again == comparison and again.names == ["maml", "fixed"]
    assert again.cells() == [("maml", 3), ("fixed", 3), ("maml", 1), ("fixed", 1)]
    assert json.loads(again.to_json()) == json.loads(comparison.to_json())
    assert again.arm_config("fixed", 1).policy.learn_std is False and again.arm_config("fixed", 1).seed == 1
    assert Path(again.run_folder(Path("o"), "fixed", 1)) == Path("o/fixed/seed-1")


def test_workers_starting_together_on_one_folder_record_one_request_and_refuse_another(tmp_path):
    # two workers (and more) started at the same moment on a fresh OUT each find no request there; each must record
    # or agree with the first one recorded (a shared PATH.tmp renamed away under the second writer failed it)
    import threading

    from safemaml.runs import compare_request

    def claim(out, seed, start, outcomes):
        start.wait()
        request = {"version": 1, "order": ["a"], "per_seed": True, "arms": {"a": {}}, "evaluation": {"seed": seed}}
        try:
            compare_request.claim(out, request)
            outcomes.append((seed, "ok"))
        except Exception as exc:  # noqa: BLE001
            outcomes.append((seed, str(exc)))

    for trial in range(10):  # the same request in all 8 workers, then two requests, 4 workers each, in turn
        out, outcomes, start = tmp_path / f"cmp{trial}", [], threading.Barrier(8)
        threads = [threading.Thread(target=claim, args=(out, k % 2 if trial % 2 else 0, start, outcomes))
                   for k in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        winners = {seed for seed, outcome in outcomes if outcome == "ok"}
        assert len(winners) == 1, outcomes  # one request holds the folder
        assert all("other settings" in outcome for seed, outcome in outcomes if seed not in winners), outcomes
        recorded = json.loads((out / compare_request.REQUEST_FILE).read_text())
        assert recorded["evaluation"]["seed"] in winners and not list(out.glob("*.tmp"))


def test_show_of_an_unfinished_comparison_names_the_cells_left_and_writes_no_table(tmp_path, capsys):
    from helpers import tiny_config

    from safemaml.config import EvalRequest
    from safemaml.runs.compare import Comparison
    from safemaml.studies import cells

    url = f"sqlite:///{tmp_path / 'c.db'}"
    comparison = Comparison.make(tiny_config(), ["maml", "cvar"], EvalRequest(trajectories=2, repeats=3), seeds=[0])
    study, _ = cells.open_comparison(cells.open_cell_storage(url), "c", comparison)
    cells.queue_missing(study, comparison)
    assert main(["compare", "show", str(tmp_path / "tables"), "--storage", url, "--name", "c"]) == 1
    err = capsys.readouterr().err
    assert "maml/seed-0: waiting" in err and "2 of 2 cells are not done" in err.splitlines()[-1]
    assert not (tmp_path / "tables" / "comparison.md").exists()
