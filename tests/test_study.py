"""`safemaml study`: real Optuna storages (SQLite, PostgreSQL, journal file), real trainings on nav2d
(two iterations, tiny batches), real worker processes killed and interrupted."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import optuna
import pytest
import torch
from helpers import interruptible, wait_for

from safemaml.cli.main import main
from safemaml.envs.mujoco_batch import usable_cores

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = ["--tasks", "nav2d", "--objective", "cvar", "--iterations", "2", "--set", "meta_batch_size=2",
        "--set", "fast_batch_size=2", "--set", "post_batch_size=2", "--set", "policy.hidden=[8,8]",
        "--trajectories", "2", "--grid=-0.5:0.5:0.5", "--quiet"]
POSTGRES_URL = os.environ.get("SAFEMAML_TEST_POSTGRES_URL")


def load(directory, storage=None, name=None):
    return optuna.load_study(study_name=name or directory.name, storage=storage or f"sqlite:///{directory}/study.db")


def states(study):
    return [t.state for t in study.get_trials()]


def worker(directory, *args):
    """A `safemaml study run` in its own process."""
    return subprocess.Popen([sys.executable, "-m", "safemaml.cli.main", "study", "run", str(directory), *TINY, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)


def summary(directory, run_dir):
    return json.loads((directory / run_dir / "eval" / "summary.json").read_text())


def test_study_reaches_n_trials_continues_and_shows(tmp_path, capsys):
    d = tmp_path / "s"
    assert main(["study", "run", str(d), *TINY, "--seeds", "2", "--trials", "1", "--search", "eta=0.5:5:log",
                 "--fix", "margin=0.1"]) == 0
    # rerun: the stored settings are used, the finished trial is kept, the study grows to 2
    first = load(d).trials[0]
    assert main(["study", "run", str(d), "--trials", "2"]) == 0
    study = load(d)
    assert states(study) == [optuna.trial.TrialState.COMPLETE] * 2
    assert (study.trials[0].params, study.trials[0].values) == (first.params, first.values)
    assert study.metric_names == ["post-update return", "violation rate V̂"]
    for t in study.trials:
        assert 0.5 <= t.params["eta"] <= 5 and "margin" not in t.params and 'margin = 0.1' in t.user_attrs["config"]
        runs = [t.user_attrs[f"run_dir seed {s}"] for s in (0, 1)]
        assert runs == [f"runs/trial-{t.number:04d}/seed-{s}" for s in (0, 1)]
        seeds = [summary(d, r) for r in runs]  # the values are the means over seeds of each run's evaluation
        assert t.values[0] == pytest.approx(np.mean([s["post_return"] for s in seeds]))
        assert t.values[1] == pytest.approx(np.mean([s["violation_rate"] for s in seeds]))
        assert t.user_attrs["violation_rate seed 1"] == pytest.approx(seeds[1]["violation_rate"])
        assert all(s["beta"] == 0.1 and s["tasks"] == 9 for s in seeds)  # the study's evaluation, not the trial's beta
    # common random numbers: every run is evaluated on the same tasks with the same seed
    grids = []
    for t in study.trials:
        with (d / t.user_attrs["run_dir seed 0"] / "eval" / "tasks.csv").open() as f:
            grids.append([(r["goal_x"], r["goal_y"]) for r in csv.DictReader(f)])
    assert grids[0] == grids[1] and len(grids[0]) == 9
    # other settings on the same study are refused before any training
    assert main(["study", "run", str(d), *TINY, "--seeds", "3", "--trials", "4"]) == 2
    assert "other settings" in capsys.readouterr().err and len(load(d).trials) == 2

    assert main(["study", "show", str(d)]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and "unit: the training seed" in out
    with (d / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["number"]) for r in rows] == [0, 1]
    assert float(rows[0]["post_return seed 1"]) == pytest.approx(study.trials[0].user_attrs["post_return seed 1"])
    for name in ("pareto.png", "history_post_return.png", "history_violation_rate.png", "slice_post_return.png"):
        assert (d / name).stat().st_size > 10_000
    assert (d / "importances.json").is_file()
    # what show wrote into DIR does not stop the study from going on (it once refused importances.json)
    assert main(["study", "run", str(d), "--trials", "2"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--objective", "nope"], "unknown objective"),
    (["--search", "gamma=0.1:1"], "no parameter 'gamma'"),
    (["--search", "eta=2:1"], "LOW must be below HIGH"),
    (["--search", "beta=0.1:1.5"], "beta must be in (0, 1)"),
    (["--fix", "eta=-1"], "eta"),
    (["--storage", "postgresql://nobody@127.0.0.1:9/nothing"], "cannot be used"),
    (["--storage", "nosuchdb://x"], "cannot be used"),
    (["--eval-beta", "0"], "--eval-beta"),
    (["--search", "adapt.fast_lr=-1:1"], "adapt.fast_lr must be > 0"),
    (["--search", "adapt.nope=0:1"], "nope"),
    (["--search", "objective.eta=0.1:1"], "without 'objective.'"),
    (["--objective", "maml"], "declares nothing to search"),  # beta, delta do not change MAML's training
    (["--enqueue", "eta=50"], "outside the searched range"),
    (["--enqueue", "gamma=1"], "does not search it"),
    (["--enqueue", "eta"], "expects NAME=VALUE"),
])
def test_bad_study_input_is_one_line_exit_2_before_training(tmp_path, capsys, args, message):
    d = tmp_path / "s"
    assert main(["study", "run", str(d), *TINY, "--trials", "1", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (d / "runs").exists()


def test_enqueued_points_run_first_and_are_not_queued_twice(tmp_path):
    # HalfCheetahVel's alpha study: 4 random-start trials all drew alpha above the preset; --enqueue puts a
    # fixed grid into the study. Queued points run before the sampler's own, names left out are sampled.
    d = tmp_path / "s"
    queue = ["--enqueue", "eta=0.5", "--enqueue", "eta=2.0,margin=0.1"]
    assert main(["study", "run", str(d), *TINY, "--seeds", "1", "--trials", "2", *queue]) == 0
    trials = load(d).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert trials[0].params["eta"] == 0.5 and trials[0].params["margin"] != 0.1
    assert (trials[1].params["eta"], trials[1].params["margin"]) == (2.0, 0.1)
    # continued with the same flags: both points exist, so the third trial is the sampler's
    assert main(["study", "run", str(d), "--trials", "3", "--quiet", *queue]) == 0
    trials = load(d).trials
    assert len(trials) == 3 and trials[2].params["eta"] not in (0.5, 2.0)
    # a point whose trial failed for good (retries used up) is queued again, not counted as tried
    study = load(d)
    lost = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={"eta": 1.0},
                                     distributions={"eta": trials[0].distributions["eta"]},
                                     system_attrs={"fixed_params": {"eta": 1.0}})
    study.add_trial(lost)
    assert main(["study", "run", str(d), "--trials", "4", "--quiet", "--enqueue", "eta=1.0"]) == 0
    trials = load(d).trials
    assert trials[4].state == optuna.trial.TrialState.COMPLETE and trials[4].params["eta"] == 1.0


def _two_workers(d, extra, storage=None, name=None):
    workers = [worker(d, "--seeds", "1", "--trials", "3", *extra) for _ in range(2)]
    for w in workers:
        out, err = w.communicate(timeout=240)
        assert w.returncode == 0, err
    study = load(d, storage, name)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 3 <= len(complete) <= 4 and len(complete) == len(study.trials)  # nothing RUNNING, nothing failed
    runs = [t.user_attrs["run_dir seed 0"] for t in complete]
    assert len(set(runs)) == len(runs)
    assert all((d / r / "last.pt").is_file() for r in runs)


def test_a_worker_does_not_start_a_trial_another_live_worker_is_finishing(tmp_path, capsys):
    # N = 2 with 1 finished and 1 RUNNING elsewhere (fresh heartbeat): starting another would make 3, as the
    # HalfCheetahVel alpha study's second worker did (15 CPU-minutes). A dead worker's trial (no heartbeat
    # for longer than the grace period) is failed, queued again and run.
    d = tmp_path / "s"
    assert main(["study", "run", str(d), *TINY, "--seeds", "1", "--trials", "1"]) == 0
    from safemaml.studies.study import open_storage
    storage = open_storage(f"sqlite:///{d}/study.db")
    with pytest.warns(UserWarning, match="Heartbeat of storage"):  # Optuna: ask() is not optimize()
        other = optuna.load_study(study_name="s", storage=storage).ask()
    storage.record_heartbeat(other._trial_id)
    capsys.readouterr()
    assert main(["study", "run", str(d), "--trials", "2", "--quiet"]) == 0  # grace 30 s: the other is alive
    assert "(0 run here, 1 before), 1 running in another worker" in capsys.readouterr().out
    assert states(load(d)) == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]
    time.sleep(3)  # the other worker died: its heartbeat is older than a grace period of 2 s
    assert main(["study", "run", str(d), "--trials", "2", "--quiet", "--heartbeat", "1", "--grace", "2"]) == 0
    assert states(load(d)) == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
                               optuna.trial.TrialState.COMPLETE]
    assert load(d).trials[2].system_attrs["failed_trial"] == 1


def test_two_workers_share_one_sqlite_study(tmp_path):
    _two_workers(tmp_path / "s", [])


@pytest.mark.skipif(not POSTGRES_URL, reason="SAFEMAML_TEST_POSTGRES_URL not set (.ci/run sets it)")
def test_two_workers_share_one_postgresql_study(tmp_path):
    name = f"test-{uuid.uuid4().hex[:8]}"
    try:
        _two_workers(tmp_path / "s", ["--storage", POSTGRES_URL, "--study-name", name], POSTGRES_URL, name)
    finally:
        optuna.delete_study(study_name=name, storage=POSTGRES_URL)


@pytest.mark.skipif(usable_cores() < 2, reason="--workers 2 needs two cores")
def test_workers_pool_runs_the_trials_in_its_processes_on_their_share_of_the_cores(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", str(usable_cores()))  # what a worker would take if the pool set nothing
    d = tmp_path / "s"
    assert main(["study", "run", str(d), *TINY, "--seeds", "1", "--trials", "3", "--workers", "2",
                 "--sampler-seed", "3"]) == 0
    study = load(d)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 3 <= len(done) <= 4 and len(study.trials) == len(done)  # two workers may both start the last trial
    hosts = {t.user_attrs["host"] for t in done}
    assert f"pid {os.getpid()}" not in " ".join(hosts)  # the trials ran in the worker processes
    assert {t.user_attrs["torch_threads"] for t in done} == {usable_cores() // 2}  # 2 x threads <= cores
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done)  # no point trained twice
    for t in done:  # every trial's run trained to the end once, in its own folder
        assert len((d / t.user_attrs["run_dir seed 0"] / "metrics.csv").read_text().splitlines()) == 3
    assert main(["study", "run", str(d), "--trials", "3", "--workers", str(usable_cores() + 1)]) == 2


def test_killed_worker_trial_is_failed_retried_and_continues_its_runs(tmp_path):
    d = tmp_path / "s"
    args = ["--seeds", "1", "--trials", "1", "--iterations", "4", "--heartbeat", "1", "--grace", "2"]
    w = worker(d, *args)
    wait_for(d / "runs" / "trial-0000" / "seed-0" / "last.pt", w)
    w.send_signal(signal.SIGKILL)
    w.wait()
    saved = torch.load(d / "runs" / "trial-0000" / "seed-0" / "last.pt", weights_only=True)["iteration"]
    kept = (d / "runs" / "trial-0000" / "seed-0" / "metrics.csv").read_text().splitlines()[:saved + 2]
    assert states(load(d)) == [optuna.trial.TrialState.RUNNING]
    time.sleep(3)  # past the grace period: the next worker fails the trial and queues its retry
    assert main(["study", "run", str(d), "--trials", "1", "--heartbeat", "1", "--grace", "2"]) == 0
    study = load(d)
    killed, *rest = study.trials
    assert killed.state == optuna.trial.TrialState.FAIL
    retry = [t for t in rest if t.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    assert retry[0].params == killed.params and retry[0].user_attrs["run_dir seed 0"] == "runs/trial-0000/seed-0"
    assert len(study.trials) == 2
    assert optuna.trial.TrialState.RUNNING not in states(study)
    # the retry continued seed 0 from its last.pt: the rows written before the kill, timings included, are kept
    rows = (d / "runs" / "trial-0000" / "seed-0" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[:len(kept)] == kept


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; kill or a scheduler's stop
def test_ctrl_c_stops_cleanly_with_a_hint_and_queues_the_trial_again(tmp_path, signum):
    d = tmp_path / "s"
    w = worker(d, "--seeds", "1", "--trials", "1", "--iterations", "30")
    wait_for(d / "runs" / "trial-0000" / "seed-0" / "last.pt", w)
    w.send_signal(signum)
    _, err = w.communicate(timeout=60)
    assert w.returncode == 130
    assert f"Continue with: safemaml study run {d} --trials 1" in err and "Traceback" not in err
    study = load(d)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert study.trials[1].system_attrs["failed_trial"] == 0 and study.trials[1].params == study.trials[0].params


def test_diverging_trials_fail_with_their_reason_and_the_study_goes_on(tmp_path, capsys):
    d = tmp_path / "s"
    assert main(["study", "run", str(d), *TINY, "--seeds", "1", "--trials", "1", "--set", "adapt.fast_lr=1e30"]) == 2
    assert "3 trials in a row failed" in capsys.readouterr().err
    study = load(d)
    assert states(study) == [optuna.trial.TrialState.FAIL] * 3
    assert all("non-finite" in t.user_attrs["fail_reason"] for t in study.trials)


def test_journal_file_storage_and_single_metric_with_pruning(tmp_path, capsys):
    d, journal = tmp_path / "s", tmp_path / "study.log"
    assert main(["study", "run", str(d), *TINY, "--storage", str(journal), "--seeds", "1", "--trials", "2",
                 "--metric", "mean_gamma", "--prune-every", "1"]) == 0
    study = load(d, optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))))
    assert study.direction == optuna.study.StudyDirection.MINIMIZE and len(study.trials) == 2
    for t in study.trials:  # one intermediate value per iteration: the seeds' training mean Gamma
        with (d / t.user_attrs["run_dir seed 0"] / "metrics.csv").open() as f:
            gammas = [float(r["mean_gamma"]) for r in csv.DictReader(f)]
        assert t.intermediate_values == pytest.approx({1: gammas[0], 2: gammas[1]})
        assert t.value == pytest.approx(summary(d, t.user_attrs["run_dir seed 0"])["mean_gamma"])
    assert main(["study", "show", str(d), "--storage", str(journal)]) == 0
    assert "best trial:" in capsys.readouterr().out


def test_a_training_setting_is_searched_like_a_parameter(tmp_path):
    """MAML with a tuned inner step size: --search adapt.fast_lr reaches each seed's training config."""
    d = tmp_path / "s"
    args = [a for a in TINY if a not in ("--objective", "cvar")]
    assert main(["study", "run", str(d), *args, "--objective", "maml", "--seeds", "2", "--trials", "2",
                 "--search", "adapt.fast_lr=0.02:0.5:log", "--fix", "policy.init_std=0.5"]) == 0
    for t in load(d).trials:
        alpha = t.params["adapt.fast_lr"]
        assert 0.02 <= alpha <= 0.5 and set(t.params) == {"adapt.fast_lr"}
        for seed in (0, 1):
            run = d / t.user_attrs[f"run_dir seed {seed}"]
            text = (run / "config.toml").read_text()
            assert f"fast_lr = {alpha!r}" in text and "init_std = 0.5" in text


