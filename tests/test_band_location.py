"""Protocol R2.2's analysis (safemaml.measure.analysis.band_location / band_test, experiments/band_location.py):
where a base's negative adaptation sits against where its initial policy is best, and the test across bases."""

from pathlib import Path

import pytest

from safemaml.errors import SafeMamlError
from safemaml.measure import analysis_cli
from safemaml.measure.analysis import band_location, band_test, positive_points

ROOT = Path(__file__).resolve().parents[1]
HEADER = "task_index,goal_velocity,mean_pre,mean_post,mean_gamma,wins,p_hat,p_lo,p_hi,passes"


def grid(tmp_path, points, name="eval-grid"):
    """points: (velocity, mean_pre, mean_gamma) rows of a hand-made tasks.csv."""
    folder = tmp_path / name
    folder.mkdir()
    rows = [HEADER] + [f"{i},{v},{pre},{pre - g},{g},0,0,0,0,0" for i, (v, pre, g) in enumerate(points)]
    (folder / "tasks.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_the_locations_are_taken_inside_the_training_range_only(tmp_path):
    # outside [0, 2) a grid point has both the best pre-update return and the largest mean Γ: it must not count
    folder = grid(tmp_path, [(0.0, -100, -30), (0.3, -50, -5), (0.6, -60, 4), (1.9, -90, 1), (2.0, 0, 50)])
    assert band_location(folder / "tasks.csv") == (0.3, 0.6)


def test_the_seed_0_base_gives_the_locations_known_before_the_protocol():
    # docs/results.md, R2.2: "seed 0 gives v_pre = 0.4, v_Γ = 0.5, known before this protocol"
    tasks = ROOT / "experiments/runs/halfcheetah-vel-maml-500/eval-grid/tasks.csv"
    assert band_location(tasks) == (0.4, 0.5)


def test_the_test_counts_the_null_probability_per_base():
    assert band_test([(0.4, 0.5), (0.8, 0.6), (1.0, 1.0)]) == (True, pytest.approx((5 / 20) ** 3))
    assert band_test([(0.4, 0.5), (0.8, 0.5)]) == (False, pytest.approx(0.0625))  # 0.3 apart: outside
    assert band_test([(0.4, 0.6)])[0]  # 0.2 apart in floating point still counts as within


def test_a_family_with_two_parameters_is_refused(tmp_path):
    folder = tmp_path / "g"
    folder.mkdir()
    (folder / "tasks.csv").write_text("task_index,goal_x,goal_y,mean_pre,mean_post,mean_gamma,wins,p_hat,p_lo,p_hi,"
                                      "passes\n0,0,0,1,1,0,0,0,0,0,0\n")
    with pytest.raises(SafeMamlError, match="one-parameter"):
        band_location(folder / "tasks.csv")


def test_the_command_prints_the_table_and_the_test(tmp_path, capsys):
    a = grid(tmp_path, [(0.1, -50, 1), (0.2, -60, -1)], "a")
    b = grid(tmp_path, [(0.1, -70, -1), (1.5, -60, 2)], "b")
    analysis_cli.band_location_main([str(a), str(b)])
    out = capsys.readouterr().out
    assert "| 0.1 | 0.1 | 0.0 | 0.1 | none |" in out and "| 1.5 | 1.5 | 0.0 | 1.5 | none |" in out
    assert "all within ±0.2: yes" in out and "(v_Γ uniform over the 2 points of [0, 2)): 1" in out


def test_the_band_and_its_overlap_with_the_papers_are_listed():
    # the seed-0 base, docs/results.md: mean Γ > 0 at 0.3-0.6, overlapping the paper's [0.6, 1.1] only at 0.6
    tasks = ROOT / "experiments/runs/halfcheetah-vel-maml-500/eval-grid/tasks.csv"
    band = positive_points(tasks)
    assert [v for v in band if v < 2] == [0.3, 0.4, 0.5, 0.6]
    assert [v for v in band if 0.6 <= v <= 1.1] == [0.6]
