"""Protocol R2.1's grid endpoint (safemaml.measure.analysis.gamma_intervals, experiments/gamma_intervals.py):
each task's mean Γ with its 95% t-interval over rounds, and the tasks whose interval lies above 0."""

import gzip
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from safemaml.errors import SafeMamlError
from safemaml.measure.analysis import gamma_intervals, median_returns

ROOT = Path(__file__).resolve().parents[1]
# Γ per round of three tasks (goal velocities 0.5, 1.0, 1.5), five rounds each. Reference intervals by hand:
# task 0: 1..5 -> mean 3, s = sqrt(2.5) = 1.5811, se = 0.70711, t(0.975, 4) = 2.776445 -> [1.0368, 4.9632];
# task 1: -2..2 -> mean 0, the same spread -> [-1.9632, 1.9632]; task 2: 5 rounds of -10 +- 1 -> below 0.
# task 3: -3, 1, 2, 3, 4 -> mean 1.4 > 0, s = 2.7019, se = 1.20830 -> [-1.9548, 4.7548]: not above 0.
GAMMA = {0: [1, 2, 3, 4, 5], 1: [-2, -1, 0, 1, 2], 2: [-11, -9, -10, -11, -9], 3: [-3, 1, 2, 3, 4]}
VELOCITY = {0: 0.5, 1: 1.0, 2: 1.5, 3: 2.0}


def _evaluation(folder: Path) -> Path:
    """returns.csv.gz and tasks.csv as `safemaml evaluate` writes them: two trajectories per phase, whose
    pre-update mean minus post-update mean is the round's Γ; a held-out phase that must be ignored."""
    folder.mkdir()
    rows = ["task_index,goal_velocity,repeat,phase,trajectory,return"]
    for task, gammas in GAMMA.items():
        for r, g in enumerate(gammas):
            for t in range(2):
                rows.append(f"{task},{VELOCITY[task]},{r},pre,{t},{-50 + g + (2 * t - 1) * 3}")
                rows.append(f"{task},{VELOCITY[task]},{r},heldout,{t},999")
                rows.append(f"{task},{VELOCITY[task]},{r},post,{t},{-50 + (1 - 2 * t) * 7}")
    with gzip.open(folder / "returns.csv.gz", "wt") as f:
        f.write("\n".join(rows) + "\n")
    tasks = ["task_index,goal_velocity,mean_pre,mean_post,mean_gamma,wins,p_hat,p_lo,p_hi,passes"]
    tasks += [f"{k},{VELOCITY[k]},0,0,{sum(g) / 5},0,0,0,0,0" for k, g in GAMMA.items()]
    (folder / "tasks.csv").write_text("\n".join(tasks) + "\n")
    return folder


def test_each_task_gets_its_mean_and_t_interval_over_rounds(tmp_path):
    table = gamma_intervals(pd.read_csv(_evaluation(tmp_path / "eval") / "returns.csv.gz")).set_index("task_index")
    assert table["rounds"].tolist() == [5, 5, 5, 5]
    assert table["mean_gamma"].tolist() == pytest.approx([3.0, 0.0, -10.0, 1.4])
    assert table.loc[0, ["lo", "hi"]].tolist() == pytest.approx([1.0368, 4.9632], abs=1e-4)
    assert table.loc[1, ["lo", "hi"]].tolist() == pytest.approx([-1.9632, 1.9632], abs=1e-4)
    assert table.loc[3, ["lo", "hi"]].tolist() == pytest.approx([-1.9548, 4.7548], abs=1e-4)
    assert table["above"].tolist() == [True, False, False, False]  # a mean above 0 is not enough
    assert table["share_positive"].tolist() == pytest.approx([1.0, 0.4, 0.0, 0.8])  # Γ = 0 is not above 0


def test_one_round_is_refused(tmp_path):
    frame = pd.DataFrame({"task_index": [0, 0], "repeat": [0, 0], "phase": ["pre", "post"], "return": [1.0, 0.0]})
    with pytest.raises(SafeMamlError, match="two rounds"):
        gamma_intervals(frame)


def test_the_command_lists_the_tasks_above_0_and_those_inside_the_band(tmp_path):
    folder = _evaluation(tmp_path / "eval")
    run = subprocess.run([sys.executable, str(ROOT / "experiments/gamma_intervals.py"), str(folder),
                          "--band", "0.6", "1.6"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "| 0.5 | 5 | +3.0 | [+1.0, +5.0] | yes | 1.00 | yes |" in run.stdout
    assert "| 2 | 5 | +1.4 | [-2.0, +4.8] |  | 0.80 | yes |" in run.stdout
    assert "tasks with the interval above 0: 1 of 4 (goal_velocity 0.5)" in run.stdout
    assert "of them inside [0.6, 1.6]: 0" in run.stdout
    assert "below the median pre-update one: 2 of 4 (goal_velocity 0.5, 2)" in run.stdout


def test_medians_are_over_every_round_and_trajectory_of_a_phase(tmp_path):
    # By hand from _evaluation: task 0's pre-update returns are -50 + g -+ 3 for g = 1..5, i.e. -52 -51 -50
    # -49 -48 -46 -45 -44 -43 -42, median -47; every task's post-update returns are five -43 and five -57,
    # median -50. Task 1 (g = -2..2): pre median -50, equal to post, so not a drop. Task 2 (g about -10):
    # pre median -60. Task 3 (g = -3, 1, 2, 3, 4): pre -56 -52 -51 -50 -50 -49 -46 -45 -44 -43, median -49.5.
    # The held-out phase (999) must not enter.
    table = median_returns(pd.read_csv(_evaluation(tmp_path / "eval") / "returns.csv.gz")).set_index("task_index")
    assert table["median_pre"].tolist() == pytest.approx([-47.0, -50.0, -60.0, -49.5])
    assert table["median_post"].tolist() == pytest.approx([-50.0] * 4)


def test_the_command_says_when_there_is_nothing_to_read(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "experiments/gamma_intervals.py"), str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "safemaml evaluate" in run.stderr


def test_damaged_or_mismatched_files_are_one_line_not_a_traceback(tmp_path):
    folder = _evaluation(tmp_path / "eval")
    script = [sys.executable, str(ROOT / "experiments/gamma_intervals.py"), str(folder)]
    tasks = (folder / "tasks.csv").read_text()
    (folder / "tasks.csv").write_text("\n".join(tasks.splitlines()[:-1]) + "\n")  # task 3 missing
    run = subprocess.run(script, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "not list the same tasks" in run.stderr
    (folder / "returns.csv.gz").write_bytes(b"not gzip")
    run = subprocess.run(script, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
