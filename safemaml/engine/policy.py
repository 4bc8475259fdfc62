"""Gaussian MLP policy as pure functions of a parameter dict (the torch.func way).

Parameters are a flat dict of tensors (`w0, b0, ..., log_std`). A parameter may carry a
leading task dimension K, in which case observations shaped [K, ..., obs_dim] are pushed
through the K policies at once: this is how post-adaptation sampling runs one batched
forward for all tasks of a meta-batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from safemaml.errors import SafeMamlError

Params = dict[str, Tensor]
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


@dataclass(frozen=True)
class PolicySpec:
    """Shape of the policy: sizes, activation and initial standard deviation."""

    obs_dim: int
    act_dim: int
    hidden: tuple[int, ...] = (100, 100)
    activation: str = "relu"
    init_std: float = 1.0
    min_std: float = 1e-6  # floor on the standard deviation (the paper's code: min_log_std = log(1e-6))
    learn_std: bool = True  # False: the std stays at its initial value (inner and outer steps leave it alone)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise SafeMamlError(f"unknown activation {self.activation!r}; known: {', '.join(ACTIVATIONS)}")
        if self.init_std <= 0 or any(h < 1 for h in self.hidden):
            raise SafeMamlError("init_std must be > 0 and hidden sizes >= 1")
        if not 0 < self.min_std <= self.init_std:
            raise SafeMamlError(f"min_std must be in (0, init_std], got {self.min_std}")

    def log_std(self, params: Params) -> Tensor:
        """The effective log standard deviation: params["log_std"] floored at log(min_std); a constant
        (no gradient, so no step moves it) when the std is not learned."""
        log_std = params["log_std"]
        if not self.learn_std:  # the same value with an exactly zero gradient, still in the graph for autograd
            log_std = log_std * 0.0 + log_std.detach()
        return log_std.clamp_min(math.log(self.min_std))

    @property
    def num_layers(self) -> int:
        return len(self.hidden) + 1

    def init(self, seed: int, device: torch.device | str = "cpu") -> Params:
        """Glorot-uniform weights, zero biases, log_std = log(init_std); deterministic in `seed`."""
        gen = torch.Generator().manual_seed(seed)
        sizes = (self.obs_dim, *self.hidden, self.act_dim)
        params: Params = {}
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            params[f"w{i}"] = (torch.rand(fan_out, fan_in, generator=gen) * 2 - 1) * bound
            params[f"b{i}"] = torch.zeros(fan_out)
        params["log_std"] = torch.full((self.act_dim,), math.log(self.init_std))
        return {k: v.to(device) for k, v in params.items()}


def _linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    if w.dim() == 3:  # one weight matrix per task: x [K, ..., in] -> [K, ..., out]
        shape = x.shape
        y = torch.bmm(x.reshape(shape[0], -1, shape[-1]), w.transpose(1, 2)) + b.unsqueeze(1)
        return y.reshape(*shape[:-1], w.shape[1])
    return torch.nn.functional.linear(x, w, b)


def mean_action(spec: PolicySpec, params: Params, obs: Tensor) -> Tensor:
    """The policy mean for observations [..., obs_dim]."""
    act = ACTIVATIONS[spec.activation]
    h = obs
    for i in range(spec.num_layers):
        h = _linear(h, params[f"w{i}"], params[f"b{i}"])
        if i < spec.num_layers - 1:
            h = act(h)
    return h


def log_std_for(spec: PolicySpec, params: Params, mean: Tensor) -> Tensor:
    """The effective log_std broadcast to the mean's shape ([A] shared, or [K, A] per task)."""
    log_std = spec.log_std(params)
    if log_std.dim() == 2:
        log_std = log_std.reshape(log_std.shape[0], *([1] * (mean.dim() - 2)), log_std.shape[1])
    return log_std.expand_as(mean)


def log_prob(spec: PolicySpec, params: Params, obs: Tensor, actions: Tensor) -> Tensor:
    """log pi(a | s), summed over action dimensions: [..., obs_dim], [..., A] -> [...]."""
    mean = mean_action(spec, params, obs)
    return gaussian_log_prob(mean, log_std_for(spec, params, mean), actions)


def gaussian_log_prob(mean: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
    """log N(a; mean, exp(log_std)^2), summed over the last (action) dimension."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def action_std(params: Params) -> float:
    """The mean standard deviation of the policy's actions (over action dimensions, and tasks if per-task)."""
    return float(torch.exp(params["log_std"]).mean())


def kl_divergence(spec: PolicySpec, old: Params, new: Params, obs: Tensor) -> Tensor:
    """KL(pi_old || pi_new) per observation: [..., obs_dim] -> [...]."""
    mu0, mu1 = mean_action(spec, old, obs), mean_action(spec, new, obs)
    return gaussian_kl(mu0, log_std_for(spec, old, mu0), mu1, log_std_for(spec, new, mu1))


def gaussian_kl(mu0: Tensor, ls0: Tensor, mu1: Tensor, ls1: Tensor) -> Tensor:
    """KL(N(mu0, e^{2 ls0}) || N(mu1, e^{2 ls1})) of diagonal Gaussians, summed over the last dimension."""
    var0, var1 = torch.exp(2 * ls0), torch.exp(2 * ls1)
    return (ls1 - ls0 + (var0 + (mu0 - mu1).pow(2)) / (2 * var1) - 0.5).sum(-1)
