"""A hostile pass over every command and the Python API, by class of failure (issue 25, points 2-3).

Classes: a result overwritten; a traceback; a check made too late (after something was written); bad input
accepted silently; a wrong exception type from the API; a misleading message. Each case asserts the exit
code, exactly one line on stderr naming the cause, and that nothing on disk changed (or was created).
docs/testing.md ("Fault and fuzz tests") has the table of what is covered, by class and command.

Real parts throughout: real trainings (nav2d, 1-2 iterations, tiny batches), real Optuna SQLite storages,
`safemaml` through its `main` in this process (the same code path as the console script, without the
~3 s of a process start) and the console script itself where a process matters (signals).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import interruptible

import safemaml
from safemaml.cli.main import main

TRAIN = ["--tasks", "nav2d", "--iterations", "2", "--meta-batch-size", "2", "--fast-batch-size", "2",
         "--post-batch-size", "2", "--set", "policy.hidden=[8, 8]", "--quiet"]
# compare and study take the batch sizes as --set (they have no batch flags)
SMALL = ["--tasks", "nav2d", "--iterations", "1", "--set", "meta_batch_size=2", "--set", "fast_batch_size=2",
         "--set", "post_batch_size=2", "--set", "policy.hidden=[8, 8]", "--quiet"]
COMPARE = ["compare", "--objectives", "maml", "cvar", *SMALL, "--trajectories", "2", "--repeats", "2"]
STUDY = [*SMALL[:-1], "--objective", "cvar", "--trajectories", "2", "--grid=-0.5:0.5:0.5", "--seeds", "1",
         "--quiet"]
BEYOND_64_BITS = str(2**70)


def run_main(*args: str, cwd: Path) -> tuple[int, str, str]:
    """`safemaml ARGS` in this process: (exit code, stdout, stderr); an escaping exception is a traceback."""
    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    except BaseException as exc:  # what the console script would print as a traceback
        code, err = 99, io.StringIO(f"Traceback (in process): {exc!r}")
    finally:
        os.chdir(here)
    return code, out.getvalue(), err.getvalue()


def one_line(result: tuple[int, str, str], code: int, *fragments: str) -> str:
    """Assert the exit code and one stderr line holding every fragment; return the line."""
    got, _, err = result
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    assert got == code, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def rows(run: Path) -> list[str]:
    return (run / "metrics.csv").read_text().splitlines()


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A 2-iteration nav2d run that keeps a checkpoint every iteration, and a 1-iteration comparison."""
    root = tmp_path_factory.mktemp("made")
    assert run_main("train", *TRAIN, "--checkpoint-every", "1", "--out", "run", cwd=root)[0] == 0
    assert run_main(*COMPARE, "--out", "cmp", cwd=root)[0] == 0
    return root


@pytest.fixture
def copy(made, tmp_path):
    """copy(name): a fresh copy of the module's run or comparison in this test's folder."""
    def make(name: str) -> Path:
        shutil.copytree(made / name, tmp_path / name)
        return tmp_path / name
    return make


# ---- one line, nothing written: bad input of every class through every command ------------------------


