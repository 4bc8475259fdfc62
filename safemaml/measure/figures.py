"""Figures: the paper's Figure 1 (velocity grids) and Figure 2 (direction box plots)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from safemaml.tasks import TaskFamily  # noqa: E402

COLORS = {"pre": "tab:blue", "post": "tab:orange"}
# Where Deleu & Bengio (2018, Section 4 and Figure 1) saw negative adaptation after meta-training:
# "velocities [0.6, 1.1] for Half-Cheetah and [0.6, 1.6] for Ant". Drawn beside ours for comparison.
PAPER_NEGATIVE_BANDS = {"halfcheetah-vel": (0.6, 1.1), "ant-vel": (0.6, 1.6)}
LABELS = {"pre": "before adaptation (θ)", "post": "after one step (θ′)"}


def _bands(ax, x, returns, color, label):
    q = np.percentile(returns, [5, 25, 50, 75, 95], axis=1)
    ax.fill_between(x, q[0], q[4], color=color, alpha=0.15, linewidth=0)
    ax.fill_between(x, q[1], q[3], color=color, alpha=0.3, linewidth=0)
    ax.plot(x, q[2], color=color, label=label)


def before_after_figure(family: TaskFamily, grid: np.ndarray, pre: np.ndarray, post: np.ndarray,
                        path: Path, title: str = "") -> None:
    """pre/post [G, repeats, n] -> PNG: bands over a 1-D grid, box plots for directions,
    a Γ map for 2-D tasks."""
    G = len(grid)
    pre, post = pre.reshape(G, -1), post.reshape(G, -1)
    if family.num_params == 1:  # sampled tasks come unordered; bands need them along the axis
        order = np.argsort(grid[:, 0], kind="stable")
        grid, pre, post = grid[order], pre[order], post[order]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    goal = getattr(family, "goal", None)
    if goal == "direction":
        positions = np.arange(G) * 3.0
        for offset, (phase, data) in zip((-0.6, 0.6), (("pre", pre), ("post", post))):
            ax.boxplot(list(data), positions=positions + offset, widths=1.0, whis=(5, 95), showfliers=False,
                       patch_artist=True, boxprops={"facecolor": COLORS[phase], "alpha": 0.6})
            ax.plot([], [], color=COLORS[phase], label=LABELS[phase], linewidth=8, alpha=0.6)
        ax.set_xticks(positions, [f"direction {d:+g}" for d in grid[:, 0]])
        ax.set_ylabel("return")
    elif family.num_params == 1:
        x = grid[:, 0]
        if family.train_range is not None:
            lo, hi = family.train_range
            ax.axvspan(lo, hi, color="grey", alpha=0.12, label="meta-training range")
        for phase, data in (("pre", pre), ("post", post)):
            _bands(ax, x, data, COLORS[phase], LABELS[phase])
        _mark_negative_adaptation(ax, family.name, x, pre.mean(1) - post.mean(1))
        ax.set_xlabel(family.param_names[0])
        ax.set_ylabel("return")
    else:
        gamma = pre.mean(1) - post.mean(1)
        limit = max(float(np.abs(gamma).max()), 1e-9)
        sc = ax.scatter(grid[:, 0], grid[:, 1], c=gamma, cmap="coolwarm", vmin=-limit, vmax=limit, s=120)
        fig.colorbar(sc, ax=ax, label="mean Γ (> 0: negative adaptation)")
        ax.set_xlabel(family.param_names[0])
        ax.set_ylabel(family.param_names[1])
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _mark_negative_adaptation(ax, family_name: str, x: np.ndarray, gamma: np.ndarray) -> None:
    """Red ticks under the tasks whose mean Γ > 0 here, and the paper's band (hatched) where it has one."""
    band = PAPER_NEGATIVE_BANDS.get(family_name)
    if band is not None:
        ax.axvspan(*band, facecolor="none", edgecolor="tab:red", hatch="//", alpha=0.5, linewidth=0,
                   label=f"paper: negative adaptation, [{band[0]:g}, {band[1]:g}]")
    if (gamma > 0).any():
        ax.plot(x[gamma > 0], np.full(int((gamma > 0).sum()), 0.02), "|", color="tab:red", markersize=12,
                transform=ax.get_xaxis_transform(), label="here: mean Γ > 0")


