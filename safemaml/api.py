"""The public Python API: `safemaml.train`, `safemaml.resume`, `safemaml.runs.evaluate`, `safemaml.load_run`.

The `safemaml` command is a thin layer over these functions; everything it can do, a notebook can:

    import safemaml
    run = safemaml.train("nav2d", "runs/nav2d", iterations=3, adapt__fast_lr=0.05)
    summary = safemaml.evaluate(run.path, trajectories=10)
    run = safemaml.load_run("runs/nav2d")
    run.metrics            # metrics.csv (a pandas DataFrame when pandas is installed)
    run.evaluations["eval"].tasks
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safemaml import config as config_io
from safemaml.checks import bool_arg, check_eval_request, int_arg, optional, path_arg, str_arg
from safemaml.config import EvalRequest, TrainConfig
from safemaml.errors import SafeMamlError
from safemaml.runs.rundir import RunDir


def resolve_config(config: TrainConfig | str | Path | None = None, overrides: dict[str, Any] | None = None,
                   tasks: str | None = None) -> TrainConfig:
    """A TrainConfig from a config object, a TOML path or a preset name (default: `tasks`' preset,
    else halfcheetah-vel), with dotted overrides applied ({"adapt.fast_lr": 0.05})."""
    optional(str_arg, tasks, "tasks")
    if overrides is not None and not isinstance(overrides, dict):
        raise SafeMamlError(f"overrides must be a dict of settings, got {type(overrides).__name__}")
    if isinstance(config, TrainConfig):
        base = config
    elif config is not None and not isinstance(config, (str, Path)):
        raise SafeMamlError(f"config must be a TrainConfig, a TOML file or a preset name, got {config!r} "
                            f"({type(config).__name__})")
    elif config is None:
        base = _preset(tasks or "halfcheetah-vel")
    elif isinstance(config, Path) or Path(config).suffix == ".toml" or Path(config).exists() or "/" in config:
        base = config_io.load(config)
    else:
        base = _preset(str(config))
    settings = dict(overrides or {})
    if tasks is not None:
        settings.setdefault("tasks", tasks)
    return config_io.override(base, settings) if settings else base


def _preset(name: str) -> TrainConfig:
    """The preset of family `name`; an unknown family is one line with a suggestion."""
    from safemaml.tasks import get_family

    get_family(name)
    return config_io.preset(name)


def _dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    """Keyword overrides: `adapt__fast_lr=0.05` means "adapt.fast_lr"."""
    return {key.replace("__", "."): value for key, value in overrides.items()}


def validate(cfg: TrainConfig) -> None:
    """Everything about `cfg` that can be checked before a run folder is touched."""
    from objectives import make_objective
    from safemaml.engine.learner import policy_spec, torch_device
    from safemaml.tasks import get_family

    family = get_family(cfg.tasks)
    torch_device(cfg.device)
    make_objective(cfg.objective_name, **cfg.objective_params)
    policy_spec(cfg, family)


def train(config: TrainConfig | str | Path | None = None, out: str | Path | None = None, *, quiet: bool = True,
          tensorboard: bool = False, **overrides: Any) -> Run:
    """Meta-train a new run into `out` and return it (see `load_run`).

    `config`: a TrainConfig, a TOML file, or a preset name such as "nav2d". `overrides`: config
    values, with `__` for the dot (`iterations=3, adapt__fast_lr=0.05, objective__name="cvar"`).
    """
    from safemaml.runs import train as trainer

    bool_arg(quiet, "quiet"), bool_arg(tensorboard, "tensorboard")
    folder: Path | None = optional(path_arg, out, "out")  # before the config: train("nav2d", 42) names `out`
    settings = _dotted(overrides)
    cfg = resolve_config(config, settings, tasks=settings.pop("tasks", None))  # tasks="nav2d": nav2d's preset
    validate(cfg)
    out = folder if folder is not None else default_out(cfg)
    trainer.train(cfg, out, quiet=quiet, tensorboard=tensorboard)
    return load_run(out)


def default_out(cfg: TrainConfig) -> Path:
    return Path(f"runs/{cfg.tasks}-{cfg.objective_name}-seed{cfg.seed}")


def resume(run: str | Path, iterations: int | None = None, device: str | None = None, *, quiet: bool = True,
           tensorboard: bool = False) -> Run:
    """Continue a run from its last checkpoint (to `iterations` in all, default: its config's)."""
    from safemaml.runs import train as trainer

    folder = RunDir(path_arg(run, "run"))
    optional(int_arg, iterations, "iterations", 1), optional(str_arg, device, "device")
    bool_arg(quiet, "quiet"), bool_arg(tensorboard, "tensorboard")
    cfg = folder.read_config()
    settings = {k: v for k, v in (("iterations", iterations), ("device", device)) if v is not None}
    cfg = config_io.override(cfg, settings) if settings else cfg
    validate(cfg)
    trainer.train(cfg, folder.path, resume=True, quiet=quiet, tensorboard=tensorboard)
    return load_run(folder.path)


def evaluate(run: str | Path, out: str | Path | None = None, request: EvalRequest | None = None, *,
             reuse: bool = False, **options: Any) -> dict:
    """Before/after returns of the run's last checkpoint on tasks drawn from p(T) (40 by default) or a
    grid; writes RUN/eval (or `out`) and returns the summary (summary.json).

    `request`: an EvalRequest (safemaml.config), or its fields as keywords (`grid="default"`,
    `trajectories=10`, `sample=40`, `task_seed`, `repeats`, `seed`, `beta`, `delta`, `device`); beta and
    delta default to the run's objective, repeats to DEFAULT_ROUNDS. `reuse`: keep `out` as it is and return
    its summary when it already holds this evaluation (the same last.pt bytes, request and evaluation
    version), so that a resumed script does not spend CPU-hours evaluating again."""
    from safemaml.engine.learner import torch_device
    from safemaml.runs.evaluate import evaluate_run

    run, out = path_arg(run, "run"), optional(path_arg, out, "out")
    if request is not None and not isinstance(request, EvalRequest):
        raise SafeMamlError(f"request must be an EvalRequest, got {type(request).__name__}")
    if request is not None and options:
        raise SafeMamlError("give an EvalRequest or its fields as keywords, not both")
    if request is None:
        known = [f.name for f in dataclasses.fields(EvalRequest)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise SafeMamlError(f"unknown evaluation option(s) {', '.join(unknown)}; known: {', '.join(known)}")
        request = EvalRequest(**options)
    check_eval_request(request)
    torch_device(request.device)
    if request.seed < 0:
        raise SafeMamlError(f"--seed must be >= 0, got {request.seed}")
    if not isinstance(reuse, bool):
        raise SafeMamlError(f"reuse must be True or False, got {reuse!r}")
    return evaluate_run(Path(run), request, Path(out) if out else None, reuse=reuse)


def _table(rows: list[dict]) -> Any:
    """A pandas DataFrame when pandas is installed, else the list of row dicts."""
    try:
        import pandas
    except ImportError:
        return rows
    return pandas.DataFrame(rows)


def _read_csv(path: Path) -> list[dict[str, Any]]:
    def value(text: str) -> Any:
        try:
            return float(text)
        except ValueError:
            return text

    try:
        with path.open(newline="") as f:
            return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except (UnicodeDecodeError, csv.Error):  # a damaged file: one line naming it, not a codec's exception
        raise SafeMamlError(f"{path} is not a CSV table (damaged or not text)") from None


@dataclass
class Evaluation:
    """One evaluation folder: summary.json and tasks.csv (returns.csv stays on disk: it is large)."""

    path: Path
    summary: dict[str, Any]
    tasks: Any


@dataclass
class Run:
    """A run folder, read: its config, metrics and evaluations."""

    path: Path
    config: TrainConfig
    iterations_done: int
    metrics: Any
    evaluations: dict[str, Evaluation] = field(default_factory=dict)


def load_run(path: str | Path) -> Run:
    """Read a run folder: config, metrics.csv (DataFrame with pandas), and every evaluation folder
    (any sub-folder with a summary.json, e.g. `eval`)."""
    folder = RunDir(path_arg(path, "path"))
    cfg = folder.read_config()
    rows = folder.read_metrics() if folder.metrics_path.is_file() and folder.has_checkpoint() else []
    evaluations = {}
    for summary in sorted(folder.path.glob("*/summary.json")):
        try:
            data = json.loads(summary.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SafeMamlError(f"{summary} is not a JSON summary") from None
        if not isinstance(data, dict):
            raise SafeMamlError(f"{summary} is not a JSON summary (not an object)")
        tasks = summary.parent / "tasks.csv"
        evaluations[summary.parent.name] = Evaluation(summary.parent, data,
                                                      _table(_read_csv(tasks)) if tasks.is_file() else None)
    return Run(folder.path, cfg, folder.finished_iterations(), _table(rows), evaluations)
