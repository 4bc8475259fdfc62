"""The training loop over a run folder: `train` (progress, metrics.csv, checkpoints, resume,
Ctrl-C and non-finite guards) around safemaml.engine.learner's `meta_step`."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from objectives import make_objective
from safemaml import config as config_io
from safemaml.config import TrainConfig
from safemaml.engine.learner import METRIC_FIELDS, Learner, NonFiniteError, meta_step
from safemaml.errors import SafeMamlError
from safemaml.runs import integrity, rundir
from safemaml.runs.rundir import RunDir


def new_learner(cfg: TrainConfig) -> Learner:
    """The learner of a fresh run of `cfg`, with the objective its config names."""
    return Learner.create(cfg, make_objective(cfg.objective_name, **cfg.objective_params))


def checkpoint_state(learner: Learner, iteration: int) -> dict:
    """What last.pt and checkpoints/iter_N.pt hold (torch.load(weights_only=True) loads it)."""
    return {"iteration": iteration, "params": {k: v.detach().cpu() for k, v in learner.params.items()},
            "optimizer": learner.optimizer.state_dict(), "objective": learner.objective.state_dict(),
            "config": config_io.dumps(learner.cfg)}


def load_checkpoint(path: Path) -> dict:
    """A validated checkpoint (see safemaml.runs.rundir.load_checkpoint)."""
    return rundir.load_checkpoint(path)


def _restore(learner: Learner, run: RunDir) -> int:
    """Load run's last.pt into learner; the number of finished iterations."""
    ckpt = run.load_last()
    rundir.check_params(ckpt["params"], learner.params, run.last_path)
    try:
        learner.optimizer.load_state_dict(ckpt["optimizer"])
        learner.objective.load_state_dict(ckpt["objective"])
    except SafeMamlError as exc:  # the objective refused its state, in one line that names the keys
        raise SafeMamlError(f"{run.last_path}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError):
        raise SafeMamlError(f"{run.last_path} was not written by this run's optimiser and objective") from None
    learner.params = {k: v.to(learner.device) for k, v in ckpt["params"].items()}
    return int(ckpt["iteration"]) + 1


def time_breakdown(m: dict[str, float]) -> str:
    """Where an iteration's time went (the time_* columns of metrics.csv), for the progress line."""
    return (f"sampling {m['time_sampling']:.1f} s / adaptation {m['time_adapt']:.1f} s / "
            f"meta-step {m['time_optimize']:.1f} s")


class Progress:
    """What a person watching sees: a line at the start, the stages of the first iteration, one
    line per iteration (rewritten in place on a terminal), and what to run at the end."""

    def __init__(self, quiet: bool, total: int):
        self.quiet, self.total = quiet, total
        self.tty = sys.stdout.isatty()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def phase(self, iteration: int, first: bool) -> Callable[[str], None] | None:
        if self.quiet or not first:
            return None
        return lambda name: self.say(f"  iteration {iteration + 1}: {name}...")

    def iteration(self, i: int, m: dict[str, float], per_it: float) -> None:
        if self.quiet:
            return
        eta = per_it * (self.total - i - 1)
        line = (f"[{i + 1:>4}/{self.total}] pre {m['pre_return']:9.2f}  post {m['post_return']:9.2f}  "
                f"Γ {m['mean_gamma']:+8.2f}  V̂ {m['violation_rate']:.2f}  {per_it:5.1f} s/it "
                f"({time_breakdown(m)})  "
                f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")
        end = "\r" if self.tty and i + 1 < self.total else "\n"
        print(line, end=end, flush=True)


def _refuse_foreign(run: RunDir) -> None:
    foreign = run.foreign_files()
    if foreign and not run.has_checkpoint():
        raise SafeMamlError(f"{run} is not empty ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}) "
                            "and holds no run; choose another --out")


def _open(run: RunDir, cfg: TrainConfig, resume: bool, progress: Progress) -> tuple[Learner, int]:
    """The learner and the first iteration to run; refuses folders that hold other work."""
    learner = new_learner(cfg)
    if not resume:
        if run.has_checkpoint():
            try:
                saved = run.read_config()
                differ = integrity.config_difference(config_io.to_dict(saved), config_io.to_dict(cfg))
            except SafeMamlError:  # a damaged config.toml: the refusal below still holds
                saved, differ = cfg, ""
            if differ:  # another request: name the difference (a rerun of this one is told how to continue)
                raise SafeMamlError(f"{run} already holds a run made with other settings ({differ}); choose "
                                    "another --out")
            further = f" --iterations {cfg.iterations}" if cfg.iterations != saved.iterations else ""
            raise SafeMamlError(f"{run} already holds a run; continue it with `safemaml train --resume "
                                f"{shlex.quote(str(run))}{further}` or choose another --out")
        _refuse_foreign(run)
        return learner, 0
    if not run.has_checkpoint():  # it never finished an iteration: start it again with its config
        progress.say(f"{run} has no finished iteration; starting it from iteration 1")
        return learner, 0
    integrity.check_config_matches_checkpoint(run.config_path.read_text(), run.load_last(), run.path)
    done = _restore(learner, run)
    integrity.metrics_rows(run.metrics_path, done)  # refuses a metrics.csv that a resume would pad or cut
    if cfg.iterations < done:
        raise SafeMamlError(f"{run} has {done} finished iterations; --iterations must be at least {done}")
    return learner, done


def train(cfg: TrainConfig, out: Path, resume: bool = False, quiet: bool = False,
          tensorboard: bool = False) -> Learner:
    """Meta-train into run folder `out` (created, or resumed from its last.pt) under its lock.

    A new run that stops before its first iteration finishes leaves nothing behind (the same
    command starts it again); a resume that stops before an iteration finishes changes nothing."""
    run, progress = RunDir(out), Progress(quiet, cfg.iterations)
    if resume:
        run.require_run()
    else:
        _refuse_foreign(run)  # before the lock file is made: a refused folder stays as it was
    created = not run.path.exists()
    with run.lock():
        try:
            learner, start = _open(run, cfg, resume, progress)  # refusals change nothing
        except BaseException:
            if created:
                run.remove_if_empty()
            raise
        if start >= cfg.iterations:
            progress.say(f"{run} is already complete at {start} iterations; to train further: "
                         f"safemaml train --resume {shlex.quote(str(run))} --iterations {start * 2}")
            return learner
        board = None
        try:
            board = _tensorboard(run) if tensorboard else None
            if not resume:
                run.discard_unstarted(created=False)  # leftovers of a start that never finished an iteration
                run.write_config(cfg)
            _loop(learner, run, start, progress, board)
        except BaseException:
            if not resume:
                run.discard_unstarted(created)
            raise
        finally:
            if board is not None:
                board.close()
    return learner


def train_or_resume(cfg: TrainConfig, out: Path, quiet: bool = False, *,
                    same_except: tuple[str, ...] = ("iterations",)) -> Learner:
    """Train `out` up to cfg.iterations, resumed from its last.pt where it has one (compare's runs, a study's).

    A run found there is continued only if it was made with `cfg`, the settings in `same_except` aside (a
    study's worker brings its own device); a folder with no finished iteration (its worker died in the first
    one) is started afresh by `train` itself, under the run's lock."""
    run = RunDir(out)
    done = run.has_checkpoint()
    if done:
        saved, wanted = config_io.to_dict(run.read_config()), config_io.to_dict(cfg)
        differ = sorted(k for k in saved.keys() | wanted.keys()
                        if k not in same_except and saved.get(k) != wanted.get(k))
        if differ:
            raise SafeMamlError(f"{out} holds a run made with other settings ({', '.join(differ)}); choose another "
                                "--out")
    return train(cfg, out, resume=done, quiet=quiet)


def _loop(learner: Learner, run: RunDir, start: int, progress: Progress, board) -> None:
    cfg = learner.cfg
    log = run.metrics_log(METRIC_FIELDS, keep_below=start)
    last_done = start - 1
    verb = "resuming" if start else "training"
    progress.say(f"{verb} {cfg.tasks} with {cfg.objective_name}: iterations {start + 1}..{cfg.iterations} "
                 f"into {run} (Ctrl-C keeps every finished iteration)")
    try:
        for i in range(start, cfg.iterations):
            t = time.perf_counter()
            try:
                metrics = meta_step(learner, i, progress.phase(i, first=i == start))
            except NonFiniteError as exc:
                where = (f"the last good checkpoint is {run.last_path} (iteration {last_done})"
                         if last_done >= 0 else "no iteration finished, nothing was kept")
                raise NonFiniteError(f"{exc}; stopped, {where}") from None
            # last.pt.tmp first: a full disk then stops the run before anything else has changed
            staged = rundir.stage_bytes(run.last_path, rundir.checkpoint_bytes(checkpoint_state(learner, i)))
            try:
                if i == start and start > 0:
                    run.write_config(cfg)  # a resume describes itself once it has done something
                log.append(metrics)
                rundir.commit(staged, run.last_path)
            finally:
                staged.unlink(missing_ok=True)
            last_done = i
            if (i + 1) % cfg.checkpoint_every == 0:
                rundir.ensure_folder(run.checkpoints)
                rundir.save_checkpoint(checkpoint_state(learner, i), run.checkpoint_path(i))
            if board is not None:
                for key in (log.fields or [])[1:]:  # the metrics.csv columns after `iteration`
                    board.add_scalar(key, metrics.get(key, float("nan")), i + 1)
            progress.iteration(i, metrics, time.perf_counter() - t)
    except KeyboardInterrupt:  # last.pt already holds the last finished iteration: nothing half-done is saved
        if last_done >= 0:
            message = (f"interrupted after iteration {last_done + 1}; resume with: safemaml train --resume "
                       f"{shlex.quote(str(run))}")
        else:
            message = "interrupted before the first iteration finished; nothing was kept"
        raise KeyboardInterrupt(message) from None


def _tensorboard(run: RunDir):
    """A SummaryWriter into RUN/tensorboard (the optional `tensorboard` extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SafeMamlError("--tensorboard needs the tensorboard package: pip install 'safemaml[tensorboard]'") \
            from None
    with rundir.os_errors(run.path / "tensorboard"):
        return SummaryWriter(str(run.path / "tensorboard"))
