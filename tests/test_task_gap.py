"""experiments/task_gap.py: the per-round difference of two tasks' Γ that docs/results.md quotes."""

import gzip

import pytest

from safemaml.measure import analysis_cli


def _eval(tmp_path, name="returns.csv.gz"):
    """Two tasks, three rounds, two trajectories per phase; a held-out phase that must be ignored."""
    rows = ["task_index,direction,repeat,phase,trajectory,return"]
    post = {0: [10, 20, 30], 1: [0, 0, 0]}  # task 0's post-update mean per round; pre is always 0
    for task in (0, 1):
        for r in range(3):
            for t in range(2):
                rows.append(f"{task},{task},{r},pre,{t},{t * 2 - 1}")  # -1 and +1: mean 0
                rows.append(f"{task},{task},{r},heldout,{t},999")
                rows.append(f"{task},{task},{r},post,{t},{post[task][r] + t * 4 - 2}")  # mean post[task][r]
    text = "\n".join(rows) + "\n"
    if name.endswith(".gz"):
        with gzip.open(tmp_path / name, "wt") as f:
            f.write(text)
    else:  # an evaluation written before returns were compressed
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize("name", ["returns.csv.gz", "returns.csv"])
def test_the_gap_is_the_mean_of_per_round_differences_with_its_t_interval(tmp_path, capsys, name):
    analysis_cli.task_gap_main([str(_eval(tmp_path, name)), "0", "1"])
    out = capsys.readouterr().out.splitlines()
    # Γ_0 per round = -10, -20, -30; Γ_1 = 0: differences 10, 20, 30, mean 20, sd 10, sem 10/sqrt(3),
    # t(0.975, 2) = 4.302653: half-width 24.84
    assert out[0] == "mean Γ: task 0 -20.0, task 1 0.0"
    assert out[1] == "Γ_1 − Γ_0: +20.0, 95% t-interval over 3 rounds [-4.8, +44.8]"


def test_a_missing_task_or_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="task 7 is not in"):
        analysis_cli.task_gap_main([str(_eval(tmp_path)), "0", "7"])
    with pytest.raises(SystemExit, match="run `safemaml evaluate` first"):
        analysis_cli.task_gap_main([str(tmp_path / "nothing"), "0", "1"])