def test_a_continued_seeded_study_does_not_propose_its_first_trials_again(tmp_path):
    d = tmp_path / "s"
    for trials in (2, 4):  # one worker, stopped after two trials and continued with the same sampler seed
        assert main(["study", "run", str(d), *TINY, "--seeds", "1", "--trials", str(trials), "--sampler-seed", "0"]) == 0
    params = [tuple(sorted(t.params.items())) for t in load(d).trials]
    assert len(params) == 4 and len(set(params)) == 4, params


def _eta_margin_space():
    """A cvar-like search space (eta log-uniform, margin uniform) and study settings over it."""
    from optuna.distributions import FloatDistribution

    from safemaml.config import EvalRequest
    from safemaml.studies.study import StudySettings

    space = {"eta": FloatDistribution(0.01, 10.0, log=True), "margin": FloatDistribution(0.0, 1.0)}
    settings = StudySettings(config={}, space={k: optuna.distributions.distribution_to_json(d)
                                               for k, d in space.items()},
                             seeds=(100,), evaluation=EvalRequest(sample=4))
    return space, settings


def test_importance_of_a_metric_that_never_varies_is_reported_unavailable(tmp_path):
    # nav2d's studies: every trial had V-hat = 0, and PED-ANOVA then split the importance evenly (0.25 each),
    # which reads as if every parameter mattered equally
    from safemaml.studies.report import importances

    space, settings = _eta_margin_space()
    study = optuna.create_study(directions=["maximize", "minimize"],
                                storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s")
    rng = np.random.default_rng(0)
    for _ in range(50):  # enough for PED-ANOVA's top 10% to hold 5 trials
        params = {"eta": float(np.exp(rng.uniform(np.log(0.01), np.log(10.0)))), "margin": float(rng.uniform())}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=space,
                                                  values=[-20.0 - 5.0 * params["margin"], 0.0]))
    imp = importances(study, settings)
    assert set(imp["violation_rate"]) == {"unavailable"}
    assert "every complete trial" in imp["violation_rate"]["unavailable"]
    assert max(imp["post_return"], key=imp["post_return"].get) == "margin"  # the one that drives it


def test_importances_of_too_few_trials_are_reported_unavailable(tmp_path):
    # HalfCheetahVel's cvar study, 7 trials: PED-ANOVA's top 10% was one trial, the best on both values, and
    # both values got the same importances. Below 41 trials (top set < 5, Optuna's advice) there are none.
    from safemaml.studies.report import importances

    space, settings = _eta_margin_space()
    rng = np.random.default_rng(1)
    for n, available in ((40, False), (41, True)):
        study = optuna.create_study(directions=["maximize", "minimize"])
        for _ in range(n):
            params = {"eta": float(np.exp(rng.uniform(np.log(0.01), np.log(10.0)))),
                      "margin": float(rng.uniform())}
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions=space,
                values=[-20.0 - 5.0 * params["margin"], float(rng.uniform())]))
        imp = importances(study, settings)
        for metric in ("post_return", "violation_rate"):
            assert ("unavailable" not in imp[metric]) == available, (n, imp)
        if not available:
            assert "40 complete trials" in imp["post_return"]["unavailable"]
            assert "at least 41" in imp["post_return"]["unavailable"]
