import csv
import json

import numpy as np
import pytest
from scipy import stats

from helpers import tiny_config
from safemaml.cli import main
from safemaml.metrics import certificate, cvar_upper
from safemaml.trainer import train


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    run = tmp_path_factory.mktemp("eval") / "run"
    train(tiny_config(iterations=2), run, quiet=True)
    assert main(["evaluate", str(run), "--trajectories", "6", "--repeats", "2", "--beta", "0.2",
                 "--delta", "0.3"]) == 0
    return run / "eval"


def _returns(path):
    with (path / "returns.csv").open() as f:
        rows = list(csv.DictReader(f))
    return rows


def test_returns_csv_schema(evaluated):
    rows = _returns(evaluated)
    assert list(rows[0]) == ["task_index", "goal_x", "goal_y", "repeat", "phase", "trajectory", "return"]
    assert len(rows) == 49 * 2 * 2 * 6  # nav2d grid x repeats x phases x trajectories
    assert {r["phase"] for r in rows} == {"pre", "post"} and {r["repeat"] for r in rows} == {"0", "1"}


def test_summary_matches_an_independent_computation_from_the_csv(evaluated):
    rows = _returns(evaluated)
    G = 49
    pre = np.zeros((G, 12))
    post = np.zeros((G, 12))
    for r in rows:
        target = pre if r["phase"] == "pre" else post
        target[int(r["task_index"]), int(r["repeat"]) * 6 + int(r["trajectory"])] = float(r["return"])
    summary = json.loads((evaluated / "summary.json").read_text())
    gamma = pre.mean(1) - post.mean(1)
    assert summary["pre_return"] == pytest.approx(pre.mean(), abs=1e-4)
    assert summary["post_return"] == pytest.approx(post.mean(), abs=1e-4)
    assert summary["mean_gamma"] == pytest.approx(gamma.mean(), abs=1e-4)
    assert summary["frac_negative"] == pytest.approx((gamma > 0).mean())
    # p_T = Pr(G_pre <= G_post) from scipy's Mann-Whitney U of (post, pre)
    p = np.array([stats.mannwhitneyu(post[g], pre[g]).statistic / 144 for g in range(G)])
    assert summary["violation_rate"] == pytest.approx((p < 0.8).mean())
    worst = np.sort(gamma)[::-1]
    k = 0.3 * G
    expected_cvar = (worst[:int(k)].sum() + (k - int(k)) * worst[int(k)]) / k
    assert summary["cvar_gamma"] == pytest.approx(expected_cvar, abs=1e-4)
    assert cvar_upper(gamma, 0.3) == pytest.approx(expected_cvar)
    # the certificate pairs the first trajectories of the two independent rounds; with 2 rounds, a task's
    # Clopper-Pearson bound is at most 0.05 ** (1 / 2) = 0.22 < 1 - beta: nothing can be certified
    rounds = (pre[:, [0, 6]], post[:, [0, 6]])
    assert summary["tasks_passing"] == 0 == certificate(*rounds, 0.2, 0.3)["tasks_passing"]
    assert summary["certified_fraction"] == 0.0
    with (evaluated / "tasks.csv").open() as f:
        per_task = list(csv.DictReader(f))
    np.testing.assert_allclose([float(t["p_hat"]) for t in per_task], p, atol=1e-6)


def test_figure_is_written(evaluated):
    data = (evaluated / "figure.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_evaluate_bad_grid_is_one_line(tmp_path, capsys, evaluated):
    assert main(["evaluate", str(evaluated.parent), "--grid", "0:3:0.5"]) == 2  # nav2d accepts [-2, 2]^2
    assert "outside the accepted domain" in capsys.readouterr().err
    assert main(["evaluate", str(evaluated.parent), "--grid", "1:0:0.5"]) == 2
    assert "STEP > 0" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing")]) == 2


def test_grid_is_a_cartesian_product_for_two_parameter_families():
    from safemaml.evaluate import parse_grid
    from safemaml.tasks import get_family

    grid = parse_grid("-1:1:1", get_family("nav2d"))
    assert grid.shape == (9, 2) and {tuple(g) for g in grid} == {(x, y) for x in (-1, 0, 1) for y in (-1, 0, 1)}
    assert parse_grid("0:1:0.5", get_family("halfcheetah-vel"))[:, 0].tolist() == [0.0, 0.5, 1.0]
