"""A route to Ant's contact forces inside MuJoCo's batch threads, and why it is not used (measured).

Gymnasium's Ant observes cfrc_ext, which MuJoCo computes only in mj_rnePostConstraint; safemaml's
engine calls it from Python for every simulation after the batched step. The route measured here
needs nothing compiled: add a user sensor (acc stage) to the model and install libmujoco's own
mj_rnePostConstraint as the mjcb_sensor callback through ctypes (the callback's extra stage
argument is ignored under the C calling convention), so that mj_step computes cfrc_ext in the
batch's C threads. The script checks it bit for bit against the engine's way (after the step,
mj_rnePostConstraint on the simulation's MjData) and times the three variants per 800-env step.

Usage: python benchmarks/ant_contact_forces.py [--steps N]
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import time

import mujoco
import mujoco.batch
import numpy as np

from safemaml.envs.mujoco_batch import ANT, GYM_ASSETS, load_model


def with_user_sensor() -> mujoco.MjModel:
    spec = mujoco.MjSpec.from_file(os.path.join(GYM_ASSETS, ANT.xml))
    sensor = spec.add_sensor()
    sensor.type, sensor.dim, sensor.needstage = mujoco.mjtSensor.mjSENS_USER, 1, mujoco.mjtStage.mjSTAGE_ACC
    return spec.compile()


def batches(model, nsim, rng):
    b = mujoco.batch.Batch(model, nsim, nthread=os.cpu_count() or 1, persistent=True)
    b.reset(stage=mujoco.mjtStage.mjSTAGE_NONE)
    b.bind("qpos")[:] = model.qpos0 + rng.uniform(-0.1, 0.1, (nsim, model.nq))
    b.bind("qvel")[:] = 0.1 * rng.standard_normal((nsim, model.nv))
    b.forward()
    return b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--nsim", type=int, default=800)
    args = parser.parse_args()
    lib = ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(mujoco.__file__), "libmujoco.so*"))[0])
    callback = ctypes.c_void_p.in_dll(lib, "mjcb_sensor")
    plain, sensed = load_model(ANT), with_user_sensor()
    rng = np.random.default_rng(0)
    ref, new = batches(plain, args.nsim, np.random.default_rng(1)), batches(sensed, args.nsim, np.random.default_rng(1))
    forces, data = new.bind("cfrc_ext"), mujoco.MjData(plain)
    seconds = {"physics only": 0.0, "physics + mj_rnePostConstraint from Python": 0.0,
               "physics + callback in the batch threads": 0.0}
    checked = differ = 0
    expected = np.zeros_like(forces)
    for _ in range(args.steps):
        u = rng.uniform(-1, 1, (args.nsim, plain.nu))
        ref.bind("ctrl")[:] = u
        new.bind("ctrl")[:] = u
        callback.value = None
        start = time.perf_counter()
        ref.step(nstep=ANT.frame_skip)
        seconds["physics only"] += time.perf_counter() - start
        for i in range(args.nsim):
            ref.get_data(i, data)
            mujoco.mj_rnePostConstraint(plain, data)
            expected[i] = data.cfrc_ext
        seconds["physics + mj_rnePostConstraint from Python"] += time.perf_counter() - start
        callback.value = ctypes.cast(lib.mj_rnePostConstraint, ctypes.c_void_p).value
        start = time.perf_counter()
        new.step(nstep=ANT.frame_skip)
        seconds["physics + callback in the batch threads"] += time.perf_counter() - start
        callback.value = None
        checked += args.nsim
        differ += int((expected != forces).any(axis=(1, 2)).sum())
        assert np.array_equal(ref.bind("qpos"), new.bind("qpos"))  # the sensor changes no physics
    print(f"# {args.nsim} Ant simulations x {args.steps} control steps, load average {os.getloadavg()[0]:.1f}")
    for name, s in seconds.items():
        print(f"{name}: {1e3 * s / args.steps:.1f} ms per step")
    print(f"cfrc_ext of the callback differs from the engine's in {differ} of {checked} "
          f"(simulation, step) pairs")


if __name__ == "__main__":
    main()
