import csv

import numpy as np
import pytest
from scipy import stats

from helpers import tiny_config
from safemaml.compare import compare


def test_compare_trains_each_objective_and_tests_pairs(tmp_path):
    cfg = tiny_config(iterations=2, **{"objective.beta": 0.2, "objective.delta": 0.3})
    rows = compare(cfg, ["maml", "cvar"], tmp_path, trajectories=4, quiet=True)
    assert [r["objective"] for r in rows] == ["maml", "cvar"]
    with (tmp_path / "comparison.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["objective"] for r in table] == ["maml", "cvar"]
    gammas = {}
    for name in ("maml", "cvar"):
        with (tmp_path / name / "eval" / "tasks.csv").open() as f:
            gammas[name] = np.array([float(r["mean_gamma"]) for r in csv.DictReader(f)])
    assert float(table[1]["wilcoxon_p"]) == pytest.approx(stats.wilcoxon(gammas["cvar"], gammas["maml"]).pvalue)
    # both runs saw the same evaluation tasks
    with (tmp_path / "maml" / "eval" / "tasks.csv").open() as a, (tmp_path / "cvar" / "eval" / "tasks.csv").open() as b:
        assert [r["goal_x"] for r in csv.DictReader(a)] == [r["goal_x"] for r in csv.DictReader(b)]
    assert "| cvar |" in (tmp_path / "comparison.md").read_text()
