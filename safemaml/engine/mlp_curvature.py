"""TRPO's exact curvature products for the Gaussian MLP policy, written out by hand (R-operator).

The exact product (safemaml/fisher.py) is (1/K) sum_T J_T F_T J_T v with J_T = I - alpha H_T. By
autograd each product back-propagates through the graph of a gradient (twice over the pre-update
data, once over the post-update data): a double backward pass that differentiates the whole
backward pass generically. Here the forward activations and the inner loss's backward pass are
kept once per TRPO step (a `Tape`), and each product pushes only the direction through:

- H_T u, the Hessian of the inner REINFORCE loss, by Pearlmutter's R-operator: a tangent pass
  (R{z_i}, R{h_i}) and the tangent of the backward pass, including the activation's curvature;
- F_T u, the KL's Hessian at theta'_T, in its Gauss-Newton form J_mu^T diag(w/sigma^2) J_mu +
  J_s^T diag(2 sum w) J_s (exact there, see safemaml/curvature.py): one tangent pass, one backward.

Same numbers as the autograd products (tested to float64 round-off), so it needs no learning
parity; `meta.curvature = "analytic"`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from safemaml.config import AdaptConfig
from safemaml.engine.fisher import FVP, curvature_data, jfj_product
from safemaml.engine.policy import Params, PolicySpec
from safemaml.errors import SafeMamlError


def _matmul(x: Tensor, w: Tensor) -> Tensor:
    """x [K, N, in] times w^T for w [out, in] (shared) or [K, out, in] (per task) -> [K, N, out]."""
    return x @ w.transpose(-1, -2)


def _back(d: Tensor, w: Tensor) -> Tensor:
    """d [K, N, out] times w for w [out, in] or [K, out, in] -> [K, N, in]."""
    return d @ w


def _weight_grad(d: Tensor, h: Tensor) -> Tensor:
    """Per-task sum over steps of d^T h: [K, N, out], [K, N, in] -> [K, out, in]."""
    return d.transpose(1, 2) @ h


def _relu_derivatives(z: Tensor) -> tuple[Tensor, Tensor, None]:
    return torch.relu(z), (z > 0).to(z.dtype), None  # value, slope, no bend


def _tanh_derivatives(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    h = torch.tanh(z)
    slope = 1 - h * h
    return h, slope, -2 * h * slope


# value, first and second derivative of each activation of safemaml.engine.policy.ACTIVATIONS
DERIVATIVES = {"relu": _relu_derivatives, "tanh": _tanh_derivatives}


def _std_jacobian(spec: PolicySpec, log_std: Tensor) -> Tensor:
    """The diagonal of d(effective log std)/d(log_std): 0 where the floor binds or the std is fixed."""
    leaf = log_std.detach().requires_grad_(True)
    with torch.enable_grad():
        (d,) = torch.autograd.grad(spec.log_std({"log_std": leaf}).sum(), leaf)
    return d


@dataclass
class Tape:
    """The forward pass of the policy at fixed parameters over [K, N] observations, kept for products.

    `inputs[i]` is layer i's input h_i (h_0 the observations), `slopes[i]` the activation's
    derivative at hidden layer i's pre-activation, `bends[i]` its second derivative (None for relu).
    """

    spec: PolicySpec
    params: Params
    inputs: list[Tensor]
    slopes: list[Tensor]
    bends: list[Tensor | None]
    mean: Tensor  # [K, N, A]
    log_std: Tensor  # [A] or [K, A], effective
    std_jac: Tensor  # like log_std: d(effective log std)/d(log_std)


def record(spec: PolicySpec, params: Params, obs: Tensor) -> Tape:
    """Run the policy once on obs [K, N, obs_dim] (params shared or with a leading K) and keep the pieces."""
    if spec.activation not in DERIVATIVES:
        raise SafeMamlError(f"meta.curvature = 'analytic' has no derivatives for activation {spec.activation!r}; "
                            "use meta.curvature = 'exact'")
    params = {k: v.detach() for k, v in params.items()}
    h, inputs, slopes, bends = obs, [], [], []
    for i in range(spec.num_layers):
        inputs.append(h)
        z = _matmul(h, params[f"w{i}"]) + params[f"b{i}"].unsqueeze(-2)
        if i == spec.num_layers - 1:
            h = z
        else:
            h, slope, bend = DERIVATIVES[spec.activation](z)
            slopes.append(slope)
            bends.append(bend)
    log_std = spec.log_std(params).detach()
    return Tape(spec, params, inputs, slopes, bends, h, log_std, _std_jacobian(spec, params["log_std"]))


def tangent(tape: Tape, u: Params) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The jvp of the forward pass for the parameter direction u: R{mean}, and R{z_i} and R{h_i}
    (pre-activation and activation) of every hidden layer."""
    r_h: Tensor | None = None
    r_z: list[Tensor] = []
    r_hs: list[Tensor] = []
    for i in range(tape.spec.num_layers):
        r = _matmul(tape.inputs[i], u[f"w{i}"]) + u[f"b{i}"].unsqueeze(-2)
        if r_h is not None:
            r = r + _matmul(r_h, tape.params[f"w{i}"])
        if i == tape.spec.num_layers - 1:
            return r, r_z, r_hs
        r_h = tape.slopes[i] * r
        r_z.append(r)
        r_hs.append(r_h)
    raise AssertionError("unreachable: the loop returns at the output layer")