def cases(run: Path) -> dict[str, tuple[list[str], int, tuple[str, ...]]]:
    """id (class-command-what) -> (arguments, exit code, fragments); none of them may write anything."""
    r = str(run)
    return {
        # tracebacks
        "traceback-train-seed-beyond-64-bits": (["train", *TRAIN, "--seed", BEYOND_64_BITS, "--out", "new"], 2,
                                                ("seed must be <=",)),
        "traceback-compare-seed-beyond-64-bits": ([*COMPARE, "--seeds", BEYOND_64_BITS, "--out", "new"], 2,
                                                  ("--seeds must be <=",)),
        "traceback-compare-eval-seed-negative": ([*COMPARE, "--eval-seed", "-1", "--out", "new"], 2,
                                                 ("--eval-seed must be >= 0",)),
        "traceback-study-infinite-bound": (["study", "run", "new", *STUDY, "--trials", "1", "--search",
                                            "eta=0.1:inf"], 2, ("finite",)),
        "traceback-study-infinite-log-bound": (["study", "run", "new", *STUDY, "--trials", "1", "--search",
                                                "eta=1:inf:log"], 2, ("finite",)),
        "traceback-study-sampler-seed": (["study", "run", "new", *STUDY, "--trials", "1", "--sampler-seed",
                                          str(2**40)], 2, ("--sampler-seed must be <=",)),
        "traceback-study-seed-beyond-64-bits": (["study", "run", "new", *STUDY, "--trials", "1", "--seed",
                                                 BEYOND_64_BITS], 2, ("seed must be <=",)),
        "traceback-evaluate-task-seed-negative": (["evaluate", r, "--task-seed", "-1", "--out", "new"], 2,
                                                  ("task_seed must be >= 0",)),
        "traceback-sample-seed-beyond-64-bits": (["sample", "--tasks", "nav2d", "--num-tasks", "1",
                                                  "--trajectories", "1", "--seed", BEYOND_64_BITS], 2,
                                                 ("--seed must be <=",)),
        # checked too late: each of these trained, or created a study, before refusing
        "late-train-init-missing": (["train", *TRAIN, "--init", "nowhere", "--out", "new"], 2,
                                    ("no checkpoint at nowhere",)),
        "late-train-init-not-a-checkpoint": (["train", *TRAIN, "--init", "arms-seed.toml", "--out", "new"], 2,
                                             ("not a safemaml checkpoint",)),
        "late-compare-zero-trajectories": ([*COMPARE[:-4], "--trajectories", "0", "--out", "new"], 2,
                                           ("--trajectories must be >= 1",)),
        "late-compare-zero-repeats": ([*COMPARE[:-2], "--repeats", "0", "--out", "new"], 2,
                                      ("--repeats must be >= 1",)),
        "late-compare-init-missing": ([*COMPARE, "--init", "nowhere", "--out", "new"], 2, ("no checkpoint at",)),
        "late-study-sample-zero": (["study", "run", "new", *SMALL[:-1], "--objective", "cvar", "--sample", "0",
                                    "--trials", "1"], 2, ("--sample must be >= 1",)),
        "late-study-sample-and-grid": (["study", "run", "new", *STUDY, "--sample", "3", "--trials", "1"], 2,
                                       ("--sample N or --grid",)),
        "late-study-init-missing": (["study", "run", "new", *STUDY, "--init", "nowhere", "--trials", "1"], 2,
                                    ("no checkpoint at nowhere",)),
        "late-study-eval-seed-negative": (["study", "run", "new", *STUDY, "--eval-seed", "-1", "--trials", "1"],
                                          2, ("--eval-seed must be >= 0",)),
        "late-study-enqueue-outside": (["study", "run", "new", *STUDY, "--enqueue", "eta=500", "--trials", "1"],
                                       2, ("outside the searched range",)),
        "late-study-continue-nothing": (["study", "run", "new", "--trials", "1"], 2, ("holds no study",)),
        "late-study-show-nothing": (["study", "show", "new"], 2, ("holds no study.db",)),
        "late-study-show-storage-missing": (["study", "show", "new", "--storage", "sqlite:///none.db"], 2,
                                            ("no such file",)),
        "late-study-show-journal-missing": (["study", "show", "new", "--storage", "none.log"], 2, ("no such file",)),
        "late-study-run-journal-folder-missing": (["study", "run", "new", *STUDY, "--trials", "1", "--storage",
                                                   "nowhere/j.log"], 2, ("does not exist",)),
        "late-study-heartbeat": (["study", "run", "new", *STUDY, "--heartbeat", "0", "--trials", "1"], 2,
                                 ("heartbeat",)),
        # accepted silently
        "silent-study-duplicate-search": (["study", "run", "new", *STUDY, "--search", "eta=0.1:1", "--search",
                                           "eta=1:2", "--trials", "1"], 2, ("--search names eta more than once",)),
        "silent-study-duplicate-fix": (["study", "run", "new", *STUDY, "--fix", "margin=0.1", "--fix",
                                        "margin=0.2", "--trials", "1"], 2, ("--fix names margin more than once",)),
        "silent-study-duplicate-enqueue": (["study", "run", "new", *STUDY, "--enqueue", "eta=0.5,eta=1.0",
                                            "--trials", "1"], 2, ("--enqueue names eta more than once",)),
        "silent-study-prune-every-zero": (["study", "run", "new", *STUDY, "--metric", "post_return",
                                           "--prune-every", "0", "--trials", "1"], 2, ("--prune-every must be >= 1",)),
        "silent-study-task-seed-negative": (["study", "run", "new", *SMALL[:-1], "--objective", "cvar",
                                             "--task-seed", "-1", "--trials", "1"], 2, ("--task-seed must be >= 0",)),
        # the 1,000,000,000 is refused the same way; 20,000 keeps a planted bug from exhausting memory
        "silent-evaluate-huge-sample": (["evaluate", r, "--sample", "20000", "--trajectories", "1", "--repeats", "1",
                                         "--out", "new"], 2, ("at most 10000 tasks",)),
        "silent-compare-arm-changes-family": (["compare", *SMALL, "--arms", "arms-family.toml", "--out", "new"],
                                              2, ("arm 'other' changes tasks",)),
        "silent-compare-arm-sets-seed": (["compare", *SMALL, "--arms", "arms-seed.toml", "--out", "new"], 2,
                                         ("arm 'other' changes seed",)),
        # misleading messages
        "message-compare-negative-seed-in-a-list": ([*COMPARE, "--seeds", "-1", "0", "--out", "new"], 2,
                                                    ("--seeds must be >= 0",)),
        "message-objectives-extra-argument": (["objectives", "extra"], 2, ("unknown argument extra",)),
        "message-tasks-extra-option": (["tasks", "--all"], 2, ("unknown option --all",)),
        # a result overwritten
        "overwrite-train-over-another-run": (["train", *TRAIN, "--checkpoint-every", "1", "--meta-batch-size", "3",
                                              "--out", r], 2,
                                             ("made with other settings", "meta_batch_size: 2 in the run, 3 in")),
        "message-train-over-its-own-run": (["train", *TRAIN, "--checkpoint-every", "1", "--iterations", "4", "--out",
                                            r], 2, ("already holds a run", f"train --resume {r} --iterations 4")),
        "overwrite-study-run-into-a-run-folder": (["study", "run", r, *STUDY, "--trials", "1"], 2,
                                                  ("config.toml", "which no study writes")),
        "overwrite-evaluate-out-is-the-run": (["evaluate", r, "--out", r, "--trajectories", "1", "--repeats", "1",
                                               "--sample", "1"], 2, ("is the run folder or holds it",)),
        "overwrite-evaluate-out-holds-the-run": (["evaluate", r, "--out", str(run.parent), "--trajectories", "1",
                                                  "--repeats", "1", "--sample", "1"], 2, ("holds it",)),
        "overwrite-evaluate-out-is-other-work": (["evaluate", r, "--out", "work", "--trajectories", "1",
                                                  "--repeats", "1", "--sample", "1"], 2, ("not an evaluation",)),
    }


