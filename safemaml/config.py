"""Typed run configuration, loadable from TOML (presets: safemaml/presets/*.toml) and overridable by flags.

A config file has top-level run settings and the tables [policy], [adapt], [meta] and
[objective] (the objective's name and parameters). Unknown keys, wrong types and non-finite
numbers are one-line errors, never ignored. A file may start from a preset: `preset = "nav2d"`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from safemaml.checks import MAX_SEED
from safemaml.errors import SafeMamlError

DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")


# TRPO's curvature choices (safemaml.engine.curvature.make_fvp builds each).
CURVATURES = ("analytic", "exact", "gauss-newton", "adapted-fisher")
# TRPO's CG preconditioners and step-length measures (safemaml.engine.metaopt.trpo_step applies each).
CG_PRECONDITIONERS = ("none", "fisher-diagonal", "adapted-fisher")
CG_STEP_LENGTHS = ("product", "residual")


def option(default: Any, help: str, **cli: Any) -> Any:
    """A dataclass field with its help text: the one place a setting's type, default and meaning are stated.

    safemaml.cli.options builds command-line flags from such fields. `cli` may hold `flag` (the flag's name
    when it is not the field's), `metavar`, `choices` and `default_text` (what the default means where its
    value cannot say it, e.g. None standing for "the run's objective")."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class AdaptConfig:
    """The inner loop: step size, number of steps, and first- or second-order meta-gradients."""

    fast_lr: float = option(0.1, "inner step size (alpha)", metavar="ALPHA")
    num_steps: int = option(1, "inner gradient steps")
    first_order: bool = option(False, "first-order meta-gradient (default: second order)")
    vectorize: str = option("auto", "vmap, loop, or auto: vmap on CUDA, the per-task loop on CPU",
                            choices=("auto", "vmap", "loop"))
    resample: bool = option(False, "num_steps > 1: sample fresh trajectories before every inner step "
                                   "(the paper's code)")

    def __post_init__(self) -> None:
        if self.vectorize not in ("auto", "vmap", "loop"):
            raise SafeMamlError(f"adapt.vectorize must be auto, vmap or loop, got {self.vectorize!r}")
        if not self.fast_lr > 0:
            raise SafeMamlError(f"adapt.fast_lr must be > 0, got {self.fast_lr}")


@dataclass(frozen=True)
class MetaOptConfig:
    """The outer optimiser: 'trpo' (the paper's defaults) or 'adam'."""

    name: str = option("trpo", "outer optimiser", flag="meta-optimizer", choices=("trpo", "adam"))
    max_kl: float = option(0.01, "TRPO trust region (mean KL of a step)")
    cg_iters: int = option(10, "TRPO conjugate-gradient iterations")
    cg_damping: float = option(1e-5, "TRPO damping added to the curvature")
    ls_max_steps: int = option(15, "TRPO line-search candidates")
    ls_backtrack_ratio: float = option(0.8, "TRPO line-search step shrink factor")
    lr: float = option(1e-3, "Adam's learning rate (Adam only)")
    fvp_subsample: float = option(1.0, "fraction of trajectories for TRPO's curvature (1.0: exact, the paper's)")
    curvature: str = option("analytic", "TRPO's curvature (safemaml.engine.curvature)", choices=CURVATURES)
    cg_precondition: str = option("none", "TRPO's CG preconditioner: none (plain CG, the paper's), "
                                  "fisher-diagonal (the adapted policies' Fisher diagonal) or adapted-fisher "
                                  "(their Fisher, by a few inner CG iterations)", choices=CG_PRECONDITIONERS)
    cg_step_length: str = option("product", "TRPO's d'Fd for the step length: product (one more curvature "
                                 "product, the paper's) or residual (from CG's residual, no product)",
                                 choices=CG_STEP_LENGTHS)

    def __post_init__(self) -> None:
        if self.name not in ("trpo", "adam"):
            raise SafeMamlError(f"unknown meta-optimizer {self.name!r}; known: trpo, adam")
        for name in ("max_kl", "lr", "ls_backtrack_ratio"):
            if not getattr(self, name) > 0:
                raise SafeMamlError(f"meta.{name} must be > 0, got {getattr(self, name)}")
        if self.curvature not in CURVATURES:
            raise SafeMamlError(f"unknown meta.curvature {self.curvature!r}; known: {', '.join(CURVATURES)}")
        if self.cg_precondition not in CG_PRECONDITIONERS:
            raise SafeMamlError(f"unknown meta.cg_precondition {self.cg_precondition!r}; "
                                f"known: {', '.join(CG_PRECONDITIONERS)}")
        if self.cg_step_length not in CG_STEP_LENGTHS:
            raise SafeMamlError(f"unknown meta.cg_step_length {self.cg_step_length!r}; "
                                f"known: {', '.join(CG_STEP_LENGTHS)}")
        if not 0 < self.fvp_subsample <= 1:
            raise SafeMamlError(f"meta.fvp_subsample must be in (0, 1], got {self.fvp_subsample}")
        if self.cg_damping < 0 or self.cg_iters < 1 or self.ls_max_steps < 1:
            raise SafeMamlError("meta.cg_damping must be >= 0, cg_iters and ls_max_steps >= 1")


