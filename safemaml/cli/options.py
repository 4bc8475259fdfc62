"""Command-line flags built from the typed settings: a flag's type, default and help come from the field of the
dataclass it sets (safemaml.config's `option` fields), so they are stated once.

Two kinds of flags come out: flags that *override* a setting (train's, compare's, a study's: they default to
None, and only the flags given become dotted overrides, `given`) and flags that *are* the setting (evaluate's:
they default to the field's value). Either way the help ends with the default it stands for.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from safemaml import config as config_io
from safemaml.config import EvalRequest, TrainConfig
from safemaml.errors import SafeMamlError


@dataclass(frozen=True)
class Option:
    """One flag for one setting: `key` is the setting's dotted name in its dataclass (adapt.fast_lr), `default`
    the value the help states (`default_text` where a value cannot say it)."""

    key: str
    flag: str
    kind: type
    help: str
    default: Any = None
    default_text: str | None = None
    metavar: str | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    def help_text(self) -> str:
        """The help with its default (argparse %-formats help, so a literal % is doubled)."""
        shown = self.default_text if self.default_text is not None else self.default
        text = self.help
        if "default" not in text and shown not in (None, "") and self.kind is not bool:
            text += f" (default: {shown})"
        return text.replace("%", "%%")


def _kind(hint: Any) -> type:
    """int for `int`, and for `int | None`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(t for t in typing.get_args(hint) if t is not type(None))
    return hint


def field_option(cls: type, key: str, *, flag: str | None = None, default: Any = dataclasses.MISSING,
                 default_text: str | None = None) -> Option:
    """The flag of setting `key` of dataclass `cls` (dotted: a field of a nested dataclass, adapt.fast_lr), named
    `--flag`, else the field's `flag` metadata, else the field's name. `default`: the default to state (the
    field's unless given); `default_text`: what to state instead of a value, where the field does not say."""
    owner, name = cls, key
    while "." in name:
        head, name = name.split(".", 1)
        owner = typing.get_type_hints(owner)[head]
    fields = {f.name: f for f in dataclasses.fields(owner)}
    if name not in fields or "help" not in fields[name].metadata:
        raise SafeMamlError(f"{cls.__name__}.{key} is not a setting with help text")
    meta, own = fields[name].metadata, fields[name].default
    stated = own if default is dataclasses.MISSING else default
    text = meta.get("default_text") if stated == own else None  # the field's words are about its own default
    return Option(key=key, flag="--" + (flag or meta.get("flag") or name).replace("_", "-"),
                  kind=_kind(typing.get_type_hints(owner)[name]), help=meta["help"], default=stated,
                  default_text=text or default_text, metavar=meta.get("metavar"), choices=meta.get("choices"))


def add_options(parser: argparse.ArgumentParser, options: list[Option], *, unset: bool = False) -> None:
    """Add each option's flag. `unset`: the flags default to None, so that a flag not given changes nothing
    (overrides); else to the option's default."""
    for o in options:
        kwargs: dict[str, Any] = {"dest": o.dest, "help": o.help_text(), "default": None if unset else o.default}
        if o.kind is bool:
            kwargs.update(action="store_const", const=True)
        else:
            kwargs.update(type=o.kind, metavar=o.metavar, choices=o.choices)
        parser.add_argument(o.flag, **kwargs)


def given(args: argparse.Namespace, options: list[Option]) -> dict[str, Any]:
    """{key: value} of the options given on the command line (those not None)."""
    return {o.key: getattr(args, o.dest) for o in options if getattr(args, o.dest, None) is not None}


# ---- the training settings ----------------------------------------------------------------------------


@cache
def preset_keys() -> frozenset[str]:
    """The dotted settings some preset sets: their default is the preset's (or the --config's)."""
    def flat(table: dict[str, Any], prefix: str = "") -> set[str]:
        return set().union(*[flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
                             for k, v in table.items()])

    return frozenset().union(*[flat(config_io.preset_data(name)) for name in config_io.preset_names()])


def _objective_option(key: str) -> Option:
    """--objective, --beta, --delta: the [objective] table is no dataclass; beta's and delta's defaults are the
    objective base class's (safemaml.engine.objective.Objective)."""
    from safemaml.engine.objective import Objective

    if key == "objective.name":
        return Option(key, "--objective", str, "meta-objective: maml, lagrangian, cvar, quantile, ... (see "
                      "`safemaml objectives`)", default_text="the preset's", metavar="NAME")
    defaults = {f.name: f.default for f in dataclasses.fields(Objective)}
    helps = {"beta": "per-task tolerance of Eq. 6, in (0, 1)", "delta": "fraction of tasks allowed to violate, "
                                                                        "in (0, 1)"}
    name = key.removeprefix("objective.")
    return Option(key, f"--{name}", float, helps[name], defaults[name])


def train_options(*keys: str) -> list[Option]:
    """Override flags for these dotted training settings (TrainConfig fields, objective.name/beta/delta)."""
    out = []
    for key in keys:
        if key.startswith("objective."):
            out.append(_objective_option(key))
        else:
            out.append(field_option(TrainConfig, key, default_text="the preset's" if key in preset_keys() else None))
    return out


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """--config and --set: the base config and any setting of it."""
    parser.add_argument("--config", metavar="FILE.toml",
                        help="start from this TOML config instead of the family's preset (`preset = \"NAME\"` in it "
                             "starts from a preset)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="any config value, e.g. --set adapt.fast_lr=0.05 (repeatable; --print-config lists "
                             "keys)")


def set_items(items: list[str] | None) -> dict[str, Any]:
    """--set KEY=VALUE items as dotted settings."""
    settings = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SafeMamlError(f"--set expects KEY=VALUE such as adapt.fast_lr=0.05, got {item!r}")
        settings[key.strip()] = config_io.parse_value(value.strip())
    return settings


def overrides(args: argparse.Namespace, options: list[Option]) -> dict[str, Any]:
    """The dotted settings that the flags in `options`, then --set, give (--set wins)."""
    return given(args, options) | set_items(getattr(args, "set", None))


# ---- the evaluation request ------------------------------------------------------------------------------


def eval_options(*names: str, flags: dict[str, str] | None = None,
                 defaults: EvalRequest | None = None) -> list[Option]:
    """Flags for these EvalRequest fields, renamed by `flags` ({"seed": "eval-seed"}), with the defaults of
    `defaults` (a command's own, e.g. a study's) stated instead of EvalRequest's."""
    flags = flags or {}
    return [field_option(EvalRequest, name, flag=flags.get(name),
                         default=dataclasses.MISSING if defaults is None else getattr(defaults, name))
            for name in names]


def eval_request(args: argparse.Namespace, options: list[Option], **fixed: Any) -> EvalRequest:
    """The EvalRequest of the flags given (the rest at EvalRequest's defaults), with `fixed` fields set."""
    return EvalRequest(**given(args, options), **fixed)
