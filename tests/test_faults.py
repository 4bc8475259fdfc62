"""Bad input and faults through the real `safemaml` console script (a subprocess each).

Every case asserts: the exit code (2 bad input, 1 fault, 130 Ctrl-C), exactly one line on
stderr that names the cause, no traceback, and the run folder unchanged (or absent, or cleanly
resumable). The independent bad-input cases of the issue run concurrently to keep the suite fast;
the further cases found since call the same `main` in-process (see THROUGH_THE_SCRIPT).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from helpers import interruptible

SCRIPT = Path(sys.executable).with_name("safemaml")
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "safemaml.cli.main"]
TINY = ["--tasks", "nav2d", "--iterations", "2", "--meta-batch-size", "2", "--fast-batch-size", "2",
        "--post-batch-size", "2", "--set", "policy.hidden=[8, 8]", "--quiet"]


def cli(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *args], cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs)


def assert_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.returncode == code, result.stderr
    assert lines[0].startswith("safemaml: ") and not lines[0].startswith("safemaml: error: safemaml"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (the lock file aside: it is the lock, not the run)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def metric_iterations(run: Path) -> list[int]:
    with (run / "metrics.csv").open() as f:
        return [int(r["iteration"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny nav2d run with 2 finished iterations, made once through the console script."""
    root = tmp_path_factory.mktemp("trained")
    result = cli("train", *TINY, "--out", "run", cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "run"


class _Evil:
    def __reduce__(self):
        return (os.mkdir, ("pwned",))


def _checkpoint_cases(root: Path, trained: Path) -> dict[str, Path]:
    """Copies of the trained run whose last.pt is broken in one way each."""
    runs = {}
    good = (trained / "last.pt").read_bytes()
    variants = {
        "truncated": good[:100],
        "empty": b"",
        "random": os.urandom(4000),
    }
    for name, data in variants.items():
        runs[name] = root / name
        shutil.copytree(trained, runs[name])
        (runs[name] / "last.pt").write_bytes(data)
    for name, state in {"no-params": {"iteration": 1}, "pickle": {"iteration": 1, "x": _Evil()}}.items():
        runs[name] = root / name
        shutil.copytree(trained, runs[name])
        torch.save(state, runs[name] / "last.pt")
    runs["other-family"] = root / "other-family"
    shutil.copytree(trained, runs["other-family"])
    config = runs["other-family"] / "config.toml"
    config.write_text(config.read_text().replace('tasks = "nav2d"', 'tasks = "bandit"').replace("[8, 8]", "[4]"))
    return runs


CHECKPOINT_MESSAGES = {"truncated": "not a safemaml checkpoint", "empty": "not a safemaml checkpoint",
                       "random": "not a safemaml checkpoint", "no-params": "no params",
                       "pickle": "never loaded", "other-family": "another shape"}
# a resume and an evaluation compare config.toml with the config last.pt holds before loading the policy (issue 25)
RESUME_MESSAGES = {"other-family": "is not the config"}


def _input_cases(root: Path, trained: Path) -> dict[str, tuple[list[str], int, tuple[str, ...]]]:
    """id -> (arguments, exit code, fragments of the message); files they need are made here."""
    (root / "top-level.toml").write_text("hidden = 64\n")
    (root / "strings.toml").write_text('[policy]\nhidden = ["a", "b"]\n')
    (root / "scalar-table.toml").write_text("policy = 3\n")
    (root / "syntax.toml").write_text("iterations = = 3\n")
    (root / "binary.toml").write_bytes(os.urandom(64) + b"\xff\xfe")
    (root / "a-file").write_text("not a folder\n")
    (root / "empty-metrics").mkdir()
    (root / "empty-metrics" / "metrics.csv").write_text("")
    (root / "garbage-metrics").mkdir()
    (root / "garbage-metrics" / "metrics.csv").write_bytes(b"\x00\xff" + os.urandom(300))
    (root / "text-metrics").mkdir()
    (root / "text-metrics" / "metrics.csv").write_text("iteration,pre_return\nzero,abc\n")
    run = str(trained)
    for name in ("fewer", "over"):  # cases that take the run's lock get a copy each (they run concurrently)
        shutil.copytree(trained, root / name)
    out = ["--out", str(root / "never")]
    cases = {
        "toml-top-level-hidden": (["train", "--config", "top-level.toml", *out], 2, ("unknown setting", "hidden")),
        "toml-hidden-strings": (["train", "--config", "strings.toml", *out], 2, ("policy.hidden", "list of integers")),
        "toml-policy-scalar": (["train", "--config", "scalar-table.toml", *out], 2, ("policy must be a table",)),
        "toml-syntax": (["train", "--config", "syntax.toml", *out], 2, ("invalid TOML",)),
        "toml-binary": (["train", "--config", "binary.toml", *out], 2, ("binary.toml",)),
        "config-missing": (["train", "--config", "nope.toml", *out], 2, ("not found",)),
        "set-unknown-section": (["train", "--set", "foo.bar=1", *out], 2, ("unknown config section 'foo'",)),
        "set-into-a-value": (["train", "--set", "adapt.fast_lr.x=3", *out], 2, ("adapt.fast_lr is a value",)),
        "set-hidden-scalar": (["train", "--set", "policy.hidden=64", *out], 2, ("policy.hidden", "list of integers")),
        "set-a-table": (["train", "--set", "policy=3", *out], 2, ("policy is a table",)),
        "set-without-value": (["train", "--set", "iterations", *out], 2, ("KEY=VALUE",)),
        "set-inf": (["train", "--set", "adapt.fast_lr=inf", *out], 2, ("adapt.fast_lr", "finite")),
        "set-nan-objective": (["train", "--set", "objective.beta=nan", *out], 2, ("objective.beta", "finite")),
        "device-mps": (["train", "--device", "mps", *out], 2, ("device", "'mps'")),
        "device-meta": (["train", "--device", "meta", *out], 2, ("device", "'meta'")),
        "device-cuda-missing": (["train", "--device", "cuda:7", *out], 2, ("cuda:7",)),
        "misspelled-flag": (["train", "--itrations", "3", *out], 2, ("unknown option --itrations",
                                                                   "did you mean --iterations?")),
        "other-objectives-parameter": (["train", "--eta", "2", *out], 2, ("--eta is a parameter of objective",)),
        "objective-parameter-type": (["train", "--objective", "cvar", "--eta", "x", *out], 2, ("eta",)),
        "bad-int": (["train", "--iterations", "x", *out], 2, ("invalid int value", "safemaml train --help")),
        "negative-seed": (["train", "--seed", "-1", *out], 2, ("seed must be >= 0",)),
        "config-is-a-folder": (["train", "--config", str(root), *out], 2, ("not found",)),
        "empty-out": (["train", *TINY, "--out", ""], 2, ("--out must name a folder",)),
        "out-is-a-foreign-folder": (["train", *TINY, "--out", "."], 2, ("is not empty", "holds no run")),
        "evaluate-negative-seed": (["evaluate", run, "--seed", "-1"], 2, ("seed must be >= 0",)),
        "unknown-family": (["train", "--tasks", "nav3d", *out], 2, ("unknown task family", "did you mean nav2d")),
        "resume-with-settings": (["train", "--resume", run, "--seed", "3"], 2, ("--resume accepts only",)),
        "resume-not-a-run": (["train", "--resume", str(root / "a-file")], 2, ("not a run folder",)),
        "resume-missing": (["train", "--resume", str(root / "missing")], 2, ("not a run folder",)),
        "resume-fewer-iterations": (["train", "--resume", "fewer", "--iterations", "1"], 2, ("2 finished iterations",)),
        "train-out-is-a-file": (["train", *TINY, "--out", "a-file"], 2, ("a-file is a file",)),
        "train-over-a-run": (["train", *TINY, "--out", "over"], 2, ("already holds a run", "--resume")),
        "grid-nan": (["evaluate", run, "--grid", "nan:nan:1"], 2, ("finite",)),
        "grid-inf": (["evaluate", run, "--grid", "0:inf:1"], 2, ("finite",)),
        "grid-huge": (["evaluate", run, "--grid", "0:2:1e-6"], 2, ("more than 10000 tasks",)),
        "grid-words": (["evaluate", run, "--grid", "a:b"], 2, ("START:STOP:STEP",)),
        "grid-reversed": (["evaluate", run, "--grid", "1:-1:0.5"], 2, ("STOP >= START",)),
        "evaluate-missing": (["evaluate", str(root / "missing")], 2, ("not a run folder",)),
        "evaluate-a-file": (["evaluate", str(root / "a-file")], 2, ("is a file",)),
        "evaluate-out-is-a-file": (["evaluate", run, "--out", "a-file"], 2, ("a-file is a file",)),
        "evaluate-zero-trajectories": (["evaluate", run, "--trajectories", "0"], 2, (">= 1",)),
        "evaluate-typo": (["evaluate", run, "--trajectory", "3"], 2, ("did you mean --trajectories?",)),
        "report-empty-metrics": (["report", "empty-metrics"], 2, ("no finished meta-iteration",)),
        "report-garbage-metrics": (["report", "garbage-metrics"], 2, ("metrics.csv",)),
        "report-text-metrics": (["report", "text-metrics"], 2, ("not a number",)),
        "report-bad-extension": (["report", run, "--out", "curve.foo"], 2, (".png",)),
        "report-missing-folder": (["report", run, "--out", "nowhere/curve.png"], 2, ("does not exist",)),
        "report-out-is-a-folder": (["report", run, "--out", str(root)], 2, (".png",)),
        "compare-twice": (["compare", "--objectives", "maml", "maml", "--out", "cmp"], 2, ("more than once",)),
        "unknown-command": (["frobnicate"], 2, ("invalid choice",)),
    }
    return cases


# The cases listed in issue 9 run through the console script, each in its own process (the import of
# torch makes that ~3 s of CPU each); the others call the same `main` in this process, which is the
# same code path without the process start.
THROUGH_THE_SCRIPT = {
    "toml-top-level-hidden", "toml-hidden-strings", "toml-policy-scalar", "set-unknown-section", "set-into-a-value",
    "set-hidden-scalar", "set-inf", "device-mps", "device-meta", "misspelled-flag", "resume-fewer-iterations",
    "train-out-is-a-file", "train-over-a-run", "grid-nan", "grid-inf", "grid-huge", "evaluate-out-is-a-file",
    "report-empty-metrics", "report-garbage-metrics", "report-bad-extension", "report-missing-folder",
    "compare-twice", *(f"evaluate-{name}" for name in CHECKPOINT_MESSAGES)}


def in_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`safemaml ARGS` through cli.main in this process, with its stdout and stderr captured."""
    from safemaml.cli.main import main

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    except BaseException as exc:  # what would have been a traceback
        code, err = 99, io.StringIO(f"Traceback (in process): {exc!r}")
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def results(tmp_path_factory, trained):
    """Run every bad-input case; id -> (CompletedProcess, folder before, folder after)."""
    root = tmp_path_factory.mktemp("cases")
    cases = {k: (args, code, fragments) for k, (args, code, fragments) in _input_cases(root, trained).items()}
    runs = _checkpoint_cases(root, trained)
    for name, folder in runs.items():
        cases[f"evaluate-{name}"] = (["evaluate", str(folder)], 2,
                                     (RESUME_MESSAGES.get(name, CHECKPOINT_MESSAGES[name]),))
        cases[f"resume-{name}"] = (["train", "--resume", str(folder), "--iterations", "3"], 2,
                                   (RESUME_MESSAGES.get(name, CHECKPOINT_MESSAGES[name]),))
    before = snapshot(trained), snapshot(root)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {k: pool.submit(cli, *args, cwd=root) for k, (args, _, _) in cases.items()
                   if k in THROUGH_THE_SCRIPT}
        done = {k: f.result() for k, f in futures.items()}
    done.update({k: in_process(*args, cwd=root) for k, (args, _, _) in cases.items() if k not in done})
    after = snapshot(trained), snapshot(root)
    return root, cases, done, before, after


def _case_ids() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ids = list(_input_cases(Path(tmp), Path(tmp)))
    return ids + [f"{verb}-{name}" for name in CHECKPOINT_MESSAGES for verb in ("evaluate", "resume")]


@pytest.mark.parametrize("case", _case_ids())
def test_bad_input_is_one_line_and_changes_nothing(results, case):
    """The exit code, one line on stderr naming the cause, no traceback, and nothing changed on disk."""
    root, cases, done, before, after = results
    args, code, fragments = cases[case]
    assert_error(done[case], code, *fragments)
    assert not (root / "never").exists() and not (root / "cmp").exists() and not (root / "runs").exists()
    assert not (root / ".lock").exists()
    assert after == before  # every file of every run, config and metrics is byte for byte as it was


def test_a_pickle_that_would_run_code_is_never_loaded(results):
    root, *_ = results
    assert not (root / "pwned").exists()


def test_negative_grid_parses_and_evaluates(tmp_path, trained):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    result = cli("evaluate", str(run), "--grid", "-0.5:0.5:0.5", "--trajectories", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with (run / "eval" / "tasks.csv").open() as f:
        points = {(float(r["goal_x"]), float(r["goal_y"])) for r in csv.DictReader(f)}
    assert points == {(x, y) for x in (-0.5, 0.0, 0.5) for y in (-0.5, 0.0, 0.5)}
    assert not (run / "eval.tmp").exists()


def test_finished_resume_says_complete_and_changes_nothing(tmp_path, trained):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = snapshot(run)
    result = cli("train", "--resume", str(run), cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert "already complete at 2 iterations" in result.stdout
    assert f"safemaml evaluate {run}" in result.stdout  # the next commands
    assert snapshot(run) == before


def test_run_that_never_finished_an_iteration_restarts_with_the_same_command(tmp_path):
    """What a SIGKILL during the first iteration leaves: config.toml and an empty metrics.csv."""
    printed = cli("train", *TINY, "--print-config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.toml").write_text(printed.stdout)
        (tmp_path / name / "metrics.csv").write_text("")
    assert cli("train", *TINY, "--out", "a", cwd=tmp_path).returncode == 0
    assert cli("train", "--resume", "b", "--quiet", cwd=tmp_path).returncode == 0
    assert metric_iterations(tmp_path / "a") == metric_iterations(tmp_path / "b") == [0, 1]


def test_non_finite_stops_before_saving_anything(tmp_path):
    blowups = {"adapt": ["--set", "adapt.fast_lr=1e6"], "adam": ["--meta-optimizer", "adam", "--set", "meta.lr=1e20"]}
    for name, extra in blowups.items():
        result = cli("train", *TINY, *extra, "--out", name, cwd=tmp_path)
        assert_error(result, 1, "non-finite", "nothing was kept")
        assert not (tmp_path / name).exists()


def test_full_disk_at_the_first_save_then_the_same_command_works(tmp_path):
    """/dev/full makes the kernel answer ENOSPC to the checkpoint write."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt.tmp").symlink_to("/dev/full")
    assert_error(cli("train", *TINY, "--out", "run", cwd=tmp_path), 1, "no space left", "run/last.pt")
    assert snapshot(tmp_path / "run") == {} and not (tmp_path / "run" / "last.pt.tmp").exists()
    assert cli("train", *TINY, "--out", "run", cwd=tmp_path).returncode == 0
    assert metric_iterations(tmp_path / "run") == [0, 1]


