"""Write a comparison's arms file from its tuning studies, by the rule fixed in docs/results.md before they ran.

- A constrained objective (one study each): among its complete trials whose mean post-update return is at least
  the median over those trials, the one with the lowest mean V-hat (ties: the higher post-update return). The
  median floor keeps a trial that lowers V-hat only by wrecking the policy from being chosen.
- maml-alpha (the study of MAML's inner step size): the trial with the highest mean post-update return, MAML's
  own goal.
- maml-std: MAML with its std held (policy.learn_std = false) at the mean action std of the chosen constrained
  arm with the lowest V-hat.
- <that objective>-neutral: the same objective and parameters with aim = "neutral" (cvar only: the same penalty
  magnitude aimed at mean Gamma instead of the tail).
The first arm is `maml` (the base config's MAML, the reference of every paired test).

The rule is named `median-floor` (RULES): `safemaml study pick --rule median-floor --studies DIR/study-lagrangian
DIR/study-cvar DIR/study-quantile [--control DIR/study-maml] --out DIR/arms.toml`.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import optuna
import tomllib

from safemaml.config import from_dict, toml_value
from safemaml.errors import SafeMamlError
from safemaml.studies.study import is_config_key, open_storage, storage_url

Trial = dict  # {"number", "params", "objective", "post", "v_hat", "std"}


def read_trials(directory: Path) -> list[Trial]:
    """The complete trials of the study in DIR (SQLite study.db, named after DIR) with their mean endpoints."""
    storage = open_storage(storage_url(directory, None))
    study = optuna.load_study(study_name=directory.name, storage=storage)
    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        out.append({"number": t.number, "params": dict(t.params),
                    "objective": from_dict(tomllib.loads(t.user_attrs["config"])).objective_name,
                    "post": float(t.user_attrs.get("post_return mean", math.nan)),
                    "v_hat": float(t.user_attrs.get("violation_rate mean", math.nan)),
                    "std": float(t.user_attrs.get("action_std mean", math.nan))})
    return out


def pick_constrained(trials: list[Trial]) -> Trial:
    """Lowest mean V-hat among the trials whose mean post-update return is at least the median."""
    usable = [t for t in trials if math.isfinite(t["post"]) and math.isfinite(t["v_hat"])]
    if not usable:
        raise SafeMamlError("no complete trial with finite endpoints")
    floor = statistics.median(t["post"] for t in usable)
    return min((t for t in usable if t["post"] >= floor), key=lambda t: (t["v_hat"], -t["post"]))


def pick_maml(trials: list[Trial]) -> Trial:
    """The highest mean post-update return."""
    usable = [t for t in trials if math.isfinite(t["post"])]
    if not usable:
        raise SafeMamlError("no complete trial with a finite post-update return")
    return max(usable, key=lambda t: t["post"])


def _settings(trial: Trial) -> dict[str, object]:
    out: dict[str, object] = {"objective.name": trial["objective"]}
    for name, value in trial["params"].items():
        out[name if is_config_key(name) else f"objective.{name}"] = value
    return out


def arms(constrained: list[Trial], maml: Trial | None) -> dict[str, dict[str, object]]:
    """The arms, in order: maml, the tuned controls, each chosen objective, the neutral ablation."""
    table: dict[str, dict[str, object]] = {"maml": {"objective.name": "maml"}}
    if maml is not None:
        table["maml-alpha"] = _settings(maml)
    lowest = min(constrained, key=lambda t: t["v_hat"])
    if math.isfinite(lowest["std"]):
        table["maml-std"] = {"objective.name": "maml", "policy.learn_std": False, "policy.init_std": lowest["std"]}
    for trial in constrained:
        table[trial["objective"]] = _settings(trial)
    for trial in constrained:
        if trial["objective"] == "cvar":
            table["cvar-neutral"] = _settings(trial) | {"objective.aim": "neutral"}
    return table


RULES = {"median-floor": (pick_constrained, pick_maml)}  # rule name -> (constrained arm's pick, control's pick)


def pick_arms(studies: list[Path], control: Path | None, out: Path, rule: str = "median-floor") -> str:
    """Write the arms file `out` from the constrained `studies` and the MAML `control` study by `rule`;
    return its text. Refuses an unknown rule, a missing study or an existing `out` before writing."""
    if rule not in RULES:
        raise SafeMamlError(f"unknown pick rule {rule!r}; known: {', '.join(RULES)}")
    if out.exists():
        raise SafeMamlError(f"{out} exists; the arms are picked once (delete it to pick again)")
    if not out.parent.is_dir():
        raise SafeMamlError(f"--out {out}: the folder {out.parent} does not exist")
    for directory in [*studies, *([control] if control else [])]:
        if not (directory / "study.db").is_file():
            raise SafeMamlError(f"{directory} holds no study.db")
    constrained_pick, control_pick = RULES[rule]
    try:
        constrained = [constrained_pick(read_trials(d)) for d in studies]
        maml = control_pick(read_trials(control)) if control else None
    except KeyError as exc:
        raise SafeMamlError(f"a study without safemaml's trial attributes ({exc})") from None
    sources = [str(d) for d in [*studies, *([control] if control else [])]]
    text = to_toml(arms(constrained, maml), sources, rule)
    out.write_text(text)
    return text


def to_toml(table: dict[str, dict[str, object]], sources: list[str], rule: str = "median-floor") -> str:
    lines = [f"# Written by safemaml study pick (rule {rule}, safemaml.studies.pick) from " + ", ".join(sources) + "."]
    for name, settings in table.items():
        lines += ["", f"[arms.{name}]"] + [f"{key} = {toml_value(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"