@pytest.fixture
def refusal_folder(tmp_path) -> Path:
    """The files the cases read (arms files, a folder of someone's work), in this test's own folder."""
    (tmp_path / "arms-family.toml").write_text('[arms.maml]\nobjective.name = "maml"\n[arms.other]\ntasks = "bandit"\n')
    (tmp_path / "arms-seed.toml").write_text('[arms.maml]\nobjective.name = "maml"\n[arms.other]\nseed = 3\n')
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("mine\n")
    return tmp_path


@pytest.mark.parametrize("case", list(cases(Path("/x/run"))))
def test_bad_request_is_one_line_and_writes_nothing(made, refusal_folder, case):
    root = refusal_folder
    args, code, fragments = cases(made / "run")[case]
    before = snapshot(made), snapshot(root)
    result = run_main(*args, cwd=root)
    one_line(result, code, *fragments)
    assert "Trial" not in result[2]  # no Optuna warning about failed trials: no trial was started
    assert (snapshot(made), snapshot(root)) == before and not (root / "new").exists()


# ---- compare: another request into the same OUT ------------------------------------------------------


@pytest.mark.parametrize("change,difference", [
    (["--iterations", "2"], "iterations (1 -> 2)"),
    (["--objectives", "maml", "lagrangian"], "arms (maml, cvar -> maml, lagrangian)"),
    (["--trajectories", "3"], "evaluation.trajectories (2 -> 3)"),
    (["--set", "adapt.fast_lr=0.2"], "adapt.fast_lr (0.1 -> 0.2)"),
    (["--band", "0:0.5:0.5"], "band (None -> 0:0.5:0.5)"),
])
def test_compare_refuses_another_request_into_its_folder(copy, tmp_path, change, difference):
    cmp = copy("cmp")
    before = snapshot(cmp)
    if change[0] == "--objectives":  # the same comparison but for its arms
        args = ["compare", *change, *COMPARE[4:], "--out", "cmp"]
    else:
        args = [*COMPARE, *change, "--out", "cmp"]
    line = one_line(run_main(*args, cwd=tmp_path), 2, "made with other settings", difference)
    assert "choose another --out" in line
    assert snapshot(cmp) == before  # the runs, their evaluations and the tables are as they were


