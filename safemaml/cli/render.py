"""`safemaml render RUN --task KEY=VALUE --out clip.mp4`: the command-line face of safemaml.runs.render.

`add_parser(sub)` registers the subcommand on the main parser (called from safemaml.cli.main).
"""

from __future__ import annotations

import argparse
import inspect


def cmd_render(args: argparse.Namespace) -> int:
    """A clip of one episode before and one after adaptation on a task, side by side, with each return.

    The adaptation is round 0 of `safemaml evaluate` on that task with the run's fast_batch_size
    pre-update episodes (evaluation seed --seed): the left episode is the round's held-out pre-update
    episode, the right one its first post-update episode, so the returns written on the frames are the
    pair that evaluation counts. MuJoCo families only; drawn offscreen (MUJOCO_GL, default EGL on Linux).
    .gif needs nothing more; .mp4 needs PyAV: pip install "safemaml[render]".
    """
    from safemaml.runs.render import ClipSettings, render_run

    clip = ClipSettings(width=args.width, height=args.height, stride=args.stride, frames=args.frames, fps=args.fps)
    shown = render_run(args.run, args.task, args.out, seed=args.seed, clip=clip, overwrite=args.overwrite)
    print(f"{shown['family']} {', '.join(f'{k}={v:g}' for k, v in shown['task'].items())}, after "
          f"{shown['iteration']} meta-iterations, seed {shown['seed']}: return before adaptation "
          f"{shown['before_return']:.2f}, after {shown['after_return']:.2f} (Gamma {shown['gamma']:+.2f})")
    print(f"written: {shown['out']} ({shown['frames']} frames at {shown['fps']:g} fps)")
    return 0


def add_parser(sub) -> None:
    """Register `render` on the subparsers `sub` of the main parser."""
    doc = inspect.cleandoc(cmd_render.__doc__ or "")
    p = sub.add_parser("render", help=doc.splitlines()[0], description=doc)
    p.set_defaults(func=cmd_render, parser=p)
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("--task", action="append", required=True, metavar="KEY=VALUE",
                   help="the task, e.g. goal_velocity=0.5 or direction=-1 (`safemaml tasks` names the parameters)")
    p.add_argument("--out", required=True, metavar="FILE", help="the clip: FILE.gif, or FILE.mp4 with safemaml[render]")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (refused otherwise)")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed: the episodes and the adaptation data")
    p.add_argument("--width", type=int, default=320, help="width of each panel in pixels")
    p.add_argument("--height", type=int, default=240, help="height of each panel in pixels")
    p.add_argument("--stride", type=int, default=1, metavar="K", help="draw every K-th control step")
    p.add_argument("--frames", type=int, metavar="N", help="draw only the first N frames (default: whole episodes)")
    p.add_argument("--fps", type=float, help="frames per second (default: real time, 1 / (dt * K))")
