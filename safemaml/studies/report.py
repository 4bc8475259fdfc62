"""`safemaml study show`: the trials as a table and CSV, the Pareto front or best trial, parameter
importances and figures, all through Optuna's own tools (trials_dataframe, optuna.importance,
optuna.visualization.matplotlib)."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

from safemaml.studies.study import METRIC_NAMES, METRICS, StudySettings


def _value_of(i: int, sign: float = 1.0) -> Callable[[FrozenTrial], float]:
    """A trial's i-th objective value (times `sign`): the target Optuna's tools read."""
    def value(t: FrozenTrial) -> float:
        return sign * t.values[i]

    return value


def trials_table(study: optuna.Study, settings: StudySettings):
    """study.trials_dataframe with the values named, per-seed and mean user attributes, the constraint."""
    df = study.trials_dataframe(attrs=("number", "state", "params", "values", "user_attrs", "system_attrs"))
    df = df.drop(columns=[c for c in df.columns if c.startswith("values_") or c == "value"])  # = "<metric> mean"
    if "system_attrs_constraints:eq6_uncertified" in df:
        df = df.rename(columns={"system_attrs_constraints:eq6_uncertified": "eq6_uncertified"})
    keep = [c for c in df.columns if not c.startswith("system_attrs_") and c not in ("user_attrs_config",)]
    df = df[keep].rename(columns=lambda c: c.removeprefix("user_attrs_").removeprefix("params_"))
    retry_of = {t.number: t.system_attrs.get("failed_trial") for t in study.get_trials(deepcopy=False)}
    df["retry_of"] = df["number"].map(retry_of).astype("Int64")
    return df


def _summary_columns(df, settings: StudySettings) -> list[str]:
    params = list(settings.distributions)
    per_seed = [f"{m} seed {s}" for m in settings.metrics for s in settings.seeds]
    means = [f"{m} mean" for m in settings.metrics]
    cols = ["number", "state", *params, *means, *per_seed, "eq6_uncertified", "fail_reason", "retry_of"]
    return [c for c in cols if c in df.columns]


# PED-ANOVA compares the top 10% of trials with all of them; Optuna's documentation asks for at least 5 trials
# in that top set. With fewer, the "importance" only says how atypical one or two trials' parameters are: in
# HalfCheetahVel's 7-trial cvar study, trial 1 was the best on both values, so both got the same importances
# (and so would the trial number as a target).
MIN_TOP_TRIALS = 5
TOP_QUANTILE = 0.1  # PedAnovaImportanceEvaluator's default target_quantile


def importances(study: optuna.Study, settings: StudySettings) -> dict[str, dict[str, Any]]:
    """PED-ANOVA importances (optuna.importance's default) of each parameter for each metric, or the reason
    they are unavailable: too few complete trials, or a metric that never varies."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2 or not settings.distributions:
        return {}
    n_top = math.ceil(TOP_QUANTILE * len(complete))
    if n_top < MIN_TOP_TRIALS:
        need = int((MIN_TOP_TRIALS - 1) / TOP_QUANTILE) + 1  # the least n with ceil(0.1 n) >= 5: 41
        reason = (f"{len(complete)} complete trials: PED-ANOVA's top 10% would hold {n_top}, "
                  f"and it needs {MIN_TOP_TRIALS} (at least {need} trials)")
        return {metric: {"unavailable": reason} for metric in settings.metrics}
    out: dict[str, dict[str, Any]] = {}
    for i, metric in enumerate(settings.metrics):
        sign = -1.0 if METRICS[metric] == "maximize" else 1.0  # PED-ANOVA explains low target values
        if len({t.values[i] for t in complete}) == 1:  # nothing to explain; PED-ANOVA would split it evenly
            out[metric] = {"unavailable": f"every complete trial has {metric} = {complete[0].values[i]:.4g}"}
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[metric] = optuna.importance.get_param_importances(
                    study, target=_value_of(i, sign))
        except (RuntimeError, ValueError) as exc:  # e.g. every trial has the same value
            out[metric] = {"unavailable": str(exc)}
    return out


def without_constraints(study: optuna.Study) -> optuna.Study:
    """An in-memory copy of the complete trials without their constraint: its Pareto front is the
    unconstrained one (shown when no trial is feasible). Each copy keeps its number as `number`."""
    copy = optuna.create_study(directions=study.directions)
    copy.add_trials([optuna.trial.create_trial(params=t.params, distributions=t.distributions, values=t.values,
                                               user_attrs={"number": t.number})
                     for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))])
    return copy