def test_compare_reruns_its_own_request_without_changing_a_run(copy, tmp_path):
    cmp = copy("cmp")
    runs = {k: v for k, v in snapshot(cmp).items() if "/" in k and not k.endswith(".png")}
    assert run_main(*COMPARE, "--out", "cmp", cwd=tmp_path)[0] == 0
    assert {k: v for k, v in snapshot(cmp).items() if k in runs} == runs


def test_compare_checks_a_folder_made_before_the_request_file(copy, tmp_path):
    """A comparison from before comparison-request.json: its runs' own config.toml and evaluations speak."""
    cmp = copy("cmp")
    (cmp / "comparison-request.json").unlink()
    before = snapshot(cmp)
    one_line(run_main(*COMPARE, "--iterations", "2", "--out", "cmp", cwd=tmp_path), 2, "arm maml: iterations (1 -> 2)")
    one_line(run_main(*COMPARE, "--repeats", "3", "--out", "cmp", cwd=tmp_path), 2, "maml/eval: repeats (2 -> 3)")
    one_line(run_main("compare", "--objectives", "maml", "lagrangian", *SMALL, "--trajectories", "2", "--repeats",
                      "2", "--out", "cmp", cwd=tmp_path), 2, "holds cvar")
    assert snapshot(cmp) == before
    assert run_main(*COMPARE, "--out", "cmp", cwd=tmp_path)[0] == 0  # the same request continues, and is recorded
    assert (cmp / "comparison-request.json").is_file()


def test_compare_refuses_a_damaged_request_file(copy, tmp_path):
    cmp = copy("cmp")
    (cmp / "comparison-request.json").write_text('{"version": 1, "arms"')
    before = snapshot(cmp)
    one_line(run_main(*COMPARE, "--out", "cmp", cwd=tmp_path), 2, "comparison-request.json is damaged")
    assert snapshot(cmp) == before


# ---- resume over damaged run files: refused, or repaired to exactly what an uninterrupted run holds ------


