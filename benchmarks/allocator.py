"""What glibc's malloc costs a meta-step, and what `import safemaml` (safemaml/allocator.py) saves:
the time and minor page faults of an elementwise product of two [40, 4000, 100] float tensors (64 MB,
the size of a paper-sized meta-step's activations), allocating its result or writing into a buffer,
and the time and RSS of TRPO's Fisher-vector products at paper size (random data), each measured in
a fresh process under glibc's defaults (SAFEMAML_MALLOC=system) and under safemaml's setting.

Usage: python benchmarks/allocator.py [--products N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

PROBE = r"""
import json, resource, sys, time
import safemaml, torch
from safemaml.engine.adapt import adapt
from safemaml.config import AdaptConfig
from safemaml.engine.curvature import make_fvp
from safemaml.engine.metastep import MetaData
from safemaml.engine.policy import PolicySpec
from safemaml.engine.rollout import Trajectories

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

out = {}
x, buf = torch.randn(40, 4000, 100), torch.empty(40, 4000, 100)
for name, op in (("product, new result", lambda: x * x), ("product, into a buffer", lambda: torch.mul(x, x, out=buf))):
    op()
    f0, t0 = faults(), time.perf_counter()
    for _ in range(10):
        op()
    out[name] = {"ms": (time.perf_counter() - t0) * 100, "faults": (faults() - f0) / 10}
torch.manual_seed(0)
K, n, H, O, A = 40, 20, 200, 17, 6
spec, cfg = PolicySpec(O, A, (100, 100), "relu"), AdaptConfig()
theta = spec.init(0)
def phase():
    return Trajectories(torch.randn(K, n, H, O), torch.randn(K, n, H, A), torch.randn(K, n, H), torch.ones(K, n, H),
                        torch.zeros(K, n, H), torch.zeros(K, 1))
pre, post, adv = phase(), phase(), torch.randn(K, n, H)
data = MetaData(pre, post, adv, adv, adapt(spec, cfg, theta, pre.obs, pre.actions, adv, pre.mask))
v = torch.randn(sum(p.numel() for p in theta.values()))
for curvature in ("analytic", "exact"):
    fvp = make_fvp(curvature, spec, cfg, theta, data)
    fvp(v)
    times, rss = [], []
    for _ in range(int(sys.argv[1])):
        t0 = time.perf_counter()
        fvp(v)
        times.append(time.perf_counter() - t0)
        rss.append(rss_mib())
    out[f"FVP {curvature}"] = {"s": min(times), "rss_first": rss[0], "rss_last": rss[-1]}
print(json.dumps(out))
"""


def measure(malloc: str, products: int) -> dict:
    env = {**os.environ, "SAFEMAML_MALLOC": malloc, "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "-c", PROBE, str(products)], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=6)
    args = parser.parse_args()
    runs = {"glibc defaults": measure("system", args.products), "safemaml (kept)": measure("", args.products)}
    print(f"# allocator benchmark, load average {os.getloadavg()[0]:.1f}")
    print("| malloc | product, new result | product, into a buffer | FVP analytic (best) | FVP exact (best) "
          "| RSS: first analytic → last exact product |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in runs.items():
        new, into = r["product, new result"], r["product, into a buffer"]
        a, e = r["FVP analytic"], r["FVP exact"]
        print(f"| {name} | {new['ms']:.1f} ms, {new['faults']:.0f} faults | {into['ms']:.1f} ms, "
              f"{into['faults']:.0f} faults | {a['s']:.2f} s | {e['s']:.2f} s | "
              f"{a['rss_first']:.0f} → {e['rss_last']:.0f} MiB |")
    base, kept = runs["glibc defaults"], runs["safemaml (kept)"]
    print(f"\nkept / defaults: new-result product {kept['product, new result']['ms'] / base['product, new result']['ms']:.2f}, "
          f"FVP analytic {kept['FVP analytic']['s'] / base['FVP analytic']['s']:.2f}, "
          f"FVP exact {kept['FVP exact']['s'] / base['FVP exact']['s']:.2f}")


if __name__ == "__main__":
    main()
