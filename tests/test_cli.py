import pathlib
import re
import subprocess
import sys

import pytest

from safemaml.cli.main import main
from safemaml.tasks import FAMILY_NAMES

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "safemaml.cli.main", *args], capture_output=True, text=True)


def test_tasks_lists_every_family(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in FAMILY_NAMES:
        assert re.search(rf"^{re.escape(name)}\s", out, re.M)
    assert re.search(r"^ant-vel\s.*U\[0, 3\].*\s200\s+105\s+8\s", out, re.M)


@pytest.mark.parametrize("args,message", [
    (["sample", "--tasks", "cheetah"], "unknown task family"),
    (["sample", "--num-tasks", "0"], "at least one task"),
    (["sample", "--device", "cuda:7"], "device"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_sample_reports_steps_per_second(tmp_path):
    result = run_cli("sample", "--tasks", "nav2d", "--num-tasks", "2", "--trajectories", "3")
    assert result.returncode == 0, result.stderr
    assert re.search(r"600 control steps in .* steps/s", result.stdout)
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in (ROOT / "README.md").read_text()
