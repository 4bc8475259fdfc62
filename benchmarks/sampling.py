"""Control steps per second of four ways to sample episodes, measured side by side in one run.

  (a) a Gymnasium single-env loop, the policy called every step (torch's default threads;
      (a1) the same with torch on one thread, the best case for this baseline)
  (b) Gymnasium AsyncVectorEnv, one worker per core, the policy batched over its envs
  (c) raw MuJoCo physics: mujoco.batch on all cores replaying (d)'s actions, no policy (the limit)
  (d) safemaml's collector (Sampler) with the policy in the loop, 800 environments; with --device cuda
      its policy runs on the GPU (the physics stays on the CPU; (a)-(c) are the CPU's either way)

Usage: python benchmarks/sampling.py [--families halfcheetah-vel ant-vel] [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import safemaml  # noqa: E402,F401
from safemaml.engine.learner import torch_device  # noqa: E402
from safemaml.engine.policy import PolicySpec, mean_action  # noqa: E402
from safemaml.engine.rollout import Sampler, torch_threads  # noqa: E402
from safemaml.errors import SafeMamlError  # noqa: E402
from safemaml.tasks import get_family  # noqa: E402

GYM_ID = {"halfcheetah-vel": "safemaml/HalfCheetahVel-v0", "halfcheetah-dir": "safemaml/HalfCheetahDir-v0",
          "ant-vel": "safemaml/AntVel-v0", "ant-dir": "safemaml/AntDir-v0"}


def _policy(family):
    """The collector's policy, called the way a per-step loop calls it: a Normal distribution,
    a sampled action and its log-probability (which the collector records too)."""
    spec = PolicySpec(family.obs_dim, family.act_dim)
    params = spec.init(0)
    std = torch.exp(params["log_std"])

    @torch.no_grad()
    def act(obs: np.ndarray) -> tuple[np.ndarray, float]:
        mean = mean_action(spec, params, torch.as_tensor(obs, dtype=torch.float32))
        dist = torch.distributions.Normal(mean, std)
        action = dist.sample()
        return action.numpy().astype(np.float64), dist.log_prob(action).sum(-1)

    return act


def single_env_loop(family, steps: int) -> float:
    """A reference collector: one Gymnasium env, the policy every step, the transitions kept."""
    env, act = gym.make(GYM_ID[family.name]), _policy(family)
    obs, _ = env.reset(seed=0)
    record = []
    start = time.perf_counter()
    for _ in range(steps):
        action, logp = act(obs)
        next_obs, reward, term, trunc, _ = env.step(action)
        record.append((obs, action, reward, logp))
        obs = next_obs
        if term or trunc:
            obs, _ = env.reset()
    return steps / (time.perf_counter() - start)


def async_vector(family, steps: int, workers: int) -> float:
    envs = gym.make_vec(GYM_ID[family.name], num_envs=workers, vectorization_mode="async")
    act = _policy(family)
    obs, _ = envs.reset(seed=0)
    envs.step(act(obs)[0])  # let the workers start
    start = time.perf_counter()
    for _ in range(steps):
        obs, *_ = envs.step(act(obs)[0])
    rate = steps * workers / (time.perf_counter() - start)
    envs.close()
    return rate


def raw_physics(family, actions: np.ndarray, seed: int) -> float:
    """Replay the collector's actions [H, B, A] from the same initial states through bare
    mujoco.batch calls: the same physics, without policy, observations or rewards."""
    steps, num_envs, _ = actions.shape
    env = family.make_env(num_envs)
    env.reset(seed=seed)
    batch, ctrl = env.batch, env.ctrl
    start = time.perf_counter()
    for t in range(steps):
        ctrl[:] = actions[t]
        batch.step(nstep=family.robot.frame_skip)
    return steps * num_envs / (time.perf_counter() - start)


def collector(sampler: Sampler, seed: int) -> tuple[float, np.ndarray]:
    """One full sampling phase (K x n environments) with the policy in the loop; also its actions [H, B, A]."""
    spec, family = sampler.spec, sampler.family
    params, tasks = spec.init(0, sampler.device), family.sample(sampler.num_tasks, np.random.default_rng(0))
    start = time.perf_counter()
    traj = sampler.sample(params, tasks, seed=seed)
    rate = traj.num_steps / (time.perf_counter() - start)
    actions = traj.actions.flatten(0, 1).transpose(0, 1).double().cpu().numpy()
    return rate, actions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["halfcheetah-vel", "ant-vel"])
    parser.add_argument("--quick", action="store_true", help="shorter measurements")
    parser.add_argument("--device", default="cpu", help="where (d)'s policy runs: cpu, cuda or cuda:N")
    args = parser.parse_args()
    try:
        device = torch_device(args.device)
    except SafeMamlError as error:
        parser.error(str(error))
    cores = os.cpu_count() or 1
    scale = 0.25 if args.quick else 1.0
    print(f"# sampling benchmark, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{cores} cores, torch {torch.__version__}, mujoco {mujoco.__version__}, (d) on {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print("| family | (a) gym loop | (a1) gym loop, 1 torch thread | (b) async, 1 worker/core | (c) raw physics "
          "| (d) safemaml | d/a | d/a1 | d/b | d/c |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.families:
        family = get_family(name)
        heavy = family.robot.contact_forces
        a = single_env_loop(family, int((800 if heavy else 3000) * scale))  # torch as a user gets it
        with torch_threads(1):
            a1 = single_env_loop(family, int((800 if heavy else 3000) * scale))
            b = async_vector(family, int((400 if heavy else 1500) * scale), cores)
        # (c) replays (d)'s actions: the same physics without the policy. They alternate, best of
        # five each, because the machine is shared and noisy.
        horizon = int((100 if heavy else 200) * scale)
        sampler = Sampler(family, PolicySpec(family.obs_dim, family.act_dim), 40, 20, horizon=horizon, device=device)
        c = d = 0.0
        for round_ in range(5):
            rate, actions = collector(sampler, seed=round_)
            d = max(d, rate)
            c = max(c, raw_physics(family, actions, seed=round_))
        print(f"| {name} | {a:,.0f} | {a1:,.0f} | {b:,.0f} | {c:,.0f} | {d:,.0f} | {d / a:.1f} | {d / a1:.1f} "
              f"| {d / b:.1f} | {d / c:.2f} |", flush=True)


if __name__ == "__main__":
    main()