@dataclass(frozen=True)
class PolicyConfig:
    hidden: tuple[int, ...] = option((100, 100), "hidden layer sizes")
    activation: str = option("relu", "hidden layers' activation")
    init_std: float = option(1.0, "initial standard deviation of the actions")
    min_std: float = option(1e-6, "floor on the policy's standard deviation (the paper's code)")
    learn_std: bool = option(True, "false: hold the std at its initial value (the matched-std control of "
                                   "docs/results.md)")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run; the defaults are the paper's halfcheetah-vel setting."""

    tasks: str = option("halfcheetah-vel", "task family, see `safemaml tasks`", metavar="FAMILY",
                        default_text="halfcheetah-vel, or the --config's")
    iterations: int = option(500, "meta-iterations in all", metavar="N")
    seed: int = option(0, "seed of everything random")
    device: str = option("cpu", "cpu, cuda or cuda:N")
    meta_batch_size: int = option(40, "tasks per meta-batch (K)", metavar="K")
    fast_batch_size: int = option(20, "pre-update trajectories per task (n)", metavar="N")
    post_batch_size: int = option(20, "post-update trajectories per task (m)", metavar="N")
    gamma: float = option(0.99, "discount factor")
    gae_lambda: float = option(1.0, "GAE's lambda")
    checkpoint_every: int = option(10, "keep checkpoints/iter_N.pt every N iterations", metavar="N")
    clip_actions: bool = option(True, "clip actions to the action bounds before the environment (the paper's "
                                      "rewards)")
    init: str = option("", "start from the policy of RUN (a run folder or checkpoint) instead of a fresh one",
                       metavar="RUN")
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    meta: MetaOptConfig = field(default_factory=MetaOptConfig)
    objective: dict[str, Any] = field(default_factory=lambda: {"name": "maml"})

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise SafeMamlError(f"seed must be >= 0, got {self.seed}")
        if self.seed > MAX_SEED:  # torch's generators take 64-bit seeds
            raise SafeMamlError(f"seed must be <= {MAX_SEED}, got {self.seed}")
        for name in ("iterations", "meta_batch_size", "fast_batch_size", "post_batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise SafeMamlError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise SafeMamlError("gamma and gae_lambda must be in [0, 1]")
        if self.adapt.fast_lr < 0 or self.adapt.num_steps < 1:
            raise SafeMamlError("adapt.fast_lr must be >= 0 and adapt.num_steps >= 1")
        if not DEVICE_PATTERN.match(self.device):
            raise SafeMamlError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")

    @property
    def objective_name(self) -> str:
        return str(self.objective.get("name", "maml"))

    @property
    def objective_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.objective.items() if k != "name"}


DEFAULT_ROUNDS = 90  # from 89 rounds on, p_T = 0.97 passes (beta = 0.1, alpha1 = 0.05) w.p. >= 0.8; at 90: 0.87
DEFAULT_SAMPLE = 40  # tasks drawn from p(T) when neither a sample size nor a grid is given


