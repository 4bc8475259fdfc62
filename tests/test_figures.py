"""Figures are decoded and looked at: their size, and that each curve or band is drawn in its colour
(a PNG header alone would pass for a blank image)."""

import matplotlib.image as mpimg
import numpy as np

from safemaml.measure import figures as report
from safemaml.measure.figures import before_after_figure, learning_curve
from safemaml.tasks import get_family

BLUE, ORANGE = np.array([31, 119, 180]) / 255, np.array([255, 127, 14]) / 255  # tab:blue, tab:orange


def _pixels_of(image, colour, tol=0.03):
    return int((np.abs(image[..., :3] - colour).max(-1) < tol).sum())


def test_learning_curve_draws_both_curves(tmp_path):
    rows = ["iteration,pre_return,post_return"] + [f"{i},{-50 + i},{-45 + 2 * i}" for i in range(20)]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    learning_curve(tmp_path / "metrics.csv", tmp_path / "curve.png")
    image = mpimg.imread(tmp_path / "curve.png")
    assert image.shape[:2] == (432, 720)  # 6 x 3.6 inches at 120 dpi
    assert _pixels_of(image, BLUE) > 300 and _pixels_of(image, ORANGE) > 300  # two lines, not legend stubs


def test_before_after_figure_draws_both_phases(tmp_path):
    family = get_family("halfcheetah-vel")
    grid = np.array([[0.0], [1.0], [2.0], [3.0]])
    rng = np.random.default_rng(0)
    pre = rng.normal(-100, 5, size=(4, 2, 10))
    post = rng.normal(-60, 5, size=(4, 2, 10))
    before_after_figure(family, grid, pre, post, tmp_path / "fig.png")
    image = mpimg.imread(tmp_path / "fig.png")
    assert image.shape[:2] == (504, 840)  # 7 x 4.2 inches at 120 dpi
    assert _pixels_of(image, BLUE) > 300 and _pixels_of(image, ORANGE) > 300
    # post-update returns are 40 higher: the orange median line lies above the blue one (smaller rows)
    blue_rows = np.flatnonzero((np.abs(image[..., :3] - BLUE).max(-1) < 0.03).sum(1) > 20)
    orange_rows = np.flatnonzero((np.abs(image[..., :3] - ORANGE).max(-1) < 0.03).sum(1) > 20)
    assert np.median(orange_rows) + 100 < np.median(blue_rows)


def _red(image):
    """Pixels of tab:red drawn opaque (the ticks), not orange."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return int(((r > 0.6) & (g < 0.35) & (b < 0.35)).sum())


def _hatch(image):
    """Pixels of tab:red at half opacity over a light background (the paper's band)."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return int(((r > 0.85) & (g > 0.45) & (g < 0.75) & (np.abs(g - b) < 0.08)).sum())


def _figure(tmp_path, name, family, post_shift, **kw):
    grid = np.array([[0.0], [1.0], [2.0], [3.0]])
    rng = np.random.default_rng(0)
    pre = rng.normal(-100, 5, size=(4, 2, 10))
    post = pre + post_shift[:, None, None] + rng.normal(0, 1, size=(4, 2, 10))
    before_after_figure(get_family(family), grid, pre, post, tmp_path / name, **kw)
    return mpimg.imread(tmp_path / name)


def test_tasks_with_negative_adaptation_are_marked(tmp_path):
    improving = np.array([40.0, 40.0, 40.0, 40.0])
    one_worse = np.array([40.0, -30.0, 40.0, 40.0])  # mean Γ > 0 on the task at velocity 1.0 only
    clean = _figure(tmp_path, "a.png", "halfcheetah-vel", improving)
    marked = _figure(tmp_path, "b.png", "halfcheetah-vel", one_worse)
    assert _red(clean) == 0 and _red(marked) > 20  # the tick under the task (and its legend entry)


def test_the_papers_band_is_drawn_where_the_paper_has_one(tmp_path, monkeypatch):
    improving = np.array([40.0, 40.0, 40.0, 40.0])
    with_band = _figure(tmp_path, "a.png", "halfcheetah-vel", improving)
    monkeypatch.delitem(report.PAPER_NEGATIVE_BANDS, "halfcheetah-vel")
    without = _figure(tmp_path, "b.png", "halfcheetah-vel", improving)
    assert _hatch(without) < 50 and _hatch(with_band) > 500
    assert report.PAPER_NEGATIVE_BANDS["ant-vel"] == (0.6, 1.6)  # the paper's Section 4, for Ant


def test_comparison_figure_draws_each_seed_and_the_means_where_they_are(tmp_path):
    # two arms on three seeds; cvar's V-hat is 0.4 above maml's on every seed
    rows = [{"objective": arm, "seed": s, "violation_rate": v + 0.01 * s, "frac_negative": 0.1,
             "post_return": -20.0 - s, "pre_return": -40.0, "action_std": None}
            for s in range(3) for arm, v in (("maml", 0.1), ("cvar", 0.5))]
    report.comparison_figure(rows, ["maml", "cvar"], tmp_path / "c.png")
    image = mpimg.imread(tmp_path / "c.png")
    assert image.shape[:2] == (396, 1408)  # 4 panels (no action std) x 3.2 inches wide, 3.6 high, 110 dpi
    panel = image[:, : image.shape[1] // 4]  # the V-hat panel
    red = np.argwhere((panel[..., 0] > 0.75) & (panel[..., 1] < 0.3) & (panel[..., 2] < 0.3))
    # the mean markers: maml's (left) sits lower in the image (larger row) than cvar's (right)
    left = red[red[:, 1] < np.median(red[:, 1])]
    right = red[red[:, 1] >= np.median(red[:, 1])]
    assert len(left) > 30 and len(right) > 30
    assert left[:, 0].mean() > right[:, 0].mean() + 100
    assert _pixels_of(panel, np.array([0.6, 0.6, 0.6]), tol=0.25) > 200  # the grey per-seed lines


def test_comparison_figure_keeps_a_panel_with_one_missing_value_and_skips_an_empty_figure(tmp_path):
    rows = [{"objective": arm, "seed": s, "violation_rate": 0.1, "frac_negative": 0.1,
             "post_return": float("nan") if (arm, s) == ("cvar", 1) else -20.0, "pre_return": -40.0}
            for s in range(3) for arm in ("maml", "cvar")]  # one diverged run; no action std at all
    report.comparison_figure(rows, ["maml", "cvar"], tmp_path / "c.png")
    assert mpimg.imread(tmp_path / "c.png").shape[:2] == (396, 1408)  # still 4 panels: post kept
    empty = [{"objective": "maml", "seed": 0}]
    report.comparison_figure(empty, ["maml"], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