def learning_curve(metrics_csv: Path | list[dict[str, float]], path: Path, title: str = "") -> None:
    """Pre- and post-update mean return per meta-iteration, from a metrics.csv or its rows as read and checked
    by safemaml.runs.rundir.read_metrics (what `safemaml report` draws)."""
    data: Any  # columns by name: a dict of arrays, or genfromtxt's structured array
    if isinstance(metrics_csv, list):
        data = {k: np.array([r.get(k, np.nan) for r in metrics_csv]) for k in ("iteration", "pre_return",
                                                                                "post_return")}
    else:
        data = np.genfromtxt(metrics_csv, delimiter=",", names=True)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(data["iteration"], data["pre_return"], color=COLORS["pre"], label=LABELS["pre"])
    ax.plot(data["iteration"], data["post_return"], color=COLORS["post"], label=LABELS["post"])
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("mean return")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _number(value) -> float:
    """A plottable value: a missing or non-numeric endpoint (None, absent) is NaN, a gap in the figure."""
    return float(value) if isinstance(value, (int, float)) else float("nan")


def paired_seed_panel(ax, rows: list[dict], arms: list[str], metric: str, title: str) -> None:
    """One endpoint across arms: a grey line per training seed (the unit of every test) and the mean over
    seeds as a red square, so a difference carried by one seed looks different from one on every seed."""
    for seed in sorted({r["seed"] for r in rows}):
        ys = [next(_number(r.get(metric)) for r in rows if r["objective"] == a and r["seed"] == seed) for a in arms]
        ax.plot(range(len(arms)), ys, "-o", color="0.6", alpha=0.6, ms=3)
    means = [np.nanmean([_number(r.get(metric)) for r in rows if r["objective"] == a]) for a in arms]
    ax.plot(range(len(arms)), means, "s", color="tab:red", ms=8, label="mean over seeds")
    ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)


COMPARISON_PANELS = (("violation_rate", "V̂ = fraction of tasks with p̂_T < 1 − β"),
                     ("frac_negative", "fraction of tasks with mean Γ > 0"),
                     ("post_return", "post-update return"), ("pre_return", "pre-update return"),
                     ("action_std", "action std"))


def comparison_figure(rows: list[dict], arms: list[str], path: Path, title: str = "") -> None:
    """compare's endpoints per seed and arm, one panel each (comparison.png)."""
    panels = [(m, t) for m, t in COMPARISON_PANELS if any(np.isfinite(_number(r.get(m))) for r in rows)]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (metric, label) in zip(axes[0], panels):
        paired_seed_panel(ax, rows, arms, metric, label)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="upper right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


Curves = dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]  # {arm: {seed: (iterations, values)}}
ARM_COLORS = ("tab:gray", "tab:red", "tab:blue", "tab:green", "tab:purple")


@dataclass(frozen=True)
class TrainingPanel:
    """One panel of a training figure: a metrics.csv column over meta-iterations, a line per arm and seed."""

    title: str
    curves: Curves
    zero_line: bool = False  # e.g. cvar's C: the constraint is met below 0


def training_figure(panels: list[TrainingPanel], path: Path, since: int | None = None, title: str = "") -> None:
    """Panels side by side: each seed a thin line and each arm's mean over seeds a thick one (the seed is the
    unit, so a trend carried by one seed shows); `since` marks where a continuation began (a dashed line)."""
    arms = list(dict.fromkeys(arm for panel in panels for arm in panel.curves))  # one colour per arm throughout
    colors = {arm: ARM_COLORS[i % len(ARM_COLORS)] for i, arm in enumerate(arms)}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for arm, seeds in panel.curves.items():
            color = colors[arm]
            for x, y in seeds.values():
                ax.plot(x, y, color=color, alpha=0.35, linewidth=0.8)
            length = min(len(x) for x, _ in seeds.values())
            mean = np.mean([y[:length] for _, y in seeds.values()], axis=0)
            ax.plot(next(iter(seeds.values()))[0][:length], mean, color=color, linewidth=2,
                    label=f"{arm} (mean of {len(seeds)} seeds)")
        if panel.zero_line:
            ax.axhline(0, color="black", linewidth=0.8)
        if since is not None:
            ax.axvline(since, color="black", linestyle="--", linewidth=0.8)
        ax.set_xlabel("meta-iteration")
        ax.set_title(panel.title, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