def backward(tape: Tape, cotangent: Tensor) -> Params:
    """Per-task gradients of sum(cotangent * mean) in the weights and biases (the vjp of the forward)."""
    grads, d = {}, cotangent
    for i in reversed(range(tape.spec.num_layers)):
        grads[f"w{i}"], grads[f"b{i}"] = _weight_grad(d, tape.inputs[i]), d.sum(1)
        if i > 0:
            d = _back(d, tape.params[f"w{i}"]) * tape.slopes[i - 1]
    return grads


def kl_fisher(tape: Tape, mask: Tensor) -> Callable[[Params], Params]:
    """u -> F_T u per task: the Hessian of KL_T/K at theta'_T (the tape's parameters), mask [K, N]."""
    K = mask.shape[0]
    weight = mask / mask.sum(1, keepdim=True).clamp_min(1.0) / K
    mean_metric = weight.unsqueeze(-1) * torch.exp(-2 * tape.log_std).unsqueeze(-2)
    std_metric = 2 * weight.sum(1, keepdim=True) * tape.std_jac * tape.std_jac

    def product(u: Params) -> Params:
        r_mean, _, _ = tangent(tape, u)
        out = backward(tape, mean_metric * r_mean)
        out["log_std"] = std_metric * u["log_std"]
        return out

    return product


def fisher_diagonal(tape: Tape, mask: Tensor) -> Params:
    """The diagonal of sum_T F_T, the adapted policies' Fisher (kl_fisher's products summed over tasks).

    In its Gauss-Newton form F_T = sum_n J_n^T diag(w_n / sigma^2) J_n + the log std's block, so the
    diagonal entry of a weight W_l[o, i] is sum_n sum_a (w_n / sigma_a^2) (d mean_a / d z_l,o)^2 h_l,i^2:
    the squared per-step sensitivities of each action mean to layer l's pre-activations, weighted and
    contracted with the squared layer inputs. The last layer's sensitivity is e_a, the layer below's is
    slope * W[a] (both for all a at once); deeper layers take one backward pass per action dimension.
    It is TRPO's preconditioner for meta.cg_precondition = "fisher-diagonal" (safemaml.engine.metaopt).
    """
    K, last = mask.shape[0], tape.spec.num_layers - 1
    weight = mask / mask.sum(1, keepdim=True).clamp_min(1.0) / K
    metric = weight.unsqueeze(-1) * torch.exp(-2 * tape.log_std).unsqueeze(-2)  # [K, N, A], as kl_fisher's
    squares: list[Tensor] = [metric] * (last + 1)  # sum_a metric_a (d mean_a / d z_l)^2, per layer l
    if last >= 1:
        w = tape.params[f"w{last}"]  # [A, H] or [K, A, H]
        squares[last - 1] = (metric @ (w * w)) * tape.slopes[last - 1] ** 2
        deeper = [torch.zeros_like(tape.slopes[i]) for i in range(last - 1)]
        for a in range(metric.shape[-1]):
            d = tape.slopes[last - 1] * w[..., a, :].unsqueeze(-2)  # d mean_a / d z_{last-1}
            for i in reversed(range(last - 1)):
                d = _back(d, tape.params[f"w{i + 1}"]) * tape.slopes[i]
                deeper[i] += metric[..., a:a + 1] * d * d
        squares[:last - 1] = deeper
    out = {}
    for i, sq in enumerate(squares):
        out[f"w{i}"] = _weight_grad(sq, tape.inputs[i] * tape.inputs[i]).sum(0)
        out[f"b{i}"] = sq.sum((0, 1))
    out["log_std"] = (2 * weight.sum(1, keepdim=True) * tape.std_jac * tape.std_jac).sum(0)
    return out


