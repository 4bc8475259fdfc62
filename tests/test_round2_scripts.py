"""experiments/round2.sh and longer.sh, the drivers of round 2's long runs: the commands they run, in order and
each once, and SIGTERM reaching every run (a run not stopped keeps a core busy and its run folder changing).

The scripts run for real, as processes, with a stand-in `safemaml` first on PATH that logs its arguments and
sleeps (a training takes hours); what is under test is the scripts' orchestration, not the commands."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROUND1 = "experiments/results/comparison-halfcheetah-vel/compare"
ARMS, SEEDS = ("maml", "cvar", "lagrangian"), range(6)
STANDIN = """#!/usr/bin/env bash
trap 'echo "TERM $*" >> "$LOG"; exit 143' TERM
echo "start $*" >> "$LOG"
case "$*" in $SLOW*) sleep 60 & wait $! ;; esac
echo "done $*" >> "$LOG"
"""

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("pkill") is None,
                                reason="needs bash and pkill")


@pytest.fixture
def tree(tmp_path):
    """A repository root with the two scripts, round 1's run folders (empty files) and the stand-in."""
    (tmp_path / "experiments").mkdir()
    for name in ("round2.sh", "longer.sh", "lanes.sh"):
        shutil.copy(ROOT / "experiments" / name, tmp_path / "experiments" / name)
    for arm in ARMS:
        for seed in SEEDS:
            run = tmp_path / ROUND1 / arm / f"seed-{seed}"
            (run / "checkpoints").mkdir(parents=True)
            for name in ("config.toml", "metrics.csv", "last.pt"):
                (run / name).write_text(f"{arm} {seed}\n")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "safemaml").write_text(STANDIN)
    (tmp_path / "bin" / "safemaml").chmod(0o755)
    return tmp_path


def _start(tree: Path, slow: str) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{tree / 'bin'}:{os.environ['PATH']}", "LOG": str(tree / "log"), "SLOW": slow}
    return subprocess.Popen(["bash", "experiments/round2.sh"], cwd=tree, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _run_of(command: str) -> str:
    """The run folder a logged command acts on: `train --resume RUN ...` or `evaluate RUN ...`."""
    words = command.split()
    return words[2] if words[0] == "train" else words[1]


def _log(tree: Path) -> list[str]:
    return (tree / "log").read_text().splitlines() if (tree / "log").exists() else []


def _wait_for(tree: Path, started: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while sum(line.startswith("start ") for line in _log(tree)) < started:
        assert time.monotonic() < end, _log(tree)
        time.sleep(0.05)
    time.sleep(0.3)  # the last one reaches its sleep


def test_every_command_runs_once_in_order(tree):
    assert _start(tree, slow="never").wait(timeout=60) == 0
    done = [line.removeprefix("done ") for line in _log(tree) if line.startswith("done ")]
    bases = ["experiments/runs/ant-vel-maml-500", "experiments/runs/halfcheetah-vel-maml-500-seed1",
             "experiments/runs/halfcheetah-vel-maml-500-seed2"]
    for base in bases:  # train, then p(T), then the grid, per base
        mine = [c for c in done if _run_of(c) == base]
        assert mine == [f"train --resume {base} --quiet", f"evaluate {base} --reuse --sample 40 --task-seed 0",
                        f"evaluate {base} --reuse --grid 0:3:0.1 --out {base}/eval-grid"]
    longer = done[9:]  # every base command before any of R2.3's
    assert len(longer) == 18 * 4
    evaluation = "--trajectories 20 --repeats 60 --seed 0 --beta 0.1 --delta 0.1"  # round 1's request, β included
    for arm in ARMS:
        for seed in SEEDS:  # R2.3's four commands per run, in order (docs/results.md)
            run = f"experiments/results/longer-halfcheetah-vel/{arm}/seed-{seed}"
            assert [c for c in longer if _run_of(c) == run] == [
                f"train --resume {run} --iterations 120",
                f"evaluate {run} --reuse {evaluation} --task-seed 0 --out {run}/eval",
                f"evaluate {run} --reuse {evaluation} --grid 0.3:1.1:0.1 --out {run}/eval-band",
                f"evaluate {run} --reuse {evaluation} --sample 40 --task-seed 1 --out {run}/eval-fresh"]
    copied = tree / "experiments/results/longer-halfcheetah-vel/cvar/seed-3"
    assert (copied / "last.pt").read_text() == "cvar 3\n" and (copied / "checkpoints").is_dir()
    assert not (tree / "round2.pid").exists()  # removed at the end: a stale PID could name another process


def test_a_half_made_copy_is_made_again_not_trained_from_scratch(tree):
    run = tree / "experiments/results/longer-halfcheetah-vel/maml/seed-0"
    run.mkdir(parents=True)
    (run / "config.toml").write_text("maml 0\n")  # stopped before last.pt was copied
    env = {**os.environ, "PATH": f"{tree / 'bin'}:{os.environ['PATH']}", "LOG": str(tree / "log"), "SLOW": "x"}
    subprocess.run(["bash", "experiments/longer.sh"], cwd=tree, env=env, check=True, capture_output=True)
    assert (run / "last.pt").read_text() == "maml 0\n" and (run / "metrics.csv").is_file()
    assert not run.with_name("seed-0.copy").exists()


@pytest.mark.parametrize("stage, slow, runs", [("bases", "train --resume experiments/runs", 3),
                                               ("longer", "train --resume experiments/results", 2)])
def test_sigterm_to_the_script_reaches_every_run(tree, stage, slow, runs):
    process = _start(tree, slow)
    try:
        _wait_for(tree, started=runs if stage == "bases" else 9 + runs)
        os.kill(int((tree / "round2.pid").read_text()), signal.SIGTERM)  # while running, it names the script
        assert process.wait(timeout=20) != 0
        time.sleep(0.3)
        terms = [line for line in _log(tree) if line.startswith("TERM ")]
        assert len(terms) == runs, _log(tree)
        assert all(slow in line for line in terms)
        log = _log(tree)
        started = {line.split(" ", 1)[1] for line in log if line.startswith("start ")}
        ended = {line.split(" ", 1)[1] for line in log if not line.startswith("start ")}
        assert started == ended  # no command left running, and none started after the TERM
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
