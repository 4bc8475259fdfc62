"""Figures are decoded and looked at: their size, and that each curve or band is drawn in its colour
(a PNG header alone would pass for a blank image)."""

import matplotlib.image as mpimg
import numpy as np

from safemaml.report import before_after_figure, learning_curve
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
