"""Meta-optimisers: TRPO through the inner step (the paper's), and Adam.

Both see the meta-loss as a function `evaluate(theta) -> (loss, kl)` that re-adapts from
the fixed pre-update data, so a TRPO line-search candidate is judged with its own adapted
policies. `kl` is the mean KL from the adapted policies that sampled the post-update data.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from safemaml.config import MetaOptConfig
from safemaml.engine.policy import Params
from safemaml.errors import SafeMamlError

Evaluate = Callable[[Params], tuple[Tensor, Tensor]]


def _flat(tensors) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflat(vector: Tensor, like: Params) -> Params:
    out, start = {}, 0
    for name, p in like.items():
        out[name] = vector[start:start + p.numel()].view_as(p)
        start += p.numel()
    return out


def _to_host(*scalars: Tensor) -> list[float]:
    """The values of 0-dim tensors as floats, in one copy to the host: on CUDA one synchronisation
    instead of one per `.item()`; the same floats (float32 widens to float64 exactly)."""
    return torch.stack([s.detach() for s in scalars]).tolist()


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int,
                       tol: float = 1e-10) -> Tensor:
    """Solve A x = b for symmetric positive-definite A given only x -> A x."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        Ap = matvec(p)
        alpha = rr / (p @ Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = r @ r
        if rr_new < tol:  # on CUDA a host synchronisation per iteration: it decides whether to spend a product
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def preconditioned_cg(matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int,
                      precondition: Callable[[Tensor], Tensor] | None = None, rtol: float = 0.0,
                      flexible: bool = False, tol: float = 1e-10) -> tuple[Tensor, Tensor]:
    """Solve A x = b by preconditioned conjugate gradient; returns x and its residual b - A x.

    `precondition(r)` applies M^-1 for an SPD M that resembles A: CG then runs on M^-1/2 A M^-1/2, whose
    eigenvalues cluster when M captures A's scales, so fewer products of A reach the same accuracy
    (Saad, Iterative Methods for Sparse Linear Systems, 2nd ed., Alg. 9.1). With no preconditioner the
    iterates are those of `conjugate_gradient`, bit for bit. `flexible` takes beta = z'.(r' - r) / z.r,
    which keeps each direction A-conjugate to the one before when M^-1 is itself an inexact solve that
    varies between iterations (flexible CG: Notay, SIAM J. Sci. Comput. 22(4), 2000). It stops once
    |r|^2 < tol (as `conjugate_gradient`) or |r| <= rtol |b|.

    The residual is CG's recursive one, equal to b - A x up to rounding, so x.(b - r) gives x^T A x
    without another product (TRPO's step length).
    """
    x = torch.zeros_like(b)
    r = b.clone()
    z = r if precondition is None else precondition(r)
    p, rz = z.clone(), r @ z
    limit = rtol * rtol * (b @ b)
    for _ in range(iters):
        Ap = matvec(p)
        alpha = rz / (p @ Ap)
        x = x + alpha * p
        r_old, r = r, r - alpha * Ap
        rr = r @ r
        if rr < tol or rr <= limit:  # on CUDA a host synchronisation per iteration, as conjugate_gradient's
            break
        z = r if precondition is None else precondition(r)
        rz_new = r @ z
        beta = (rz_new - z @ r_old) / rz if flexible else rz_new / rz
        p = z + beta * p
        rz = rz_new
    return x, r


def jacobi(diagonal: Tensor) -> Callable[[Tensor], Tensor]:
    """r -> r / diagonal, the preconditioner M = diag(diagonal); entries <= 0 are left unscaled."""
    scale = torch.where(diagonal > 0, diagonal, torch.ones_like(diagonal))
    return lambda r: r / scale


PRECONDITIONER_FLOOR = 0.1  # TRPO's Jacobi: M = diag(F_a) + (0.1 mean diag(F_a) + c) I


def fisher_preconditioner(diagonal: Tensor, damping: float,
                          floor: float = PRECONDITIONER_FLOOR) -> Callable[[Tensor], Tensor]:
    """Jacobi with a floor: M = diag(d) + (floor * mean(d) + damping) I for the diagonal d of a curvature.

    The floor keeps CG from dividing by near-zero diagonal entries (parameters the adapted policies barely
    use, such as units inactive on the post-update data): there the curvature's quadratic model of the KL
    fails a little away from theta (units switch on), so long steps in them cost TRPO's line search
    backtracks. benchmarks/cg_direction.py measures both (floor 0 and 0.1).
    """
    return jacobi(diagonal + (floor * diagonal.mean() + damping))


def autograd_fvp(theta: Params, kl: Tensor) -> Callable[[Tensor], Tensor]:
    """Hessian-vector products of `kl` in theta by double backward (the general reference)."""
    kl_grad = _flat(torch.autograd.grad(kl, list(theta.values()), create_graph=True))

    def fvp(v: Tensor) -> Tensor:
        return _flat(torch.autograd.grad(kl_grad @ v, list(theta.values()), retain_graph=True))

    return fvp


def trpo_step(params: Params, evaluate: Evaluate, cfg: MetaOptConfig,
              make_fvp: Callable[[Params], Callable[[Tensor], Tensor]] | None = None,
              make_preconditioner: Callable[[Params], Callable[[Tensor], Tensor]] | None = None
              ) -> tuple[Params, dict[str, float]]:
    """One TRPO step: natural gradient by CG on Fisher-vector products (Hessian of the KL
    through the adaptation), scaled to max_kl, then a backtracking line search that accepts
    the first candidate whose loss improves with KL <= max_kl (else keeps theta).

    `make_fvp(theta)` may supply a faster exact product (safemaml.engine.fisher); by default the KL
    returned by `evaluate` is differentiated twice. With cfg.cg_precondition other than "none",
    `make_preconditioner(theta)` supplies M^-1 for a curvature M like the product's (the adapted policies'
    Fisher: safemaml.engine.curvature.preconditioner) and CG is preconditioned by it, with the flexible beta
    for "adapted-fisher", whose M^-1 is an inner solve. With cfg.cg_step_length = "residual" the step length
    takes d'(F + cI)d from CG's residual instead of one more product. Either changes only the direction and
    its length: the line search still judges the exact loss and KL.
    """
    theta = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    loss, kl = evaluate(theta)
    grads = torch.autograd.grad(loss, list(theta.values()), retain_graph=make_fvp is None)
    hessian_product = make_fvp(theta) if make_fvp is not None else autograd_fvp(theta, kl)

    def fvp(v: Tensor) -> Tensor:
        return hessian_product(v) + cfg.cg_damping * v

    g = _flat(grads).detach()
    precondition = None
    if cfg.cg_precondition != "none":
        if make_preconditioner is None:
            raise SafeMamlError(f"meta.cg_precondition = {cfg.cg_precondition!r} needs a preconditioner")
        precondition = make_preconditioner(theta)
    direction, residual = preconditioned_cg(fvp, g, cfg.cg_iters, precondition,  # plain CG without one
                                            flexible=cfg.cg_precondition == "adapted-fisher")
    if cfg.cg_step_length == "residual":
        curvature = direction @ (g - residual)  # d'(F + cI)d, as residual = g - (F + cI)d
    else:
        curvature = direction @ fvp(direction)
    dfd, old_loss, grad_norm = _to_host(curvature, loss, g.norm())
    shs = 0.5 * dfd
    step = direction * math.sqrt(cfg.max_kl / max(shs, 1e-12))
    new_params, searched = line_search(theta, evaluate, step, old_loss, cfg)
    return new_params, {"loss_before": old_loss, "grad_norm": grad_norm, **searched}


def line_search(theta: Params, evaluate: Evaluate, step: Tensor, old_loss: float,
                cfg: MetaOptConfig) -> tuple[Params, dict[str, float]]:
    """TRPO's backtracking line search: the first theta - ratio^i step (i = 0, 1, ...) whose loss is below
    old_loss with KL <= max_kl, or theta itself when none is; with what it found (ls_steps, accepted, kl,
    loss_after)."""
    base = _flat(theta.values()).detach()
    info = {"ls_steps": float(cfg.ls_max_steps), "accepted": 0.0, "kl": 0.0, "loss_after": old_loss}
    for i in range(cfg.ls_max_steps):
        candidate = _unflat(base - cfg.ls_backtrack_ratio ** i * step, theta)
        with torch.no_grad():
            candidate_loss, candidate_kl = evaluate(candidate)
        new_loss, new_kl = _to_host(candidate_loss, candidate_kl)  # the verdict needs both on the host
        if math.isfinite(new_loss) and new_loss < old_loss and new_kl <= cfg.max_kl:
            info.update(ls_steps=float(i + 1), accepted=1.0, kl=new_kl, loss_after=new_loss)
            return {k: v.detach().clone() for k, v in candidate.items()}, info
    return {k: v.detach() for k, v in theta.items()}, info


class MetaOptimizer:
    """State of the outer optimiser (Adam moments; TRPO keeps none), checkpointable."""

    def __init__(self, cfg: MetaOptConfig):
        self.cfg = cfg
        self.adam_state: dict[str, Tensor] = {}
        self.steps = 0

    def step(self, params: Params, evaluate: Evaluate,
             make_fvp: Callable[[Params], Callable[[Tensor], Tensor]] | None = None,
             make_preconditioner: Callable[[Params], Callable[[Tensor], Tensor]] | None = None
             ) -> tuple[Params, dict[str, float]]:
        self.steps += 1
        if self.cfg.name == "trpo":
            return trpo_step(params, evaluate, self.cfg, make_fvp, make_preconditioner)
        return self._adam(params, evaluate)

    def _adam(self, params: Params, evaluate: Evaluate, b1: float = 0.9, b2: float = 0.999,
              eps: float = 1e-8) -> tuple[Params, dict[str, float]]:
        theta = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        loss, kl = evaluate(theta)
        grads = dict(zip(theta, torch.autograd.grad(loss, list(theta.values()))))
        new = {}
        for k, g in grads.items():
            m = b1 * self.adam_state.get(f"m.{k}", torch.zeros_like(g)).to(g) + (1 - b1) * g
            v = b2 * self.adam_state.get(f"v.{k}", torch.zeros_like(g)).to(g) + (1 - b2) * g * g
            self.adam_state[f"m.{k}"], self.adam_state[f"v.{k}"] = m, v
            m_hat, v_hat = m / (1 - b1 ** self.steps), v / (1 - b2 ** self.steps)
            new[k] = (theta[k] - self.cfg.lr * m_hat / (v_hat.sqrt() + eps)).detach()
        loss_before, grad_norm = _to_host(loss, _flat(grads.values()).norm())
        info = {"loss_before": loss_before, "grad_norm": grad_norm,
                "ls_steps": 0.0, "accepted": 1.0, "kl": float("nan"), "loss_after": float("nan")}
        return new, info

    def state_dict(self) -> dict:
        return {"steps": self.steps, "adam_state": dict(self.adam_state)}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.adam_state = dict(state["adam_state"])
