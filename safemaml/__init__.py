"""safemaml: measure and reduce negative adaptation in MAML for reinforcement learning.

Importing the package registers the Gymnasium ids `safemaml/HalfCheetahVel-v0`,
`safemaml/HalfCheetahDir-v0`, `safemaml/AntVel-v0` and `safemaml/AntDir-v0`.
"""

import os

# Idle OpenMP threads of torch spin and steal the cores MuJoCo steps on; this only takes
# effect when safemaml is imported before torch (sampling also runs torch on one thread).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from safemaml.envs.gym_envs import register_envs
from safemaml.errors import SafeMamlError

__version__ = "0.1.0"

register_envs()

__all__ = ["SafeMamlError", "__version__"]
