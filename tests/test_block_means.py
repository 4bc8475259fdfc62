"""experiments/block_means.py: the learning-progress table docs/learning.md quotes, on a real metrics.csv."""


import pytest

from safemaml.measure import analysis_cli


def _run(tmp_path, n=6):
    lines = ["iteration,pre_return,post_return,mean_gamma,frac_negative,kl,time_sampling"]
    lines += [f"{i},{-10 * i},{-5 * i},{-5 * i},{0.1 * i},0.01,{i}" for i in range(n)]
    (tmp_path / "metrics.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_blocks_count_from_one_and_average_their_rows(tmp_path, capsys):
    analysis_cli.block_means_main([str(_run(tmp_path)), "--blocks", "1-2", "4-6"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| iterations | pre-update return | post-update return | mean Γ | tasks with Γ > 0 |"
    # iterations 1-2 are rows 0, 1: pre (0 - 10) / 2; iterations 4-6 are rows 3..5: pre -(30 + 40 + 50) / 3
    assert out[2] == "| 1–2 | -5.0 | -2.5 | -2.5 | 0.05 |"
    assert out[3] == "| 4–6 | -40.0 | -20.0 | -20.0 | 0.40 |"
    analysis_cli.block_means_main([str(_run(tmp_path)), "--blocks", "4-6", "--timings"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("| tasks with Γ > 0 | s sampling |") and out[2].endswith("| 0.40 | 4.0 |")


@pytest.mark.parametrize("block, message", [("5-7", "not complete"), ("3-2", "1 <= FIRST <= LAST"),
                                            ("0-2", "1 <= FIRST <= LAST"), ("a-b", "not FIRST-LAST")])
def test_a_bad_block_is_a_one_line_error(tmp_path, block, message):
    with pytest.raises(SystemExit, match=message):
        analysis_cli.block_means_main([str(_run(tmp_path)), "--blocks", block])


def test_a_folder_without_metrics_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        analysis_cli.block_means_main([str(tmp_path)])
