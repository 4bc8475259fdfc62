"""`safemaml render`: a real run, drawn by MuJoCo offscreen (EGL), written as GIF (always) and MP4 (with PyAV).

The clip must decode, show different pictures before and after adaptation, and write the returns that
`safemaml evaluate` counts for the same task and seed (its returns.csv.gz is the reference); bad requests are
one line, exit 2, with nothing written.
"""

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_config
from PIL import Image, ImageSequence

from safemaml.cli.main import main
from safemaml.engine.learner import derive_seed, policy_spec
from safemaml.engine.rollout import Sampler
from safemaml.errors import RunFault
from safemaml.measure.video import GAP
from safemaml.runs.render import ClipSettings, render_run, replay
from safemaml.runs.rundir import RunDir
from safemaml.runs.train import train
from safemaml.tasks import get_family

W, H, FRAMES = 64, 48, 6  # small panels, a few frames: the test draws 12 pictures
SMALL = ["--width", str(W), "--height", str(H), "--frames", str(FRAMES)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One meta-iteration of HalfCheetahVel with 2 tasks x 2 trajectories: a real MuJoCo policy."""
    path = tmp_path_factory.mktemp("render") / "hcv"
    train(tiny_config(tasks="halfcheetah-vel", iterations=1, meta_batch_size=2, fast_batch_size=2,
                      post_batch_size=2, checkpoint_every=1), path, quiet=True)
    return path


def panels(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two pictures of a decoded frame (the bottom H rows; left, then right after the gap)."""
    picture = frame[-H:]
    return picture[:, :W].astype(int), picture[:, W + GAP:2 * W + GAP].astype(int)


def check_frames(frames: list[np.ndarray]) -> None:
    assert len(frames) == FRAMES
    assert frames[0].shape[1] == 2 * W + GAP
    before, after = panels(frames[-1])
    assert np.abs(before - after).mean() > 1.0, "the episodes before and after adaptation look the same"
    first, _ = panels(frames[0])
    assert np.abs(first - before).mean() > 1.0, "the robot does not move"
    assert before.std() > 10, "a blank picture"


def test_gif_decodes_and_shows_the_returns_that_evaluation_counts(run, capsys):
    assert main(["render", str(run), "--task", "goal_velocity=0.5", "--out", "clip.gif", "--seed", "3", *SMALL]) == 0
    printed = capsys.readouterr().out
    with Image.open("clip.gif") as gif:
        check_frames([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)])
    # the reference: round 0 of `safemaml evaluate` on the same task and seed, n = fast_batch_size
    assert main(["evaluate", str(run), "--grid", "0.5:0.5:1", "--trajectories", "2", "--repeats", "1", "--seed", "3",
                 "--out", "ev"]) == 0
    with gzip.open("ev/returns.csv.gz", "rt") as f:
        rows = list(csv.DictReader(f))
    held = [float(r["return"]) for r in rows if r["phase"] == "heldout"]
    post = [float(r["return"]) for r in rows if r["phase"] == "post" and r["trajectory"] == "0"]
    assert f"return before adaptation {held[0]:.2f}, after {post[0]:.2f}" in printed
    shown = render_run(run, ["goal_velocity=0.5"], "again.gif", seed=3, clip=ClipSettings(W, H, frames=2))
    assert shown["before_return"] == pytest.approx(held[0], abs=1e-4)
    assert shown["after_return"] == pytest.approx(post[0], abs=1e-4)
    other = render_run(run, ["goal_velocity=0.5"], "other.gif", seed=4, clip=ClipSettings(W, H, frames=2))
    assert other["before_return"] != shown["before_return"]


def test_mp4_decodes(run):
    av = pytest.importorskip("av", reason="MP4 needs the extra safemaml[render]")
    assert main(["render", str(run), "--task", "goal_velocity=1.5", "--out", "clip.mp4", *SMALL]) == 0
    with av.open("clip.mp4") as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    check_frames(frames)


def test_a_replay_from_another_reset_is_refused(run):
    """The safety net behind the pictures: replaying the recorded actions from a wrong reset state must not
    pass for the sampled episode."""
    cfg = RunDir(run).read_config()
    family = get_family(cfg.tasks)
    params = RunDir(run).load_last()["params"]
    tasks = np.array([[0.5]])
    traj = Sampler(family, policy_spec(cfg, family), 1, 1).sample(params, tasks, seed=derive_seed(9, 0, 1))
    assert replay(family, cfg, tasks, traj, derive_seed(9, 0, 1)).total == pytest.approx(
        float(traj.returns[0, 0]), abs=1e-4)
    with pytest.raises(RunFault, match="differs from the sampled one"):
        replay(family, cfg, tasks, traj, derive_seed(9, 0, 1) + 1)


@pytest.mark.parametrize("args, message", [
    (["--task", "v=0.5"], "task parameters are goal_velocity"),
    (["--task", "goal_velocity=fast"], "not a number"),
    (["--task", "goal_velocity=11"], "outside the accepted domain"),
    (["--task", "goal_velocity=0.5", "--task", "goal_velocity=1"], "twice"),
    (["--task", "0.5"], "KEY=VALUE"),
    (["--task", "goal_velocity=0.5", "--out", "clip.avi"], "must end in .gif or .mp4"),
    (["--task", "goal_velocity=0.5", "--out", "missing/clip.gif"], "does not exist"),
    (["--task", "goal_velocity=0.5", "--width", "4"], "--width"),
    (["--task", "goal_velocity=0.5", "--stride", "0"], "--stride"),
    (["--task", "goal_velocity=0.5", "--seed", "-1"], "--seed"),
])
def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path, capsys, args, message):
    argv = ["render", str(run), "--out", "clip.gif", *args] if "--out" not in args else ["render", str(run), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("safemaml: error:") and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_existing_file_is_replaced_only_with_overwrite(run, capsys):
    Path("clip.gif").write_text("keep me")
    assert main(["render", str(run), "--task", "goal_velocity=0.5", "--out", "clip.gif", *SMALL]) == 2
    assert "exists" in capsys.readouterr().err
    assert Path("clip.gif").read_text() == "keep me"
    assert main(["render", str(run), "--task", "goal_velocity=0.5", "--out", "clip.gif", "--overwrite", *SMALL]) == 0
    with Image.open("clip.gif") as gif:
        assert gif.n_frames == FRAMES


def test_a_family_without_a_mujoco_model_is_refused(tmp_path, capsys):
    train(tiny_config(iterations=1), tmp_path / "nav", quiet=True)
    assert main(["render", str(tmp_path / "nav"), "--task", "goal_x=0.1,goal_y=0.2", "--out", "clip.gif"]) == 2
    assert "nav2d has none" in capsys.readouterr().err
    assert not (tmp_path / "clip.gif").exists()


def test_no_opengl_is_a_fault_of_one_line(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MUJOCO_GL", "none-such")
    assert main(["render", str(run), "--task", "goal_velocity=0.5", "--out", "clip.gif", *SMALL]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MUJOCO_GL" in err
    assert not any(p.suffix == ".gif" for p in [*tmp_path.iterdir(), *run.iterdir()])
