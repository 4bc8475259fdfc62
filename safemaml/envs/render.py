"""Offscreen pictures of a MuJoCo robot: one RGB frame per simulation state.

mujoco.Renderer picks its OpenGL backend once, when `mujoco` is first imported (from MUJOCO_GL,
GLFW by default, which needs a display); safemaml imports mujoco long before anything is drawn.
So this module opens the context itself: MUJOCO_GL if it is set, else EGL on Linux (headless,
Mesa's EGL works without a GPU) and GLFW elsewhere, then draws with MuJoCo's own renderer
(mjv_updateScene, mjr_render, mjr_readPixels) through the model's "track" camera, the side view
that follows the robot's centre of mass in Gymnasium's half_cheetah.xml and ant.xml.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import mujoco
import numpy as np

from safemaml.errors import RunFault

BACKENDS = {"egl": "mujoco.egl", "osmesa": "mujoco.osmesa", "glfw": "mujoco.glfw", "cgl": "mujoco.cgl"}


def gl_backend() -> str:
    """The OpenGL backend to draw with: MUJOCO_GL when set, else EGL on Linux and GLFW elsewhere."""
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    return chosen or ("egl" if sys.platform.startswith("linux") else "glfw")


def open_gl_context(width: int, height: int) -> Any:
    """A current OpenGL context of the chosen backend, or a one-line RunFault naming the fix."""
    backend = gl_backend()
    if backend not in BACKENDS:
        raise RunFault(f"MUJOCO_GL={backend!r} cannot draw offscreen; use one of {', '.join(BACKENDS)}")
    try:
        context = importlib.import_module(BACKENDS[backend]).GLContext(width, height)
        context.make_current()
    except Exception as exc:  # a missing library raises ImportError, OSError, RuntimeError or OpenGL's errors
        hint = "install Mesa's EGL (Debian: libegl1 libegl-mesa0) or set MUJOCO_GL=osmesa" if backend == "egl" \
            else "set MUJOCO_GL=egl (headless) or osmesa"
        raise RunFault(f"cannot open an OpenGL context with MUJOCO_GL={backend} ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else 'no message'}); {hint}") from None
    return context


class FrameRenderer:
    """Draws `model` in the state (qpos, qvel) as a [height, width, 3] uint8 image."""

    def __init__(self, model: mujoco.MjModel, width: int, height: int):
        self.model, self.width, self.height = model, width, height
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self.context = open_gl_context(width, height)
        self.data = mujoco.MjData(model)
        self.scene = mujoco.MjvScene(model, maxgeom=1000)
        self.option = mujoco.MjvOption()
        self.camera = mujoco.MjvCamera()
        track = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "track")
        if track >= 0:
            self.camera.type, self.camera.fixedcamid = mujoco.mjtCamera.mjCAMERA_FIXED, track
        else:  # a model without the side camera: follow the first body from Gymnasium's distance
            self.camera.type, self.camera.trackbodyid = mujoco.mjtCamera.mjCAMERA_TRACKING, 1
            self.camera.distance = 4.0
        self.mjr = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self.mjr)
        self.viewport = mujoco.MjrRect(0, 0, width, height)
        self.pixels = np.zeros((height, width, 3), dtype=np.uint8)

    def render(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """The picture of one state (a copy; rows top to bottom)."""
        self.context.make_current()
        self.data.qpos[:], self.data.qvel[:] = qpos, qvel
        mujoco.mj_forward(self.model, self.data)
        mujoco.mjv_updateScene(self.model, self.data, self.option, None, self.camera,
                               mujoco.mjtCatBit.mjCAT_ALL, self.scene)
        mujoco.mjr_render(self.viewport, self.scene, self.mjr)
        mujoco.mjr_readPixels(self.pixels, None, self.viewport, self.mjr)
        return np.flipud(self.pixels).copy()  # OpenGL's rows run bottom to top

    def close(self) -> None:
        """Free the GPU-side context (the MjrContext first, while its GL context is current)."""
        self.context.make_current()
        self.mjr.free()
        self.context.free()

    def __enter__(self) -> FrameRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
