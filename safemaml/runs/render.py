"""`safemaml render`: see negative adaptation — one episode before and one after adaptation, side by side.

On one task, the run's policy theta adapts exactly as round 0 of `safemaml evaluate` adapts it
(safemaml.runs.evaluate.evaluation_round with n = the run's fast_batch_size pre-update trajectories,
the evaluation seed --seed): the left panel is that round's held-out pre-update episode (sampled with
theta, not adapted on), the right one its first post-update episode (theta'_T). So the two returns written on
the frames are the pair (G_pre, G_post) that evaluation counts for this task, and
`safemaml evaluate RUN --grid V:V:1 --trajectories n --repeats 1 --seed S` finds the same numbers.

The episodes are sampled by the batched sampler, which keeps no simulation states; they are replayed
here from the same reset seed with the recorded actions (MuJoCo is deterministic), and the replay's rewards
must equal the sampled ones, or nothing is written. Families without a MuJoCo model (nav2d, bandit) are
refused: their before/after returns are evaluate's figure.

The clip is fixed by --seed on one machine and torch thread count; floating-point rounding (another thread
count, another CPU) changes the inner step slightly, and 200 steps of physics turn that into another episode
after adaptation (the seed-0 HalfCheetahVel base at v = 0.5: -73.1 with OMP_NUM_THREADS=1, -77.4 with 2).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from safemaml.config import TrainConfig
from safemaml.engine.learner import derive_seed, policy_spec
from safemaml.engine.policy import Params
from safemaml.engine.rollout import Sampler, Trajectories
from safemaml.envs.mujoco_batch import load_model
from safemaml.envs.render import FrameRenderer
from safemaml.errors import RunFault, SafeMamlError
from safemaml.measure.video import INK, WARN, check_video_path, side_by_side, write_video
from safemaml.runs.evaluate import HELD_OUT_PHASE, POST_PHASE, evaluation_round
from safemaml.runs.rundir import RunDir, check_params
from safemaml.tasks import TaskFamily, get_family
from safemaml.tasks.locomotion import LocomotionFamily

MAX_SIDE = 1920  # pixels of one panel


@dataclass(frozen=True)
class ClipSettings:
    """How the clip looks: panel size in pixels, every `stride`-th control step, at most `frames` frames,
    `fps` frames per second (None: real time, 1 / (dt * stride))."""

    width: int = 320
    height: int = 240
    stride: int = 1
    frames: int | None = None
    fps: float | None = None

    def check(self) -> None:
        for name, value in (("--width", self.width), ("--height", self.height)):
            if not 16 <= value <= MAX_SIDE:
                raise SafeMamlError(f"{name} must be in [16, {MAX_SIDE}] pixels, got {value}")
        if self.stride < 1:
            raise SafeMamlError(f"--stride must be >= 1, got {self.stride}")
        if self.frames is not None and self.frames < 1:
            raise SafeMamlError(f"--frames must be >= 1, got {self.frames}")
        if self.fps is not None and not 0.1 <= self.fps <= 120:
            raise SafeMamlError(f"--fps must be in [0.1, 120], got {self.fps}")


@dataclass
class Episode:
    """One replayed episode: the states before every step and after the last, and the step rewards."""

    qpos: np.ndarray  # [T + 1, nq]
    qvel: np.ndarray  # [T + 1, nv]
    rewards: np.ndarray  # [T]

    @property
    def total(self) -> float:
        return float(self.rewards.sum())

    def so_far(self, t: int) -> float:
        """Return collected in the first t steps."""
        return float(self.rewards[:t].sum())

def parse_task(items: Sequence[str], family: TaskFamily) -> np.ndarray:
    """`KEY=VALUE` items (or one item of comma-separated pairs) naming every task parameter once -> [1, P]."""
    pairs = [part for item in items for part in item.split(",") if part.strip()]
    example = ",".join(f"{name}=0.5" for name in family.param_names)
    values: dict[str, float] = {}
    for pair in pairs:
        key, sep, text = (s.strip() for s in pair.partition("="))
        if not sep:
            raise SafeMamlError(f"--task expects KEY=VALUE such as {example}, got {pair!r}")
        if key not in family.param_names:
            raise SafeMamlError(f"--task: {family.name}'s task parameters are {', '.join(family.param_names)}; "
                                f"got {key!r}")
        if key in values:
            raise SafeMamlError(f"--task names {key} twice")
        try:
            values[key] = float(text)
        except ValueError:
            raise SafeMamlError(f"--task {key}={text!r}: not a number") from None
    missing = [name for name in family.param_names if name not in values]
    if missing:
        raise SafeMamlError(f"--task must give {', '.join(missing)} (e.g. --task {example})")
    return family.validate([[values[name] for name in family.param_names]])


def check_request(run: Path, task: Sequence[str], out: Path, seed: int, clip: ClipSettings,
                  overwrite: bool) -> tuple[TrainConfig, LocomotionFamily, np.ndarray, Params, int]:
    """Everything the command needs, read and checked before anything is sampled or written:
    (cfg, family, task [1, P], params, finished meta-iterations)."""
    folder = RunDir(run)
    cfg = folder.read_config()
    family = get_family(cfg.tasks)
    if not isinstance(family, LocomotionFamily):
        raise SafeMamlError(f"render draws MuJoCo robots; {family.name} has none (its before/after returns: "
                            f"safemaml evaluate {run})")
    tasks = parse_task(task, family)
    clip.check()
    if seed < 0:
        raise SafeMamlError(f"--seed must be >= 0, got {seed}")
    check_video_path(out, overwrite)
    if not folder.has_checkpoint():
        raise SafeMamlError(f"{run} has no finished iteration to render (no last.pt)")
    ckpt = folder.load_last()
    check_params(ckpt["params"], policy_spec(cfg, family).init(0), folder.last_path)
    return cfg, family, tasks, ckpt["params"], int(ckpt["iteration"]) + 1


def sample_pair(cfg: TrainConfig, family: LocomotionFamily, tasks: np.ndarray, params: Params,
                seed: int) -> tuple[Episode, Episode]:
    """Round 0 of evaluation on `tasks` [1, P] with n = fast_batch_size: the held-out pre-update episode and
    the first post-update one, replayed for their states."""
    spec = policy_spec(cfg, family)
    n = cfg.fast_batch_size
    sampler = Sampler(family, spec, 1, n, clip_actions=cfg.clip_actions)
    held_sampler = Sampler(family, spec, 1, 1, clip_actions=cfg.clip_actions)
    _, held, post = evaluation_round(cfg, spec, params, sampler, held_sampler, tasks, seed, 0)
    # trajectory 0 of the single task ran in environment 0, reset with the phase's seed + 0
    before = replay(family, cfg, tasks, held, derive_seed(seed, 0, HELD_OUT_PHASE))
    after = replay(family, cfg, tasks, post, derive_seed(seed, 0, POST_PHASE))
    return before, after


def replay(family: LocomotionFamily, cfg: TrainConfig, tasks: np.ndarray, traj: Trajectories,
           reset_seed: int) -> Episode:
    """Trajectory 0 of task 0 again, in one environment reset as the sampler reset it, with its actions;
    a RunFault if the rewards come out different (the replay would show another episode)."""
    env = family.make_env(1, nthread=1, clip_actions=cfg.clip_actions)
    env.set_tasks(tasks)
    env.reset(seed=reset_seed)
    steps = int(traj.mask[0, 0].sum().item())
    actions = traj.actions[0, 0, :steps].double().cpu().numpy()
    qpos, qvel, rewards = [env.qpos[0].copy()], [env.qvel[0].copy()], np.zeros(steps)
    for t in range(steps):
        _, reward, _ = env.step(actions[t:t + 1])
        rewards[t] = reward[0]
        qpos.append(env.qpos[0].copy())
        qvel.append(env.qvel[0].copy())
    sampled = traj.rewards[0, 0, :steps].double().cpu().numpy()
    if not np.allclose(rewards, sampled, rtol=1e-4, atol=1e-4):
        worst = int(np.argmax(np.abs(rewards - sampled)))
        raise RunFault(f"the replayed episode differs from the sampled one at step {worst} (reward "
                       f"{rewards[worst]:.6g} vs {sampled[worst]:.6g}); nothing written")
    return Episode(np.array(qpos), np.array(qvel), rewards)


def frames(renderer: FrameRenderer, before: Episode, after: Episode, header: list,
           clip: ClipSettings) -> Iterator[np.ndarray]:
    """The clip's frames: each panel shows its episode's state at step t (held at its last state once it
    ended), its return and the return collected so far."""
    length = max(len(before.rewards), len(after.rewards))
    steps = list(range(0, length + 1, clip.stride))[: clip.frames]
    worse = after.total < before.total
    for t in steps:
        panels, captions = [], []
        for name, episode, colour in (("before adaptation", before, INK), ("after adaptation", after,
                                                                           WARN if worse else INK)):
            shown = min(t, len(episode.rewards))
            panels.append(renderer.render(episode.qpos[shown], episode.qvel[shown]))
            captions.append([(f"{name}: return {episode.total:.1f}", colour),
                             (f"step {shown}: so far {episode.so_far(shown):.1f}", INK)])
        yield side_by_side(panels, captions, header, max(9, clip.height // 16))


def render_run(run: Path | str, task: Sequence[str], out: Path | str, seed: int = 0,
               clip: ClipSettings | None = None, overwrite: bool = False) -> dict:
    """Write the clip to `out` (.gif, or .mp4 with safemaml[render]); returns what it shows."""
    run, out, clip = Path(run), Path(out), clip or ClipSettings()
    cfg, family, tasks, params, iterations = check_request(run, task, out, seed, clip, overwrite)
    with FrameRenderer(load_model(family.robot), clip.width, clip.height) as renderer:
        before, after = sample_pair(cfg, family, tasks, params, seed)
        gamma = before.total - after.total
        task_text = ", ".join(f"{k} = {v:g}" for k, v in zip(family.param_names, tasks[0], strict=True))
        steps = cfg.adapt.num_steps
        adaptation = (f"adaptation: {steps} inner step{'s' * (steps > 1)} on {cfg.fast_batch_size} episodes "
                      f"(seed {seed}); Gamma = before - after = {gamma:+.1f}")
        header = [(f"{family.name}, {task_text}: {run.resolve().name} after {iterations} meta-iterations", INK),
                  (adaptation, WARN if gamma > 0 else INK)]
        dt = float(renderer.model.opt.timestep) * family.robot.frame_skip
        fps = clip.fps or 1.0 / (dt * clip.stride)
        count = write_video(out, frames(renderer, before, after, header, clip), fps)
    return {"family": family.name, "task": dict(zip(family.param_names, tasks[0].tolist(), strict=True)),
            "iteration": iterations, "seed": seed, "fast_batch_size": cfg.fast_batch_size,
            "before_return": before.total, "after_return": after.total, "gamma": gamma, "frames": count,
            "fps": fps, "out": str(out)}