def test_resume_refuses_metrics_cut_before_last_pt_and_names_the_checkpoint(copy, tmp_path):
    run = copy("run")
    (run / "metrics.csv").write_text("\n".join(rows(run)[:2]) + "\n" + rows(run)[2][:25])  # row 1 cut mid-row
    before = snapshot(run)
    line = one_line(run_main("train", "--resume", "run", "--iterations", "3", "--quiet", cwd=tmp_path), 2,
                    "metrics.csv line 3 is cut short", "1 of the 2 rows")
    assert f"cp {Path('run') / 'checkpoints' / 'iter_00001.pt'} {Path('run') / 'last.pt'}" in line
    assert snapshot(run) == before
    # following the advice continues exactly: rows 0, 1, 2, and row 0 as it was
    shutil.copy(run / "checkpoints" / "iter_00001.pt", run / "last.pt")
    assert run_main("train", "--resume", "run", "--iterations", "3", "--quiet", cwd=tmp_path)[0] == 0
    assert [r.split(",")[0] for r in rows(run)[1:]] == ["0", "1", "2"] and rows(run)[1] == before_rows(before)[0]


def before_rows(snap: dict[str, bytes]) -> list[str]:
    return snap["metrics.csv"].decode().splitlines()[1:]


@pytest.mark.parametrize("damage,message", [
    (lambda lines: lines[:1], "ends early: it holds 0 of the 2 rows"),  # reduced to its header
    (lambda lines: lines[:2], "ends early: it holds 1 of the 2 rows"),  # a row missing
    (lambda lines: [lines[0], lines[1], lines[1], lines[2]], "line 3 is iteration 0"),  # a row twice
    (lambda lines: [lines[0], lines[1].replace(",", ",x", 1), lines[2]], "not a number"),
    (lambda lines: [], "is empty or missing"),
])
def test_resume_refuses_metrics_it_would_pad_or_cut(copy, tmp_path, damage, message):
    run = copy("run")
    lines = damage(rows(run))
    (run / "metrics.csv").write_text("".join(f"{line}\n" for line in lines))
    before = snapshot(run)
    one_line(run_main("train", "--resume", "run", "--iterations", "3", "--quiet", cwd=tmp_path), 2, message)
    assert snapshot(run) == before


def test_resume_drops_rows_beyond_last_pt_cut_or_whole(copy, tmp_path):
    """What a crash between the metrics row and last.pt leaves: a row (whole or cut) after last.pt's."""
    for cut in (25, None):
        run = copy("run")
        kept = rows(run)
        extra = kept[2].replace("1,", "2,", 1)
        (run / "metrics.csv").write_text("\n".join(kept) + "\n" + (extra[:cut] if cut else extra + "\n"))
        assert run_main("train", "--resume", "run", "--iterations", "3", "--quiet", cwd=tmp_path)[0] == 0
        assert rows(run)[:3] == kept and [r.split(",")[0] for r in rows(run)[1:]] == ["0", "1", "2"]
        shutil.rmtree(run)


def test_resume_refuses_a_config_toml_that_is_not_last_pts(copy, tmp_path):
    run = copy("run")
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(text.replace("meta_batch_size = 2", "meta_batch_size = 3"))
    before = snapshot(run)
    one_line(run_main("train", "--resume", "run", "--iterations", "3", "--quiet", cwd=tmp_path), 2,
             "is not the config", "meta_batch_size: 2 in last.pt, 3 in config.toml")
    assert snapshot(run) == before


def test_evaluate_refuses_a_config_toml_that_is_not_last_pts(copy, tmp_path):
    """The inner loop evaluated is config.toml's: an edited step size would measure another adaptation."""
    run = copy("run")
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(text.replace("fast_lr = 0.1", "fast_lr = 0.5"))
    before = snapshot(run)
    one_line(run_main("evaluate", "run", "--sample", "1", "--trajectories", "1", "--repeats", "1", cwd=tmp_path), 2,
             "is not the config", "adapt.fast_lr: 0.1 in last.pt, 0.5 in config.toml")
    assert snapshot(run) == before


# ---- evaluate: a damaged rounds file is sampled again, exactly --------------------------------------------