def test_full_disk_during_a_resume_changes_nothing(tmp_path, trained):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = snapshot(run)
    (run / "last.pt.tmp").symlink_to("/dev/full")
    assert_error(cli("train", "--resume", "run", "--iterations", "3", cwd=tmp_path), 1, "no space left")
    assert snapshot(run) == before
    assert cli("train", "--resume", "run", "--iterations", "3", "--quiet", cwd=tmp_path).returncode == 0
    assert metric_iterations(run) == [0, 1, 2]


@contextlib.contextmanager
def read_only(folder: Path):
    """A folder this process cannot write into: chattr +i as root (root ignores modes), else chmod."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a read-only folder here (chattr +i refused)")
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    try:
        yield
    finally:
        subprocess.run(undo, check=True)


def test_read_only_folders_are_one_line_faults(tmp_path, trained):
    (tmp_path / "ro").mkdir()
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = snapshot(run)
    with read_only(tmp_path / "ro"):
        assert_error(cli("train", *TINY, "--out", "ro/new", cwd=tmp_path), 1, "read-only", "ro/new")
        assert_error(cli("evaluate", "run", "--out", "ro/eval", "--trajectories", "2", cwd=tmp_path), 1,
                     "read-only", "ro/eval")
    with read_only(run):
        assert_error(cli("train", "--resume", "run", "--iterations", "3", cwd=tmp_path), 1, "read-only")
    assert snapshot(run) == before and os.listdir(tmp_path / "ro") == []


def _start_long_run(cwd: Path, out: str, *extra: str) -> subprocess.Popen:
    args = [*COMMAND, "train", *TINY[:-1], "--iterations", "400", "--out", out, *extra]
    return subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)


def _wait_for(process: subprocess.Popen, text: str) -> None:
    for line in process.stdout:
        if text in line:
            return
    raise AssertionError(f"the run ended before printing {text!r}: {process.stderr.read()}")


def test_one_writer_per_run_folder_and_sigkill_releases_the_lock(tmp_path):
    writer = _start_long_run(tmp_path, "run")
    try:
        _wait_for(writer, "[   2/400]")
        assert_error(cli("train", "--resume", "run", cwd=tmp_path), 2, "in use by another safemaml process",
                     f"pid {writer.pid}")
        assert_error(cli("train", *TINY, "--out", "run", cwd=tmp_path), 2, "in use")
        assert_error(cli("evaluate", "run", "--trajectories", "2", cwd=tmp_path), 2, "in use")
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    done = len(metric_iterations(tmp_path / "run"))
    result = cli("train", "--resume", "run", "--iterations", str(done + 2), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = metric_iterations(tmp_path / "run")
    assert rows == list(range(len(rows))) and len(rows) >= done + 1  # each iteration once, none lost


def test_ctrl_c_in_the_first_iteration_keeps_nothing_and_the_same_command_restarts(tmp_path):
    writer = _start_long_run(tmp_path, "run", "--meta-batch-size", "20", "--fast-batch-size", "20")
    _wait_for(writer, "iteration 1: sampling pre-update")
    writer.send_signal(signal.SIGINT)
    writer.wait(timeout=120)
    stderr = writer.stderr.read()
    assert writer.returncode == 130 and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    if "nothing was kept" in stderr:
        assert not (tmp_path / "run").exists()
    else:  # the signal came after the first iteration: the message's resume command must work
        assert "resume with: safemaml train --resume run" in stderr
    result = cli("train", *TINY, "--out", "run", cwd=tmp_path) if not (tmp_path / "run").exists() else \
        cli("train", "--resume", "run", "--iterations", "2", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