@dataclass(frozen=True)
class EvalRequest:
    """What an evaluation measures (safemaml.runs.evaluate): which tasks, how many rounds and trajectories,
    the seed, the tolerances of Eq. 6 and the device.

    `safemaml evaluate`, `safemaml.evaluate`, compare and studies all pass one of these; summary.json's
    `request` is its fields in this order, then the evaluation's version and the checkpoint's hash
    (safemaml.runs.evaluate.request_record), and an evaluation is reused only for an equal record. None
    means "not given": `resolved` fills it (evaluate: DEFAULT_ROUNDS and the run's objective's beta and
    delta; a study: its own defaults, safemaml.studies.study.STUDY_EVALUATION).
    """

    grid: str | None = option(None, "evaluate on a grid of task parameters START..STOP (included) on every axis "
                                    "instead of tasks drawn from p(T), or 'default' for the family's grid; "
                                    "negative values work: --grid -0.5:0.5:0.25 (for figures: the certificate "
                                    "then speaks of the grid, not of p(T))", metavar="START:STOP:STEP")
    sample: int | None = option(None, "evaluate on N tasks drawn i.i.d. from the training distribution p(T)",
                                metavar="N", default_text=f"{DEFAULT_SAMPLE}, unless a grid is given")
    task_seed: int = option(0, "seed of the sample of tasks (another seed than compare's 0 tunes a study on "
                               "other tasks than a comparison evaluates on)", metavar="S")
    trajectories: int = option(20, "trajectories per task and round", metavar="N")
    repeats: int | None = option(None, "independent rounds per task (R >= 29 can certify at beta = 0.1)",
                                 metavar="R", default_text=f"{DEFAULT_ROUNDS}, so that p_T = 0.97 passes at "
                                                           "beta = 0.1 with probability 0.87")
    seed: int = option(0, "evaluation seed (the same for every run evaluated: common random numbers)")
    beta: float | None = option(None, "per-task tolerance of Eq. 6 for V-hat and the certificate, in (0, 1)",
                                default_text="the run's objective")
    delta: float | None = option(None, "fraction of tasks allowed to violate, in (0, 1)",
                                 default_text="the run's objective")
    device: str = option("cpu", "cpu, cuda or cuda:N")

    def resolved(self, defaults: EvalRequest) -> EvalRequest:
        """This request with every field left None taken from `defaults`."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        return dataclasses.replace(defaults, **given)

    def levels(self) -> tuple[int, float, float]:
        """(repeats, beta, delta) of a resolved request; one still left None is a SafeMamlError."""
        if self.repeats is None or self.beta is None or self.delta is None:
            raise SafeMamlError(f"the evaluation request {self} has repeats, beta or delta unresolved")
        return self.repeats, self.beta, self.delta

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> EvalRequest:
        """The request of a summary.json's `request` (its version and checkpoint hash left aside)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


def parse_value(text: str) -> Any:
    """A command-line value as TOML reads it (0.1 -> float, true -> bool, [8, 8] -> list), else the text
    itself (dual -> "dual"): what --set, --fix, --search and objective flags are given as."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


SECTIONS = {"policy": PolicyConfig, "adapt": AdaptConfig, "meta": MetaOptConfig}
TOP_LEVEL = {f.name for f in dataclasses.fields(TrainConfig)} - {*SECTIONS, "objective"}


def _unknown(names: set[str], known: list[str], where: str) -> SafeMamlError:
    hints = [difflib.get_close_matches(n, known, n=1) for n in sorted(names)]
    hint = "".join(f" (did you mean {h[0]}?)" for h in hints if h)
    return SafeMamlError(f"unknown setting(s) {', '.join(sorted(names))} in {where}{hint}; known: {', '.join(known)}")


def _typed(value: Any, default: Any, name: str) -> Any:
    """`value` converted to the type of `default`, or a one-line error naming `name`."""
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in value):
            raise SafeMamlError(f"{name} must be a list of integers such as [64, 64], got {value!r}")
        return tuple(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SafeMamlError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if default is not dataclasses.MISSING and (not isinstance(value, type(default)) or isinstance(value, bool)):
        kind = {"int": "an integer", "float": "a number", "str": "a string"}.get(type(default).__name__,
                                                                                 f"a {type(default).__name__}")
        raise SafeMamlError(f"{name} must be {kind}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SafeMamlError(f"{name} must be a finite number, got {value!r}")
    return value


def _build(cls, values: Any, where: str):
    if not isinstance(values, dict):
        raise SafeMamlError(f"{where} must be a table ([{where}] with key = value lines), got {values!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise _unknown(unknown, list(known), where)
    prefix = "" if cls is TrainConfig else f"{where}."
    kwargs = {key: _typed(value, known[key].default, prefix + key) for key, value in values.items()}
    return cls(**kwargs)


def _objective_table(values: Any) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise SafeMamlError(f"objective must be a table ([objective] with name = ...), got {values!r}")
    table = dict(values)
    table.setdefault("name", "maml")
    for key, value in table.items():
        if isinstance(value, dict):
            raise SafeMamlError(f"objective.{key} must be a value, not a table")
        if not isinstance(value, (bool, int, float, str)):
            raise SafeMamlError(f"objective.{key} must be a number, a string or true/false, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SafeMamlError(f"objective.{key} must be a finite number, got {value!r}")
    if not isinstance(table["name"], str):
        raise SafeMamlError(f"objective.name must be a string, got {table['name']!r}")
    return table


PLAIN_CG = {"cg_precondition": "none", "cg_step_length": "product"}  # TRPO's direction before issue 28


def _meta_table(meta: Any) -> Any:
    """A [meta] table that sets cg_iters but not cg_precondition was written before TRPO's direction became a
    setting (every saved run config and preset states cg_iters): its cg_iters counted plain CG iterations, so it
    keeps plain CG and the product step length, whatever today's defaults are. Runs resume as they were trained."""
    if isinstance(meta, dict) and "cg_iters" in meta and "cg_precondition" not in meta:
        return {**PLAIN_CG, **meta}
    return meta


