"""The public Python API (safemaml.train / resume / evaluate / load_run), read back independently."""

import csv
import json

import pytest
import torch

import safemaml
from safemaml.errors import SafeMamlError

TINY = dict(iterations=2, meta_batch_size=2, fast_batch_size=2, post_batch_size=2)


def _csv(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_train_evaluate_resume_and_load_a_run(tmp_path):
    import safemaml.runs.evaluate  # noqa: F401  (the submodule must not shadow the API function)

    run = safemaml.train(out=tmp_path / "run", tasks="nav2d", adapt__fast_lr=0.05, **TINY)
    assert run.config.tasks == "nav2d" and run.config.adapt.fast_lr == 0.05 and run.iterations_done == 2
    assert run.config.policy.hidden == (64, 64)  # nav2d's preset (safemaml/presets/nav2d.toml), not 100x100
    rows = _csv(tmp_path / "run" / "metrics.csv")
    assert list(run.metrics["iteration"]) == [int(r["iteration"]) for r in rows] == [0, 1]
    assert list(run.metrics["pre_return"]) == pytest.approx([float(r["pre_return"]) for r in rows])
    # the preset's values that were not overridden (read from the packaged TOML, not from safemaml.config)
    assert run.config.gamma == 0.99 and run.config.checkpoint_every == 10

    summary = safemaml.evaluate(tmp_path / "run", grid="-0.5:0.5:0.5", trajectories=2)
    assert summary == json.loads((tmp_path / "run" / "eval" / "summary.json").read_text())
    run = safemaml.resume(tmp_path / "run", iterations=3)
    assert run.iterations_done == 3 and torch.load(tmp_path / "run" / "last.pt", weights_only=True)["iteration"] == 2

    loaded = safemaml.load_run(tmp_path / "run")
    tasks = _csv(tmp_path / "run" / "eval" / "tasks.csv")
    assert loaded.evaluations["eval"].summary["tasks"] == len(tasks) == 9
    assert list(loaded.evaluations["eval"].tasks["mean_gamma"]) == pytest.approx([float(r["mean_gamma"])
                                                                                 for r in tasks])
    assert "iterations = 3" in (tmp_path / "run" / "config.toml").read_text()


def test_api_errors_are_safemaml_errors(tmp_path):
    with pytest.raises(SafeMamlError, match="unknown task family"):
        safemaml.train("nav3d", tmp_path / "x")
    with pytest.raises(SafeMamlError, match="not a run folder"):
        safemaml.load_run(tmp_path / "missing")
    with pytest.raises(SafeMamlError, match="unknown setting"):
        safemaml.train("nav2d", tmp_path / "x", iteratoins=3)
    assert not (tmp_path / "x").exists()


def test_tensorboard_scalars_are_the_metrics_csv_columns(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    safemaml.train("nav2d", tmp_path / "run", tensorboard=True, policy__hidden=[8, 8], **TINY)
    board = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    board.Reload()
    rows = _csv(tmp_path / "run" / "metrics.csv")
    columns = [c for c in rows[0] if c != "iteration"]
    assert sorted(board.Tags()["scalars"]) == sorted(columns)
    for column in columns:
        events = board.Scalars(column)
        assert [e.step for e in events] == [1, 2]
        assert [e.value for e in events] == pytest.approx([float(r[column]) for r in rows], rel=1e-5, nan_ok=True)
