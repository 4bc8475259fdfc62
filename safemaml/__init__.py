"""safemaml: measure and reduce negative adaptation in MAML for reinforcement learning.

The Python API (see safemaml.api): `safemaml.train`, `safemaml.resume`, `safemaml.runs.evaluate`,
`safemaml.load_run`. Importing the package registers the Gymnasium ids
`safemaml/HalfCheetahVel-v0`, `safemaml/HalfCheetahDir-v0`, `safemaml/AntVel-v0` and `safemaml/AntDir-v0`.
"""

import os

# Idle OpenMP threads of torch spin and steal the cores MuJoCo steps on; this only takes
# effect when safemaml is imported before torch (sampling also runs torch on one thread).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from safemaml.allocator import keep_freed_memory  # noqa: E402

# Freed 64 MB tensors are reused instead of page-faulted in again (safemaml/allocator.py); ≈ 2x
# faster meta-steps on CPU. Opt out with SAFEMAML_MALLOC=system.
keep_freed_memory()

from safemaml.errors import RunFault, SafeMamlError  # noqa: E402
from safemaml.tasks.gym import register_envs  # noqa: E402

__version__ = "0.1.0"
API = ("train", "resume", "evaluate", "load_run")

register_envs()


def __getattr__(name: str):
    """The API functions, imported on first use so that `import safemaml` stays light."""
    if name in API:
        from safemaml import api

        return getattr(api, name)
    raise AttributeError(f"module 'safemaml' has no attribute {name!r}")


__all__ = ["SafeMamlError", "RunFault", "__version__", *API]