def from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    data = dict(data)
    if "meta" in data:
        data["meta"] = _meta_table(data["meta"])
    sections = {name: _build(cls, data.pop(name, {}), name) for name, cls in SECTIONS.items()}
    objective = _objective_table(data.pop("objective", {}))
    cfg = _build(TrainConfig, data, where)
    return dataclasses.replace(cfg, objective=objective, **sections)


# ---- presets: the paper's per-family settings, shipped inside the package ----------------


def preset_names() -> list[str]:
    folder = resources.files("safemaml") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def preset_data(name: str) -> dict[str, Any]:
    """The raw table of preset `name` (safemaml/presets/NAME.toml)."""
    if name not in preset_names():
        raise SafeMamlError(f"no preset {name!r}; presets: {', '.join(preset_names())}")
    text = (resources.files("safemaml") / "presets" / f"{name}.toml").read_text()
    return tomllib.loads(text)


def preset(name: str) -> TrainConfig:
    """The paper's setting for task family `name`, or the defaults with tasks = name (whether `name` is a
    family is checked where families are known: safemaml.tasks.get_family, called by api.validate)."""
    if name in preset_names():
        return from_dict(preset_data(name), where=f"preset {name}")
    return TrainConfig(tasks=name)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load(path: str | Path) -> TrainConfig:
    """A config file; `preset = "NAME"` at its top starts from that preset and the file's values
    override it."""
    path = Path(path)
    if not path.is_file():
        raise SafeMamlError(f"config file {str(path)!r} not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SafeMamlError(f"{path}: invalid TOML: {exc}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise SafeMamlError(f"{path}: not a readable TOML text file ({exc.__class__.__name__})") from None
    base = data.pop("preset", None)
    if base is not None:
        if not isinstance(base, str):
            raise SafeMamlError(f"{path.name}: preset must be a preset name, got {base!r}")
        data = _merge(preset_data(base), data)
    return from_dict(data, where=path.name)


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def override(cfg: TrainConfig, settings: dict[str, Any]) -> TrainConfig:
    """Apply dotted overrides such as {"adapt.fast_lr": 0.05, "iterations": 3, "objective.beta": 0.1}."""
    data = to_dict(cfg)
    for key, value in settings.items():
        section, _, name = key.rpartition(".")
        if not name:
            raise SafeMamlError(f"setting {key!r} has no name")
        if section and section not in (*SECTIONS, "objective"):
            head = section.split(".")[0]
            if head in (*SECTIONS, "objective") or head in TOP_LEVEL:
                raise SafeMamlError(f"{section} is a value, not a table: cannot set {key}")
            close = difflib.get_close_matches(head, [*SECTIONS, "objective"], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SafeMamlError(f"unknown config section {head!r} in {key}{hint}; sections: "
                                f"{', '.join([*SECTIONS, 'objective'])}")
        if not section and name in (*SECTIONS, "objective"):
            raise SafeMamlError(f"{name} is a table: set its values as {name}.KEY=VALUE")
        (data[section] if section else data)[name] = value
    return from_dict(data, where="overrides")


def toml_value(value: Any) -> str:
    """One value as TOML (bool, number, escaped basic string, array); what config files and arms files are written with."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):  # a TOML basic string: quote, backslash and control characters escaped
        return '"' + "".join(f"\\u{ord(c):04x}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F else c
                             for c in value) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise SafeMamlError(f"cannot write {value!r} to TOML")


def dumps(cfg: TrainConfig) -> str:
    """The resolved config as TOML (round-trips through `from_dict`)."""
    data = to_dict(cfg)
    tables = {k: data.pop(k) for k in (*SECTIONS, "objective")}
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items()]
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"
