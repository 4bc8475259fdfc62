"""`safemaml compare --protocol FILE`: a whole comparison protocol of docs/results.md from one TOML file.

The protocol is a list of safemaml commands, each of which could be typed by hand (`--dry-run` prints them):

1. the MAML base: `train` (or `train --resume` while it has fewer than its iterations), then `evaluate` on p(T);
2. one tuning study per entry of [studies.NAME]: `study run OUT/study-NAME`, fine-tuning the base (a study that
   exists continues with its stored settings, so that a later change of a default cannot make it refuse);
3. the arms, picked once by the named pre-registered rule: `study pick --rule RULE ... --out OUT/arms.toml`;
4. the comparison: `compare --arms OUT/arms.toml --out OUT/compare --seeds ...`.

Every stage is resumable, so running the same command again continues where it stopped; a stage whose output is
complete is skipped. `--workers N` goes to the studies and the comparison (it belongs to the machine, not to
the protocol). The whole file is checked before anything runs: its keys and types, and every stage's command line
through the real parser; each command then checks its own request before it writes, as when typed.

A protocol file (experiments/protocols/ holds the committed ones):

    config = "experiments/nav2d.toml"        # the family's training config
    out = "experiments/results/comparison-nav2d"
    iterations = 30                          # fine-tuning meta-iterations of every trial and every arm
    seeds = [0, 1, 2, 3, 4, 5]               # the comparison's training seeds
    rule = "median-floor"                    # safemaml.studies.pick.RULES
    control = "maml"                         # the study of MAML's inner step (optional)
    [base]                                   # out, iterations, seed; [base.evaluate]: evaluate's flags
    [study]                                  # flags of every `study run`, e.g. seeds = 2, task-seed = 1
    [studies.lagrangian]                     # trials, search = [...], enqueue = [...]; the name is the objective
    [compare]                                # flags of `compare`, e.g. repeats = 90, band = "0.3:1.1:0.1"
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomllib

from objectives import available
from safemaml.checks import int_arg, seed_arg
from safemaml.errors import SafeMamlError

Flags = dict[str, Any]  # flag name without "--" -> value (True: a switch; a list: repeated or several values)


@dataclasses.dataclass(frozen=True)
class StudyEntry:
    """One tuning study: the objective it tunes (its table's name), its trials, and what it searches."""

    objective: str
    trials: int
    search: tuple[str, ...] = ()
    enqueue: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A comparison protocol (the module's docstring shows the file)."""

    config: str
    out: str
    iterations: int
    seeds: tuple[int, ...]
    base_out: str
    base_iterations: int
    studies: tuple[StudyEntry, ...]
    rule: str = "median-floor"
    control: str | None = None
    base_seed: int = 0
    base_evaluate: Flags = dataclasses.field(default_factory=dict)
    study: Flags = dataclasses.field(default_factory=dict)
    compare: Flags = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One command of the protocol; `done` when its output is already complete (then it is skipped)."""

    what: str
    argv: list[str]
    done: bool = False

    def line(self) -> str:
        return "safemaml " + shlex.join(self.argv)


TOP = {"config", "out", "iterations", "seeds", "rule", "control", "base", "study", "studies", "compare"}


def load(path: Path) -> Protocol:
    """The protocol in `path`, its keys and types checked (one-line SafeMamlError naming the key)."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SafeMamlError(f"--protocol {path}: {exc}") from None
    where = f"--protocol {path}"
    _known(data, TOP, where)
    base = _table(data, "base", where, required=True)
    _known(base, {"out", "iterations", "seed", "evaluate"}, f"{where} [base]")
    studies = _table(data, "studies", where, required=True)
    if not studies:
        raise SafeMamlError(f"{where}: [studies] names no study")
    entries = tuple(_study_entry(name, _table(studies, name, f"{where} [studies]"), f"{where} [studies.{name}]")
                    for name in studies)
    control = _get(data, "control", str, where, None)
    if control is not None and control not in studies:
        raise SafeMamlError(f"{where}: control = {control!r} is not one of [studies] ({', '.join(studies)})")
    if control not in (None, "maml"):  # the control arm is MAML with its tuned inner step (maml-alpha)
        raise SafeMamlError(f"{where}: control must be the maml study (the maml-alpha arm), got {control!r}")
    if len(entries) - (control is not None) < 1:
        raise SafeMamlError(f"{where}: the studies need at least one constrained objective besides the control")
    seeds = _get(data, "seeds", list, where)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SafeMamlError(f"{where}: seeds must be a list of integers")
    for seed in seeds:
        seed_arg(seed, f"{where}: a seed")
    if len(set(seeds)) < len(seeds):
        raise SafeMamlError(f"{where}: seeds lists a seed twice")
    known = available()
    for entry in entries:
        if entry.objective not in known:
            raise SafeMamlError(f"{where}: [studies.{entry.objective}] is not an objective; known: {', '.join(known)}")
        int_arg(entry.trials, f"{where} [studies.{entry.objective}] trials", 1)
    int_arg(_get(data, "iterations", int, where), f"{where}: iterations", 1)
    int_arg(_get(base, "iterations", int, f"{where} [base]"), f"{where} [base]: iterations", 1)
    seed_arg(_get(base, "seed", int, f"{where} [base]", 0), f"{where} [base]: seed")
    return Protocol(
        config=_get(data, "config", str, where), out=_get(data, "out", str, where),
        iterations=_get(data, "iterations", int, where), seeds=tuple(seeds),
        base_out=_get(base, "out", str, f"{where} [base]"),
        base_iterations=_get(base, "iterations", int, f"{where} [base]"),
        base_seed=_get(base, "seed", int, f"{where} [base]", 0), studies=entries,
        rule=_get(data, "rule", str, where, "median-floor"), control=control,
        base_evaluate=_table(base, "evaluate", f"{where} [base]"), study=_table(data, "study", where),
        compare=_table(data, "compare", where))


def _study_entry(name: str, table: dict[str, Any], where: str) -> StudyEntry:
    _known(table, {"trials", "search", "enqueue"}, where)
    lists = {}
    for key in ("search", "enqueue"):
        value = _get(table, key, list, where, [])
        if not all(isinstance(v, str) for v in value):
            raise SafeMamlError(f"{where}: {key} must be a list of strings such as \"eta=0.1:10:log\"")
        lists[key] = tuple(value)
    return StudyEntry(name, _get(table, "trials", int, where), **lists)


def _known(data: dict[str, Any], keys: set[str], where: str) -> None:
    unknown = sorted(set(data) - keys)
    if unknown:
        raise SafeMamlError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(keys))})")


