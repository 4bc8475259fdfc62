"""`safemaml compare --protocol FILE` (issue 27.3): the comparison protocol of docs/results.md as commands.

The reference for what the protocol runs is the hand-written script it replaced (experiments/comparison.sh, in
history until commit f7af33f): its command lines, typed out below. The end-to-end test runs a tiny protocol with
real training, studies and evaluations, then runs it again and checks that nothing changes."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import pytest
import tomllib

from safemaml.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
HCV = "experiments/results/comparison-halfcheetah-vel"

# comparison.sh halfcheetah-vel's commands on the committed tree (base, its evaluation and the arms done; the
# studies exist, so each continues with its stored settings), WORKERS=1; the base's resume names its iterations
# (the script's did not, so a base whose config asked for fewer would have stopped short unnoticed)
COMPARISON_SH_HCV = [
    "# done: safemaml train --resume experiments/runs/halfcheetah-vel-maml-500 --iterations 500 --quiet",
    "# done: safemaml evaluate experiments/runs/halfcheetah-vel-maml-500",
    f"safemaml study run {HCV}/study-lagrangian --trials 6 --quiet --sampler-seed=0 --workers 1",
    f"safemaml study run {HCV}/study-cvar --trials 6 --quiet --sampler-seed=0 --workers 1",
    f"safemaml study run {HCV}/study-quantile --trials 6 --quiet --sampler-seed=0 --workers 1",
    f"safemaml study run {HCV}/study-maml --trials 8 --quiet --enqueue=adapt.fast_lr=0.025 "
    "--enqueue=adapt.fast_lr=0.05 --enqueue=adapt.fast_lr=0.07 --sampler-seed=0 --workers 1",
    f"# done: safemaml study pick --rule median-floor --studies {HCV}/study-lagrangian {HCV}/study-cvar "
    f"{HCV}/study-quantile --control {HCV}/study-maml --out {HCV}/arms.toml",
    "safemaml compare --config experiments/halfcheetah-vel.toml --init experiments/runs/halfcheetah-vel-maml-500 "
    f"--iterations 20 --arms {HCV}/arms.toml --repeats=60 --band=0.3:1.1:0.1 --quiet --out {HCV}/compare "
    "--seeds 0 1 2 3 4 5 --workers 1",
]


def test_the_committed_protocol_runs_the_commands_of_the_script_it_replaced(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["compare", "--protocol", "experiments/protocols/halfcheetah-vel.toml", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == COMPARISON_SH_HCV


TINY_CONFIG = """preset = "nav2d"
meta_batch_size = 2
fast_batch_size = 2
post_batch_size = 2
[policy]
hidden = [8, 8]
"""


def tiny_protocol(tmp_path: Path, **changes: str) -> Path:
    (tmp_path / "tiny.toml").write_text(TINY_CONFIG)
    text = f"""config = "{tmp_path / 'tiny.toml'}"