def _feasible(study: optuna.Study) -> bool:
    return any(all(v <= 0 for v in t.constraints.values())
               for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _save(ax, path: Path) -> None:
    figure = ax.flat[0].figure if hasattr(ax, "flat") else ax.figure
    figure.set_size_inches(max(figure.get_size_inches()[0], 6), max(figure.get_size_inches()[1], 4.5))
    figure.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)


def figures(study: optuna.Study, settings: StudySettings, out: Path) -> list[Path]:
    """pareto.png (multi-objective) or history.png, and slice.png over beta and delta where searched."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    names = [METRIC_NAMES[m] for m in settings.metrics]
    written: list[Path] = []
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return written
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning of optuna.visualization.matplotlib
        if len(names) == 2:
            ax = ovm.plot_pareto_front(study, target_names=names)
            ax.set_title(f"Pareto front ({len(settings.seeds)} seeds per trial; "
                         f"V̂ at β = {settings.evaluation.beta})")
            _save(ax, out / "pareto.png")
            written.append(out / "pareto.png")
            if not _feasible(study):
                ax = ovm.plot_pareto_front(without_constraints(study), target_names=names)
                ax.set_title(f"Pareto front without the Eq. 6 constraint (no trial certified; "
                             f"{len(settings.seeds)} seeds per trial)", fontsize=10)
                _save(ax, out / "pareto_unconstrained.png")
                written.append(out / "pareto_unconstrained.png")
        for i, name in enumerate(names):
            ax = ovm.plot_optimization_history(study, target=_value_of(i), target_name=name)
            path = out / f"history_{settings.metrics[i]}.png"
            _save(ax, path)
            written.append(path)
        sliced: list[str] = [p for p in ("beta", "delta") if p in settings.distributions]
        for i, name in enumerate(names):
            if not sliced:
                break
            ax = cast(Any, ovm.plot_slice(study, params=sliced, target=_value_of(i), target_name=name))
            path = out / f"slice_{settings.metrics[i]}.png"
            _save(ax, path)
            written.append(path)
    return written


def show(study: optuna.Study, settings: StudySettings, out: Path) -> str:
    """Write trials.csv, importances.json and the figures into `out`; return the text report."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    df = trials_table(study, settings)
    df.to_csv(out / "trials.csv", index=False)
    cfg = settings.base
    lines = [f"study {study.study_name}: objective {cfg.objective_name}, {cfg.tasks}, {cfg.iterations} iterations, "
             f"seeds {', '.join(map(str, settings.seeds))}; evaluation at beta = {settings.evaluation.beta}, "
             f"delta = {settings.evaluation.delta} ({settings.evaluation.repeats} rounds x "
             f"{settings.evaluation.trajectories} trajectories); unit: the training seed"]
    states = df["state"].value_counts().to_dict() if len(df) else {}
    lines.append("trials: " + (", ".join(f"{n} {s}" for s, n in states.items()) or "none"))
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 60,
                           "display.float_format", "{:.4g}".format):
        lines += ["", df[_summary_columns(df, settings)].to_string(index=False), ""]
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if complete and len(settings.metrics) == 2:
            front = sorted(t.number for t in study.best_trials)
            lines.append("Pareto front (feasible trials only, where the Eq. 6 constraint is set): "
                         + (", ".join(f"trial {n}" for n in front) or "empty: no trial satisfies the constraint"))
            if not front:
                free = sorted(t.user_attrs["number"] for t in without_constraints(study).best_trials)
                lines.append("Pareto front without the constraint: " + ", ".join(f"trial {n}" for n in free))
        elif complete:
            try:
                best = study.best_trial
                lines.append(f"best trial: {best.number}, {settings.metric} {best.value:.4g}, {best.params}")
            except ValueError:
                lines.append("best trial: none is feasible")
    imp = importances(study, settings)
    (out / "importances.json").write_text(json.dumps(imp, indent=2) + "\n")
    for metric, values in imp.items():
        lines.append(f"importance for {metric}: " + ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k}: {v}" for k, v in values.items()))
    written = figures(study, settings, out)
    lines.append("written: " + ", ".join(str(p) for p in [out / "trials.csv", out / "importances.json", *written]))
    return "\n".join(lines) + "\n"