def test_a_truncated_rounds_file_is_sampled_again_to_the_same_evaluation(copy, tmp_path):
    run = copy("run")
    args = ["evaluate", "run", "--sample", "2", "--trajectories", "1", "--repeats", "2"]
    assert run_main(*args, "--out", "a", cwd=tmp_path)[0] == 0
    good = tmp_path / "a.rounds.npz"
    assert not good.exists()
    for name, data in {"truncated": b"PK\x03\x04" + os.urandom(40), "empty": b"", "text": b"not numpy\n"}.items():
        (tmp_path / f"{name}.rounds.npz").write_bytes(data)
        result = run_main(*args, "--out", name, cwd=tmp_path)
        assert result[0] == 0 and "Traceback" not in result[2], result[2]
        with (tmp_path / name / "tasks.csv").open() as f, (tmp_path / "a" / "tasks.csv").open() as g:
            assert list(csv.reader(f)) == list(csv.reader(g))  # the same evaluation as one never interrupted
    assert run.is_dir()


# ---- report: damaged metrics.csv ------------------------------------------------------------------------


def test_report_refuses_a_row_cut_in_the_middle_and_a_foreign_table(copy, tmp_path):
    run = copy("run")
    lines = rows(run)
    (run / "metrics.csv").write_text(f"{lines[0]}\n{lines[1][:20]}\n{lines[2]}\n")
    one_line(run_main("report", "run", "--out", "a.png", cwd=tmp_path), 2, "line 2 does not have one value")
    (run / "metrics.csv").write_text("iteration,x\n0,1\n")
    one_line(run_main("report", "run", "--out", "b.png", cwd=tmp_path), 2, "no pre_return, post_return column")
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()


def test_report_draws_a_run_whose_last_row_is_being_written(copy, tmp_path):
    run = copy("run")
    lines = rows(run)
    (run / "metrics.csv").write_text(f"{lines[0]}\n{lines[1]}\n{lines[2][:20]}")  # no line end: a write under way
    assert run_main("report", "run", "--out", "a.png", cwd=tmp_path)[0] == 0


def test_a_request_beyond_memory_is_a_one_line_fault(made, tmp_path):
    """10^8 trajectories per round: the allocation fails (here under a 6 GB address-space limit, as on a machine
    without the memory) and the command says so in one line, exit 1, with nothing written."""
    import resource

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))

    result = subprocess.run([sys.executable, "-m", "safemaml.cli.main", "evaluate", str(made / "run"), "--sample", "1",
                             "--repeats", "1", "--trajectories", str(10**8), "--out", "new"], cwd=tmp_path,
                            capture_output=True, text=True, preexec_fn=limited, timeout=300)
    one_line((result.returncode, result.stdout, result.stderr), 1, "not enough memory")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no OUT, OUT.tmp or rounds file left


# ---- study: Ctrl-C in a trial says how to continue the study ------------------------------------------------


def test_ctrl_c_in_a_study_trial_says_to_continue_the_study(tmp_path):
    command = [sys.executable, "-m", "safemaml.cli.main", "study", "run", "s", *STUDY[:-1], "--iterations", "40",
               "--trials", "1"]
    worker = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=interruptible)
    last = tmp_path / "s" / "runs" / "trial-0000" / "seed-0" / "last.pt"
    try:
        import time

        deadline = time.time() + 120
        while not last.exists() and worker.poll() is None and time.time() < deadline:
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert worker.returncode == 130 and "Traceback" not in err
    assert lines[-1].startswith("safemaml: interrupted") and "safemaml study run s" in lines[-1], err
    assert "train --resume" not in err


@pytest.mark.parametrize("stored", ["{not json", '{"config": {}}', "[1, 2]"])
def test_a_study_with_damaged_stored_settings_is_one_line(tmp_path, stored):
    import optuna

    (tmp_path / "s").mkdir()
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}",
                                directions=["maximize", "minimize"])
    study.set_user_attr("safemaml_settings", stored)
    before = snapshot(tmp_path)
    one_line(run_main("study", "show", "s", cwd=tmp_path), 2, "stored safemaml settings are damaged")
    one_line(run_main("study", "run", "s", "--trials", "1", cwd=tmp_path), 2, "stored safemaml settings are damaged")
    assert snapshot(tmp_path) == before


# ---- the Python API: SafeMamlError for any bad argument ---------------------------------------------------


