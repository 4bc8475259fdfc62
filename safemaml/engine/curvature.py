"""Cheaper curvature for TRPO through one inner step, chosen by `meta.curvature`.

TRPO's curvature is the Hessian of the mean KL in theta, at theta_0, through the adaptation:
(1/K) sum_T J_T F_T J_T (safemaml/fisher.py: J_T = I - alpha H_T, F_T the Hessian of KL_T in theta'_T).
This module computes F_T in its Gauss-Newton form: for the Gaussian policy the KL's Hessian at
theta' = theta'_0 is exactly

    F_T = J_mu^T diag(w / sigma^2) J_mu + J_s^T diag(2 sum w) J_s

(J_mu the Jacobian of the policy means over the post-update observations, w the per-step weights
mask / steps, J_s the Jacobian of the effective log std; the mean/log-std cross terms and the
second-derivative terms vanish because mu_new = mu_old there). So F_T u costs one jvp and one vjp
of the policy's forward pass instead of a double backward, and the forward pass is done once.

Settings of `meta.curvature`:
- "analytic" (default): safemaml/mlp_curvature.py, the exact product with the policy's derivatives
  written out and its forward pass kept for every product; the same numbers as "exact", faster.
- "exact": safemaml.engine.fisher.maml_fvp (KL Hessian by double backward), the reference.
- "gauss-newton": J_T F_T J_T with F_T in Gauss-Newton form: the same product, exact, cheaper.
- "adapted-fisher": F_T only, J_T taken as I (the Fisher at theta'_T, no inner Hessian): an
  approximation of the curvature. Only the search direction changes; TRPO's line search still
  enforces the exact KL bound and the exact loss.
`meta.fvp_subsample` < 1 takes every product from that fraction of each task's trajectories.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from safemaml.config import AdaptConfig
from safemaml.engine.adapt import inner_loss
from safemaml.engine.fisher import _block_hvp, _per_task_copy, curvature_data, jfj_product, maml_fvp
from safemaml.engine.metaopt import fisher_preconditioner, preconditioned_cg
from safemaml.engine.mlp_curvature import adapted_fisher_fvp, analytic_fvp, fisher_diagonal, record
from safemaml.engine.policy import Params, PolicySpec, mean_action

FVP = Callable[[Tensor], Tensor]


def gaussian_kl_fisher(spec: PolicySpec, old: Params, obs: Tensor, mask: Tensor) -> Callable[[Params], Params]:
    """u -> F u for the per-task Hessians of KL_T(pi_old || pi_new)/K in new, at new = old.

    `old` carries a leading task dimension K; obs is [K, N, obs_dim], mask [K, N] (the KL of task T
    is the mask-weighted mean over its N steps, as in metastep.meta_loss); u and F u are per task.
    """
    K = obs.shape[0]
    steps = mask.sum(1, keepdim=True).clamp_min(1.0)
    weight = mask / steps / K  # [K, N]; the 1/K of the mean over tasks
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in old.items()}
    mean, log_std = mean_action(spec, leaves, obs), spec.log_std(leaves)  # [K, N, A], [K, A]
    inv_var = torch.exp(-2 * log_std.detach())
    mean_metric = weight.unsqueeze(-1) * inv_var.unsqueeze(1)  # [K, N, A]
    std_metric = 2 * weight.sum(1, keepdim=True)  # [K, 1]

    def outputs(p: Params) -> tuple[Tensor, Tensor]:
        return mean_action(spec, p, obs), spec.log_std(p)

    frozen = {k: v.detach() for k, v in old.items()}

    def product(u: Params) -> Params:
        d_mean, d_log_std = torch.func.jvp(outputs, (frozen,), ({k: u[k] for k in frozen},))[1]
        grads = torch.autograd.grad((mean, log_std), list(leaves.values()),
                                    (mean_metric * d_mean, std_metric * d_log_std), retain_graph=True)
        return dict(zip(leaves, grads))

    return product


def inner_hessian(spec: PolicySpec, theta0: Params, pre, pre_adv: Tensor) -> Callable[[Params], Params]:
    """u -> H_T u per task: the Hessians of the inner losses at theta0 (block diagonal, by double backward)."""
    leaves = _per_task_copy(theta0, pre.rewards.shape[0])
    return _block_hvp(inner_loss(spec, leaves, pre.obs, pre.actions, pre_adv, pre.mask).sum(), leaves)


def gauss_newton_fvp(spec: PolicySpec, cfg: AdaptConfig, theta0: Params, data, subsample: float = 1.0,
                     adaptation_jacobian: bool = True) -> FVP:
    """TRPO's Fisher-vector product with F_T in Gauss-Newton form (flat vectors).

    With `adaptation_jacobian` the product is exact (equal to fisher.maml_fvp); without it
    J_T = I (the Fisher of the adapted policies only).
    """
    pre, pre_adv, post = curvature_data(data, subsample)
    K, m, H = post.rewards.shape
    fisher = gaussian_kl_fisher(spec, data.sampling_params, post.obs.view(K, m * H, -1), post.mask.view(K, m * H))
    hessian = None
    if adaptation_jacobian and not cfg.first_order:
        hessian = inner_hessian(spec, theta0, pre, pre_adv)

    return jfj_product(theta0, K, cfg.fast_lr, hessian, fisher)

def make_fvp(curvature: str, spec: PolicySpec, cfg: AdaptConfig, theta0: Params, data,
             subsample: float = 1.0) -> FVP:
    """The Fisher-vector product that `meta.curvature` names, at theta0."""
    if curvature == "exact":
        return maml_fvp(spec, cfg, theta0, data, subsample)
    if curvature == "analytic":
        return analytic_fvp(spec, cfg, theta0, data, subsample)
    return gauss_newton_fvp(spec, cfg, theta0, data, subsample, adaptation_jacobian=curvature == "gauss-newton")


# TRPO's preconditioners take the adapted policies' Fisher from this fraction of the curvature's trajectories:
# on the recorded batches of benchmarks/cg_direction.py the preconditioned direction's gain is within 2% of the
# one from all of them, and the diagonal costs a quarter as much.
DIAGONAL_SUBSAMPLE = 0.25
INNER_ITERS = 5  # meta.cg_precondition = "adapted-fisher": inner CG iterations per application of M^-1


def adapted_fisher_diagonal(spec: PolicySpec, theta0: Params, data, subsample: float = 1.0) -> Tensor:
    """The diagonal of the `adapted-fisher` curvature (sum_T F_T, J_T = I), flat in theta0's layout.

    One forward pass of the adapted policies over the post-update data and a backward pass per action
    dimension (safemaml.engine.mlp_curvature.fisher_diagonal): on all the trajectories about as much as one
    exact product, hence DIAGONAL_SUBSAMPLE.
    """
    _, _, post = curvature_data(data, subsample)
    diagonal = fisher_diagonal(record(spec, data.sampling_params, post.obs.flatten(1, 2)), post.mask.flatten(1, 2))
    return torch.cat([diagonal[k].reshape(-1).to(theta0[k].dtype) for k in theta0])


def preconditioner(name: str, spec: PolicySpec, theta0: Params, data, subsample: float,
                   damping: float) -> Callable[[Tensor], Tensor]:
    """M^-1 for TRPO's CG as meta.cg_precondition `name` says, at theta0, from the adapted policies' Fisher
    F_a on DIAGONAL_SUBSAMPLE of the `subsample` fraction of trajectories the curvature uses:

    - "fisher-diagonal": Jacobi, M = diag(F_a) floored (safemaml.engine.metaopt.fisher_preconditioner);
    - "adapted-fisher": M = F_a + cI, applied approximately by INNER_ITERS iterations of CG on it that the
      Jacobi above preconditions; a map that changes with r, so TRPO's CG takes the flexible beta.
    Either shapes only TRPO's direction; the exact product still defines the system and the line search.
    """
    fraction = subsample * DIAGONAL_SUBSAMPLE
    jacobi = fisher_preconditioner(adapted_fisher_diagonal(spec, theta0, data, fraction), damping)
    if name == "fisher-diagonal":
        return jacobi
    product = adapted_fisher_fvp(spec, theta0, data, fraction)
    return lambda r: preconditioned_cg(lambda v: product(v) + damping * v, r, INNER_ITERS, jacobi)[0]
