import csv
import dataclasses
import math

import pytest
import torch
from helpers import tiny_config

from objectives import register
from objectives.maml import Maml
from safemaml.cli.main import main
from safemaml.errors import SafeMamlError
from safemaml.runs.train import train
from safemaml.tasks import all_families

TIMING = {"time_sampling", "time_adapt", "time_optimize"}


def _rows(run):
    with (run / "metrics.csv").open() as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


@register
@dataclasses.dataclass
class _Sabotage(Maml):
    """Test objective: NaN loss or Ctrl-C at a given call (objective state counts the calls)."""

    name = "test-sabotage"
    description = "test only"
    fail_at: int = 3
    mode: str = "nan"
    calls: int = 0

    def __call__(self, batch):
        loss, metrics = super().__call__(batch)
        self.calls += 1
        if self.calls >= self.fail_at:
            if self.mode == "interrupt":
                raise KeyboardInterrupt
            loss = loss * float("nan")
        return loss, metrics


def test_resumed_run_reproduces_the_uninterrupted_metrics(tmp_path):
    cfg = tiny_config(iterations=4)
    train(cfg, tmp_path / "full", quiet=True)
    train(dataclasses.replace(cfg, iterations=2), tmp_path / "split", quiet=True)
    train(cfg, tmp_path / "split", resume=True, quiet=True)
    full, split = _rows(tmp_path / "full"), _rows(tmp_path / "split")
    assert len(full) == 4 and full == split
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert a["iteration"] == 3 and all(torch.equal(a["params"][k], b["params"][k]) for k in a["params"])


def test_run_directory_contents(tmp_path):
    train(tiny_config(iterations=4, checkpoint_every=2), tmp_path / "run", quiet=True)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["iter_00002.pt", "iter_00004.pt"]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "iter_00002.pt", weights_only=True)
    assert ckpt["iteration"] == 1 and "tasks = \"nav2d\"" in ckpt["config"]
    rows = _rows(tmp_path / "run")
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2, 3]
    assert all(math.isfinite(float(r["post_return"])) for r in rows)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_config(iterations=6, **{"meta.name": "adam", "objective.name": "test-sabotage",
                                        "objective.fail_at": 3})
    with pytest.raises(SafeMamlError, match="non-finite .* iteration 2.*last good checkpoint.*iteration 1"):
        train(cfg, tmp_path / "run", quiet=True)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 1 and all(torch.isfinite(v).all() for v in ckpt["params"].values())


def test_ctrl_c_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Ctrl-C inside a meta-step (Adam, whose state must not be saved half-updated)."""
    sabotage = {"objective.name": "test-sabotage", "objective.mode": "interrupt", "meta.name": "adam"}
    cfg = tiny_config(iterations=4, **sabotage, **{"objective.fail_at": 2})
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", quiet=True)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["iteration"] == 0
    train(tiny_config(iterations=4, **sabotage, **{"objective.fail_at": 10**6}), tmp_path / "run", resume=True,
          quiet=True)
    train(tiny_config(iterations=4, **{"meta.name": "adam"}), tmp_path / "straight", quiet=True)
    assert [int(r["iteration"]) for r in _rows(tmp_path / "run")] == [0, 1, 2, 3]
    a = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    assert all(torch.equal(a["params"][k], b["params"][k]) for k in a["params"])
    assert a["optimizer"]["steps"] == b["optimizer"]["steps"] == 4


def test_cli_refuses_to_overwrite_a_run(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["train", "--tasks", "nav2d", "--iterations", "1", "--meta-batch-size", "2", "--fast-batch-size", "2",
            "--post-batch-size", "2", "--set", "policy.hidden=[8, 8]", "--out", out, "--quiet"]
    assert main(args) == 0
    before = (tmp_path / "run" / "metrics.csv").read_text()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.csv").read_text() == before


@pytest.mark.parametrize("extra,message", [(["--beta", "1.5"], "beta must be in (0, 1)"),
                                           (["--objective", "nope"], "unknown objective"),
                                           (["--set", "adapt.fast_lr=-1"], "fast_lr"),
                                           (["--set", "objective.eta=2"], "has no parameter"),
                                           (["--tasks", "nav3d"], "unknown task family"),
                                           (["--objective", "lagrangian", "--multiplier", "-1"], "multiplier"),
                                           (["--delta", "0"], "delta must be in (0, 1)")])
def test_cli_bad_train_values_exit_2_and_write_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_report_draws_the_learning_curve(tmp_path):
    train(tiny_config(iterations=2), tmp_path / "run", quiet=True)
    assert main(["report", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_init_starts_from_another_runs_policy(tmp_path):
    train(tiny_config(iterations=1), tmp_path / "base", quiet=True)
    base = torch.load(tmp_path / "base" / "last.pt", weights_only=True)["params"]
    from safemaml.runs.train import new_learner

    learner = new_learner(tiny_config(init=str(tmp_path / "base")))
    assert all(torch.equal(learner.params[k], base[k]) for k in base)
    with pytest.raises(SafeMamlError, match="shape"):
        new_learner(tiny_config(init=str(tmp_path / "base"), **{"policy.hidden": [8]}))


@pytest.mark.parametrize("family", [f.name for f in all_families()])
def test_every_family_takes_finite_meta_steps_that_move_the_policy(tmp_path, family):
    # no test trained Ant before AntVel was found unable to take a step; its failure (the baseline's batched LU)
    # depends on the data and is pinned in test_returns.py; here every family must take two meta-steps with
    # finite returns that change the parameters
    cfg = tiny_config(tasks=family, iterations=2, meta_batch_size=2, fast_batch_size=2, post_batch_size=2)
    learner = train(cfg, tmp_path / "run", quiet=True)
    with (tmp_path / "run" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(math.isfinite(float(r[k])) for r in rows for k in ("pre_return", "post_return"))
    fresh = learner.spec.init(cfg.seed, torch.device("cpu"))
    assert any(not torch.equal(fresh[k], learner.params[k]) for k in fresh)