def api_cases(run: str) -> dict:
    return {
        "train-out-an-int": lambda: safemaml.train("nav2d", 42),
        "train-config-an-int": lambda: safemaml.train(42, "x"),
        "train-config-a-list": lambda: safemaml.train(["nav2d"], "x"),
        "train-quiet-a-string": lambda: safemaml.train("nav2d", "x", quiet="no", iterations=1),
        "train-tasks-an-int": lambda: safemaml.train(tasks=3),
        "train-iterations-a-string": lambda: safemaml.train("nav2d", "x", iterations="3"),
        "resume-run-none": lambda: safemaml.resume(None),
        "resume-iterations-a-float": lambda: safemaml.resume(run, 3.5),
        "resume-device-an-int": lambda: safemaml.resume(run, None, 0),
        "evaluate-grid-a-tuple": lambda: safemaml.evaluate(run, grid=(0, 1, 0.5)),
        "evaluate-run-none": lambda: safemaml.evaluate(None),
        "evaluate-trajectories-a-string": lambda: safemaml.evaluate(run, trajectories="2"),
        "evaluate-trajectories-a-float": lambda: safemaml.evaluate(run, trajectories=2.5),
        "evaluate-beta-a-string": lambda: safemaml.evaluate(run, beta="0.1"),
        "evaluate-seed-a-bool": lambda: safemaml.evaluate(run, seed=True),
        "evaluate-out-an-int": lambda: safemaml.evaluate(run, out=5),
        "evaluate-request-a-dict": lambda: safemaml.evaluate(run, request={"sample": 2}),
        "evaluate-task-seed-negative": lambda: safemaml.evaluate(run, task_seed=-1),
        "evaluate-out-is-the-run": lambda: safemaml.evaluate(run, out=run, sample=1, trajectories=1, repeats=1),
        "load-run-none": lambda: safemaml.load_run(None),
        "load-run-an-int": lambda: safemaml.load_run(3),
    }


@pytest.mark.parametrize("case", list(api_cases("")))
def test_api_raises_safemaml_error_for_any_bad_argument(made, tmp_path, case):
    before = snapshot(made / "run")
    with pytest.raises(safemaml.SafeMamlError) as info:
        api_cases(str(made / "run"))[case]()
    assert type(info.value) in (safemaml.SafeMamlError, safemaml.RunFault)
    assert "\n" not in str(info.value)
    assert snapshot(made / "run") == before and not (tmp_path / "x").exists()


@pytest.mark.parametrize("damage,message", [
    (lambda run: (run / "eval" / "tasks.csv").write_bytes(b"\xff\xfe" + bytes(range(256))), "not a CSV table"),
    (lambda run: (run / "eval" / "summary.json").write_text("[1, 2]"), "not a JSON summary"),
    (lambda run: (run / "eval" / "summary.json").write_text("{"), "not a JSON summary"),
])
def test_load_run_refuses_damaged_evaluation_files(copy, damage, message):
    run = copy("run")
    (run / "eval").mkdir()
    (run / "eval" / "summary.json").write_text("{}")
    (run / "eval" / "tasks.csv").write_text("task_index,mean_gamma\n0,1.0\n")
    assert safemaml.load_run(run).evaluations["eval"].summary == {}
    damage(run)
    with pytest.raises(safemaml.SafeMamlError, match=message):
        safemaml.load_run(run)


def test_every_compare_request_field_is_in_its_record(copy):
    """The request file names everything a rerun must agree on: every arm's config, the order, the evaluation."""
    record = json.loads((copy("cmp") / "comparison-request.json").read_text())
    assert record["order"] == ["maml", "cvar"] and record["per_seed"] is False
    assert record["arms"]["cvar"]["objective"]["name"] == "cvar" and record["arms"]["maml"]["iterations"] == 1
    assert record["evaluation"]["trajectories"] == 2 and record["evaluation"]["repeats"] == 2
    assert "device" not in record["arms"]["maml"] and "device" not in record["evaluation"]
