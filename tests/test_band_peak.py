"""experiments/band_peak.py: the largest per-task mean Γ per run, paired against maml over seeds."""


import pytest

from safemaml.measure import analysis_cli


def _compare(tmp_path, gammas):
    """gammas: {arm: [[task mean Γ, ...] per seed]} written as ARM/seed-N/eval-band/tasks.csv."""
    for arm, per_seed in gammas.items():
        for seed, values in enumerate(per_seed):
            folder = tmp_path / arm / f"seed-{seed}" / "eval-band"
            folder.mkdir(parents=True)
            rows = ["task_index,goal_velocity,mean_gamma"] + [f"{i},{i / 10},{g}" for i, g in enumerate(values)]
            (folder / "tasks.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_the_peak_is_the_largest_task_gamma_and_the_difference_is_paired_over_seeds(tmp_path, capsys):
    compare = _compare(tmp_path, {"maml": [[1, 10, -5], [2, 20, 0], [3, 30, 1]],
                                  "cvar": [[4, -1, 0], [6, 5, 0], [8, 2, 0]]})
    analysis_cli.band_peak_main([str(compare)])
    out = capsys.readouterr().out.splitlines()
    # peaks: maml 10, 20, 30; cvar 4, 6, 8; differences -6, -14, -22: mean -14, sd 8,
    # t(0.975, 2) = 4.302653: half-width 4.302653 * 8 / sqrt(3) = 19.87
    assert out[1].split()[:5] == ["cvar", "+4.0", "+6.0", "+8.0", "mean"]
    assert "− maml -14.0 [-33.9, +5.9]" in out[1] and "lower on 3 of 3" in out[1]
    assert out[2].split()[:4] == ["maml", "+10.0", "+20.0", "+30.0"]
    analysis_cli.band_peak_main([str(compare), "--reference", "cvar"])
    assert "− cvar +14.0 [-5.9, +33.9]" in capsys.readouterr().out.splitlines()[2]


def test_unpaired_seeds_or_no_runs_are_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="run `safemaml compare` first"):
        analysis_cli.band_peak_main([str(tmp_path)])
    compare = _compare(tmp_path, {"maml": [[1], [2]], "cvar": [[1]]})
    with pytest.raises(SystemExit, match="pair them first"):
        analysis_cli.band_peak_main([str(compare)])
    with pytest.raises(SystemExit, match="no arm quantile"):
        analysis_cli.band_peak_main([str(compare), "--reference", "quantile"])