out = "{tmp_path / 'cmp'}"
iterations = 2
seeds = [0, 1]
control = "maml"
[base]
out = "{tmp_path / 'base'}"
iterations = 2
[base.evaluate]
sample = 3
trajectories = 2
repeats = 2
[study]
seed = 100
seeds = 1
sample = 3
task-seed = 1
trajectories = 2
repeats = 2
sampler-seed = 0
quiet = true
[studies.cvar]
trials = 2
[studies.maml]
trials = 2
search = ["adapt.fast_lr=0.02:0.5:log"]
enqueue = ["adapt.fast_lr=0.05"]
[compare]
trajectories = 2
repeats = 2
quiet = true
"""
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "protocol.toml"
    path.write_text(text)
    return path


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix in (".csv", ".md", ".toml", ".json", ".pt")}


def test_a_tiny_protocol_runs_every_stage_and_a_rerun_changes_nothing(tmp_path, capsys):
    path = tiny_protocol(tmp_path)
    assert main(["compare", "--protocol", str(path)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("protocol ")] == [
        f"protocol {i}/6" for i in range(1, 7)]
    assert len(rows(tmp_path / "base" / "metrics.csv")) == 2
    assert (tmp_path / "base" / "eval" / "summary.json").is_file()
    for name, enqueued in (("cvar", None), ("maml", 0.05)):
        study = optuna.load_study(study_name=f"study-{name}", storage=f"sqlite:///{tmp_path}/cmp/study-{name}/study.db")
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(done) == 2
        assert all(f'init = "{tmp_path / "base"}"' in t.user_attrs["config"] for t in done)  # fine-tunes the base
        if enqueued is not None:
            assert done[0].params["adapt.fast_lr"] == enqueued  # the queued point first
    arms = tomllib.loads((tmp_path / "cmp" / "arms.toml").read_text())["arms"]
    assert list(arms) == ["maml", "maml-alpha", "maml-std", "cvar", "cvar-neutral"]
    table = rows(tmp_path / "cmp" / "compare" / "comparison.csv")
    assert sorted((r["objective"], r["seed"]) for r in table) == sorted((a, s) for a in arms for s in ("0", "1"))

    before = snapshot(tmp_path)
    assert main(["compare", "--protocol", str(path)]) == 0
    out = capsys.readouterr().out
    assert "protocol 1/6: the MAML base: done" in out and "protocol 5/6: the arms: done" in out
    assert snapshot(tmp_path) == before  # nothing trained, picked or tabled again


@pytest.mark.parametrize("changes,message", [
    ({"iterations = 2\nseeds": "iterations = 2\nnope = 1\nseeds"}, "unknown key 'nope'"),
    ({"[base]\n": "[base]\nseeed = 1\n"}, "[base]: unknown key 'seeed'"),
    ({'control = "maml"': 'control = "alpha"'}, "control = 'alpha' is not one of"),
    ({"seeds = [0, 1]": "seeds = [0, true]"}, "seeds must be a list of integers"),
    ({"[studies.cvar]\ntrials = 2": "[studies.cvar]\ntrials = 2\nsearch = [1]"}, "search must be a list of strings"),
    ({"[compare]\n": "[compare]\nnope = 3\n"}, "the comparison: unknown option --nope=3"),
    ({"[study]\n": "[study]\nrepeat = 3\n"}, "the cvar study: unknown option --repeat=3; did you mean --repeats?"),
    ({"[studies.cvar]\ntrials = 2\n": ""}, "at least one constrained objective"),
    ({"iterations = 2\nseeds": "iterations = 'two'\nseeds"}, "iterations must be of type int"),
    ({"iterations = 2\nseeds": "iterations = 0\nseeds"}, "iterations must be >= 1, got 0"),
    ({"iterations = 2\nseeds": "seeds"}, "iterations is missing"),
    ({"seeds = [0, 1]": "seeds = [0, -1]"}, "a seed must be >= 0, got -1"),
    ({"seeds = [0, 1]": "seeds = [1, 1]"}, "seeds lists a seed twice"),
    ({"[studies.cvar]": "[studies.cvarr]"}, "[studies.cvarr] is not an objective"),
    ({"[studies.cvar]\ntrials = 2": "[studies.cvar]\ntrials = 0"}, "trials must be >= 1, got 0"),
    ({'control = "maml"': 'control = "cvar"'}, "control must be the maml study"),
])
def test_a_bad_protocol_is_one_line_exit_2_and_nothing_is_written(tmp_path, capsys, changes, message):
    path = tiny_protocol(tmp_path, **changes)
    assert main(["compare", "--protocol", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["protocol.toml", "tiny.toml"]


def test_protocol_takes_only_workers_and_dry_run_and_its_files_must_exist(tmp_path, capsys):
    path = tiny_protocol(tmp_path)
    assert main(["compare", "--protocol", str(path), "--seeds", "0"]) == 2
    assert "takes --workers and --dry-run only, not --seeds" in capsys.readouterr().err
    assert main(["compare", "--protocol", str(tmp_path / "missing.toml")]) == 2
    assert "No such file" in capsys.readouterr().err
    (tmp_path / "tiny.toml").unlink()
    assert main(["compare", "--protocol", str(path)]) == 2
    assert "tiny.toml does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["protocol.toml"]


def test_a_base_short_of_its_iterations_is_resumed_to_them(tmp_path, capsys):
    path = tiny_protocol(tmp_path)
    assert main(["train", "--config", str(tmp_path / "tiny.toml"), "--iterations", "1", "--out", str(tmp_path / "base"),
                 "--quiet"]) == 0
    assert main(["compare", "--protocol", str(path), "--dry-run"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"safemaml train --resume {tmp_path / 'base'} --iterations 2 --quiet"  # not marked done