def inner_hessian(tape: Tape, actions: Tensor, adv: Tensor, mask: Tensor) -> Callable[[Params], Params]:
    """u -> H_T u per task: the Hessians of the inner losses -mean_t[log pi(a_t|s_t) A_t] at the tape's
    (shared) parameters, over actions [K, N, A], advantages and mask [K, N]."""
    coef = -(adv * mask) / mask.sum(1, keepdim=True).clamp_min(1.0)  # dL/dlog pi per step
    inv_var = torch.exp(-2 * tape.log_std)
    err = actions - tape.mean
    coef_var = coef.unsqueeze(-1) * inv_var  # c / sigma^2, [K, N, A]
    coef_err = coef_var * err  # dL/dmean = c (a - mu) / sigma^2
    coef_err_sq = (coef_err * err).sum(1)  # sum_t c (a - mu)^2 / sigma^2, [K, A]
    deltas: list[Tensor] = []
    d = coef_err  # the backward pass of the loss, kept for every product
    for i in reversed(range(tape.spec.num_layers)):
        deltas.insert(0, d)
        if i > 0:
            d = _back(d, tape.params[f"w{i}"]) * tape.slopes[i - 1]
    curls = [None if b is None else _back(deltas[i + 1], tape.params[f"w{i + 1}"]) * b
             for i, b in enumerate(tape.bends)]

    def product(u: Params) -> Params:
        r_mean, r_z, r_h = tangent(tape, u)
        r_s = tape.std_jac * u["log_std"]  # R{effective log std}
        r_d = -(coef_var * r_mean + 2 * coef_err * r_s.unsqueeze(-2))
        out = {"log_std": -2 * tape.std_jac * ((coef_err * r_mean).sum(1) + r_s * coef_err_sq)}
        for i in reversed(range(tape.spec.num_layers)):
            out[f"w{i}"], out[f"b{i}"] = _weight_grad(r_d, tape.inputs[i]), r_d.sum(1)
            if i > 0:
                out[f"w{i}"] = out[f"w{i}"] + _weight_grad(deltas[i], r_h[i - 1])
                r_d = (_back(r_d, tape.params[f"w{i}"]) + _back(deltas[i], u[f"w{i}"])) * tape.slopes[i - 1]
                curl = curls[i - 1]
                if curl is not None:
                    r_d = r_d + curl * r_z[i - 1]
        return out

    return product


def analytic_fvp(spec: PolicySpec, cfg: AdaptConfig, theta0: Params, data, subsample: float = 1.0) -> FVP:
    """TRPO's exact Fisher-vector product through one inner step, by the hand-written products (flat)."""
    pre, pre_adv, post = curvature_data(data, subsample)
    K = post.rewards.shape[0]
    fisher = kl_fisher(record(spec, data.sampling_params, post.obs.flatten(1, 2)), post.mask.flatten(1, 2))
    hessian = None
    if not cfg.first_order:
        tape = record(spec, theta0, pre.obs.flatten(1, 2))
        hessian = inner_hessian(tape, pre.actions.flatten(1, 2), pre_adv.flatten(1, 2),
                                pre.mask.flatten(1, 2))
    return jfj_product(theta0, K, cfg.fast_lr, hessian, fisher)


def adapted_fisher_fvp(spec: PolicySpec, theta0: Params, data, subsample: float = 1.0) -> FVP:
    """The `adapted-fisher` curvature's product sum_T F_T v (J_T = I) by the hand-written Fisher product: the
    numbers of curvature.make_fvp("adapted-fisher") without torch.func's tangent pass (TRPO's inner solve for
    meta.cg_precondition = "adapted-fisher", safemaml.engine.curvature.preconditioner)."""
    _, _, post = curvature_data(data, subsample)
    fisher = kl_fisher(record(spec, data.sampling_params, post.obs.flatten(1, 2)), post.mask.flatten(1, 2))
    return jfj_product(theta0, post.rewards.shape[0], 0.0, None, fisher)
