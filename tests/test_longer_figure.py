"""experiments/longer_figure.py: R2.3's training curves read from metrics.csv (iterations counted from 1) and
drawn; the figure decodes, and an existing file is not overwritten without --overwrite."""

import matplotlib.image
import numpy as np
import pytest

from safemaml.errors import SafeMamlError
from safemaml.measure.analysis_cli import longer_figure_main
from safemaml.measure.paired_tests import metric_curves

COLUMNS = {"maml": "post_return", "cvar": "objective_cvar_C", "lagrangian": "objective_multiplier"}


def _tree(root, iterations=4):
    """ROOT/ARM/seed-N/metrics.csv with hand values: arm a, seed s, iteration i -> 10 a + s + 0.5 i."""
    for a, (arm, column) in enumerate(COLUMNS.items()):
        for seed in (0, 1):
            run = root / arm / f"seed-{seed}"
            run.mkdir(parents=True)
            rows = ["iteration,post_return" + ("" if column == "post_return" else f",{column}")]
            for i in range(iterations):
                value = 10 * a + seed + 0.5 * i
                rows.append(f"{i},{value}" + ("" if column == "post_return" else f",{value}"))
            (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    return root


def test_curves_are_each_seeds_column_by_iteration_counted_from_one(tmp_path):
    curves = metric_curves(_tree(tmp_path) / "cvar", "objective_cvar_C")
    assert sorted(curves) == [0, 1]
    x, y = curves[1]
    assert x.tolist() == [1, 2, 3, 4] and y.tolist() == [11.0, 11.5, 12.0, 12.5]
    with pytest.raises(SafeMamlError, match="objective_multiplier"):
        metric_curves(tmp_path / "cvar", "objective_multiplier")


def test_the_figure_decodes_and_is_not_overwritten_unasked(tmp_path, capsys):
    root, out = _tree(tmp_path / "runs"), tmp_path / "training.png"
    longer_figure_main([str(root), "--out", str(out)])
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and np.ptp(image[..., :3]) > 0.5  # drawn, not blank
    before = out.read_bytes()
    with pytest.raises(SystemExit) as refused:
        longer_figure_main([str(root), "--out", str(out)])
    assert refused.value.code == 2 and "exists" in capsys.readouterr().err and out.read_bytes() == before
    longer_figure_main([str(root), "--out", str(out), "--overwrite"])


def test_a_run_without_the_column_is_one_error_line(tmp_path):
    root = _tree(tmp_path / "runs")
    (root / "lagrangian" / "seed-1" / "metrics.csv").write_text("iteration,post_return\n0,1.0\n")
    with pytest.raises(SystemExit) as failed:
        longer_figure_main([str(root), "--out", str(tmp_path / "f.png")])
    assert "objective_multiplier" in str(failed.value.code) and not (tmp_path / "f.png").exists()