def _get(data: dict[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
    if key not in data:
        if default is ...:
            raise SafeMamlError(f"{where}: {key} is missing")
        return default
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SafeMamlError(f"{where}: {key} must be of type {kind.__name__}, got {value!r}")
    return value


def _table(data: dict[str, Any], key: str, where: str, required: bool = False) -> dict[str, Any]:
    value = _get(data, key, dict, where, ... if required else {})
    return dict(value)


REPEATED = {"set", "search", "fix", "enqueue"}  # the repeatable flags of train, evaluate, compare and study run


def flags(table: Flags) -> list[str]:
    """A table of flags as a command line: `key = true` -> --key; a list -> --key=a --key=b for a repeatable
    flag (REPEATED), --key a b otherwise; anything else -> --key=value."""
    out: list[str] = []
    for key, value in table.items():
        flag = f"--{key}"
        if value is True:
            out.append(flag)
        elif value is False:
            continue
        elif isinstance(value, list):
            if key in REPEATED:
                for item in value:
                    out.append(f"{flag}={item}")
            else:
                out += [flag, *map(str, value)]
        else:
            out.append(f"{flag}={value}")
    return out


def stages(p: Protocol, workers: int) -> list[Stage]:
    """The protocol's commands in order, each marked done where its output is already complete."""
    base, out = Path(p.base_out), Path(p.out)
    rows = _metrics_rows(base)
    train = (["train", "--resume", str(base), "--iterations", str(p.base_iterations), "--quiet"]
             if (base / "last.pt").is_file() else
             ["train", "--config", p.config, "--iterations", str(p.base_iterations), "--seed", str(p.base_seed),
              "--out", str(base), "--quiet"])
    result = [Stage("the MAML base", train, rows >= p.base_iterations),
              Stage("the base on p(T)", ["evaluate", str(base), *flags(p.base_evaluate)],
                    (base / "eval" / "summary.json").is_file())]
    for entry in p.studies:
        directory = out / f"study-{entry.objective}"
        argv = ["study", "run", str(directory), "--trials", str(entry.trials)]
        if (directory / "study.db").is_file():  # continued with its stored settings
            argv += ["--quiet"] if p.study.get("quiet") else []
        else:
            argv += ["--config", p.config, "--init", str(base), "--iterations", str(p.iterations),
                     "--objective", entry.objective, *[f"--search={s}" for s in entry.search],
                     *flags({k: v for k, v in p.study.items() if k != "sampler-seed"})]
        argv += [f"--enqueue={e}" for e in entry.enqueue]
        if "sampler-seed" in p.study:
            argv.append(f"--sampler-seed={p.study['sampler-seed']}")
        result.append(Stage(f"the {entry.objective} study", [*argv, "--workers", str(workers)]))
    constrained = [str(out / f"study-{e.objective}") for e in p.studies if e.objective != p.control]
    control = ["--control", str(out / f"study-{p.control}")] if p.control else []
    arms = out / "arms.toml"
    result.append(Stage("the arms", ["study", "pick", "--rule", p.rule, "--studies", *constrained, *control,
                                     "--out", str(arms)], arms.is_file()))
    result.append(Stage("the comparison", [
        "compare", "--config", p.config, "--init", str(base), "--iterations", str(p.iterations), "--arms", str(arms),
        *flags(p.compare), "--out", str(out / "compare"), "--seeds", *map(str, p.seeds), "--workers", str(workers)]))
    return result


def _metrics_rows(run: Path) -> int:
    try:
        return max(0, len((run / "metrics.csv").read_text().splitlines()) - 1)
    except OSError:
        return 0


def run(path: Path, workers: int, dry_run: bool, parse: Callable[[list[str]], argparse.Namespace],
        command: Callable[[list[str]], int]) -> int:
    """Check the protocol in `path` and every stage's command line (`parse`), then run the stages that are
    not done with `command` (the safemaml command in this process), stopping at the first that fails."""
    p = load(path)
    if not Path(p.config).is_file():
        raise SafeMamlError(f"--protocol {path}: config {p.config} does not exist")
    todo = stages(p, workers)
    for stage in todo:
        try:
            parse(stage.argv)
        except SafeMamlError as exc:
            raise SafeMamlError(f"--protocol {path}: {stage.what}: {exc}") from None
    if dry_run:
        for stage in todo:
            print(("# done: " if stage.done else "") + stage.line())
        return 0
    Path(p.out).mkdir(parents=True, exist_ok=True)
    for number, stage in enumerate(todo, 1):
        if stage.done:
            print(f"protocol {number}/{len(todo)}: {stage.what}: done", flush=True)
            continue
        print(f"protocol {number}/{len(todo)}: {stage.what}: {stage.line()}", flush=True)
        code = command(stage.argv)
        if code:
            return code
    return 0
