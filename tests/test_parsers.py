"""Property tests of the input parsers: the --grid parser, argument joining and the config loader.

Each either returns what an independent formula says or raises SafeMamlError — never
anything else (which the CLI would show as a traceback).
"""

import math

import numpy as np
import pytest
import tomllib
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from safemaml import config as config_io
from safemaml.cli.main import _join_negative_values, build_parser
from safemaml.errors import SafeMamlError
from safemaml.runs.evaluate import parse_grid
from safemaml.tasks import get_family

VELOCITY = get_family("halfcheetah-vel")  # one task parameter, accepts |v| <= 10


@settings(max_examples=200, deadline=None)
@given(start=st.floats(-5, 5), step=st.floats(0.01, 2), n=st.integers(1, 40), slack=st.floats(0, 0.9))
def test_grid_has_the_points_of_the_formula(start, step, n, slack):
    stop = start + step * (n - 1 + slack)
    assume(stop <= 10)  # the family's domain
    text = f"{start!r}:{stop!r}:{step!r}"
    grid = parse_grid(text, VELOCITY)
    expected = [start + k * step for k in range(n)]  # STOP included, never passed
    assert grid.shape == (n, 1)
    np.testing.assert_allclose(grid[:, 0], expected, atol=1e-8)


@settings(max_examples=300, deadline=None)
@example("-1e308:1e308:1")  # (STOP - START) / STEP overflows
@example("0:1:1e-320")
@example("0:2:1e-6")
@given(st.one_of(st.text(max_size=30),
                 st.tuples(*[st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6))
                             for _ in range(3)]).map(lambda t: ":".join(map(str, t)))))
def test_any_grid_text_is_a_grid_or_a_one_line_error(text):
    try:
        grid = parse_grid(text, get_family("nav2d"))
    except SafeMamlError as exc:
        assert "\n" not in str(exc)
        return
    assert grid.ndim == 2 and grid.shape[1] == 2 and np.isfinite(grid).all() and len(grid) <= 10_000


@settings(max_examples=100, deadline=None)
@given(st.tuples(st.floats(-10, 10), st.floats(-10, 10), st.floats(0.001, 5)))
def test_negative_grid_values_reach_the_parser_unchanged(values):
    text = ":".join(repr(v) for v in values)
    for argv in (["evaluate", "run", "--grid", text], ["evaluate", "--grid", text, "run"]):
        args, extra = build_parser().parse_known_args(_join_negative_values(argv))
        assert args.grid == text and args.run == "run" and extra == []


def test_negative_flag_values_join_only_after_an_option():
    assert _join_negative_values(["train", "--fast-lr", "-1e-3", "--quiet"]) == ["train", "--fast-lr=-1e-3", "--quiet"]
    assert _join_negative_values(["train", "--fast-lr=-.5", "-h"]) == ["train", "--fast-lr=-.5", "-h"]
    # plain negative numbers are argparse's own values: joined, a list would lose the rest (`--seeds -1 0`)
    assert _join_negative_values(["compare", "--seeds", "-1", "0"]) == ["compare", "--seeds", "-1", "0"]
    assert _join_negative_values(["train", "--fast-lr", "-.5"]) == ["train", "--fast-lr", "-.5"]


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=8))
VALUES = st.recursive(SCALARS.filter(lambda v: v is not None), lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["hidden", "fast_lr", "x", "name"]), inner,
                                                 max_size=2)), max_leaves=6)
KEYS = st.sampled_from(["tasks", "iterations", "seed", "device", "gamma", "policy", "policy.hidden",
                        "policy.activation", "adapt", "adapt.fast_lr", "adapt.first_order", "meta.name", "meta.lr",
                        "objective", "objective.name", "objective.beta", "foo", "foo.bar", "adapt.fast_lr.x",
                        "iterations.x"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=4))
def test_any_override_is_a_config_or_a_one_line_error(settings_):
    base = config_io.preset("nav2d")
    try:
        cfg = config_io.override(base, settings_)
    except SafeMamlError as exc:
        assert "\n" not in str(exc)
        return
    # what was accepted is finite, typed, and survives the TOML round trip
    assert isinstance(cfg.iterations, int) and cfg.iterations >= 1
    assert all(isinstance(h, int) for h in cfg.policy.hidden)
    assert math.isfinite(cfg.adapt.fast_lr) and math.isfinite(cfg.meta.lr)
    assert config_io.from_dict(tomllib.loads(config_io.dumps(cfg))) == cfg


@pytest.mark.parametrize("text,message", [
    ("hidden = 64", "unknown setting"),
    ("policy = 3", "policy must be a table"),
    ('[policy]\nhidden = ["a", "b"]', "list of integers"),
    ("[policy]\nhidden = 64", "list of integers"),
    ("[adapt]\nfast_lr = inf", "finite"),
    ("[adapt]\nfirst_order = 1", "true or false"),
    ('device = "mps"', "device"),
    ("iterations = 2.5", "must be an integer"),
    ("iterations = true", "must be an integer"),
    ("[objective]\nname = 3", "objective.name"),
    ("[objective]\nbeta = nan", "finite"),
    ("[objective.x]\ny = 1", "not a table"),
    ('preset = "nav3d"', "no preset"),
    ("preset = 3", "preset must be"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text + "\n")
    with pytest.raises(SafeMamlError, match=message):
        config_io.load(path)


def test_a_config_file_can_start_from_a_preset(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('preset = "nav2d"\niterations = 7\n[adapt]\nfast_lr = 0.05\n')
    cfg = config_io.load(path)
    with open(config_io.resources.files("safemaml") / "presets" / "nav2d.toml", "rb") as f:
        preset = tomllib.load(f)
    assert cfg.iterations == 7 and cfg.adapt.fast_lr == 0.05
    assert cfg.meta_batch_size == preset["meta_batch_size"] and list(cfg.policy.hidden) == preset["policy"]["hidden"]
    assert cfg.adapt.num_steps == preset["adapt"]["num_steps"]


def test_every_command_and_option_has_help_and_shows_its_default():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        assert sub.description, name
        text = "".join(sub.format_help().split())  # no whitespace: help lines wrap anywhere
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}"
            if action.option_strings and action.default not in (None, False, "==SUPPRESS=="):
                assert "default" in action.help or "".join(f"(default:{action.default}".split()) in text, (name, action.dest)
    assert "safemaml objectives" in commands["train"].format_help()  # where objective parameters are listed


def test_strings_with_control_characters_survive_the_toml_round_trip():
    """Found by the property test above: a string setting holding '\\x1f' was written unescaped, invalid TOML."""
    for text in ("\x1f", 'a"b\\c', "tab\there\n", "\x7f"):
        cfg = config_io.override(config_io.preset("nav2d"), {"tasks": text})
        assert config_io.from_dict(tomllib.loads(config_io.dumps(cfg))).tasks == text
