"""The pieces of a trust-region policy step: conjugate gradient, the step under a KL bound, and the KL of two
diagonal Gaussian policies.

Schulman, Levine, Moritz, Jordan and Abbeel, "Trust Region Policy Optimization", ICML 2015 (arXiv:1502.05477),
Appendix C, as the MAML paper's outer step uses it (Finn et al. 2017, §5.3; rllab's ``ConjugateGradientOptimizer``)::

    maximize  L(θ)   subject to   KL̄(θ_old, θ) ≤ δ
    g = ∇L(θ_old),   F = ∇² KL̄(θ_old, θ)|θ=θ_old,   s ≈ F⁻¹ g  (conjugate gradient on F·v products)
    θ = θ_old + β s,   β = sqrt(2δ / sᵀF s),  shrunk by a backtracking line search until L improves and KL̄ ≤ δ

``F`` is never formed: :func:`conjugate_gradient` only needs ``v ↦ F v`` (a Hessian-vector product by double
backward), damped as ``F v + λ v``. :func:`trust_region_update` is the whole step on a list of parameters: the
line search halves ``β`` at most ``backtracks`` times and keeps the old parameters if no step qualifies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, *, iters: int = 10,
                       residual_tol: float = 1e-10) -> Tensor:
    """An approximate solution of ``A x = b`` for symmetric positive definite ``A`` given as ``matvec``, after at most
    ``iters`` conjugate-gradient iterations from ``x = 0`` (stopping early when ``‖r‖² < residual_tol``)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr < residual_tol:
            break
        ap = matvec(p)
        alpha = rr / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def trust_region_step(direction: Tensor, fisher_direction: Tensor, max_kl: float) -> Tensor:
    """The full step ``β s`` along ``s`` = ``direction`` (``F s`` = ``fisher_direction``) whose quadratic model of
    the KL, ``½ β² sᵀF s``, equals ``max_kl``."""
    curvature = (direction @ fisher_direction).clamp(min=1e-12)
    return direction * torch.sqrt(2 * max_kl / curvature)


def flat_grad(output: Tensor, params: Sequence[Tensor], **kwargs: bool) -> Tensor:
    """``∂ output / ∂ params`` flattened into one vector (zeros for a parameter ``output`` does not reach)."""
    grads = torch.autograd.grad(output, list(params), allow_unused=True, materialize_grads=True, **kwargs)
    return torch.cat([g.reshape(-1) for g in grads])


def trust_region_update(params: Sequence[Tensor], surrogate: Tensor, kl: Tensor,
                        evaluate: Callable[[], tuple[Tensor, Tensor]], max_kl: float, *, cg_iters: int = 10,
                        backtracks: int = 15, damping: float = 1e-5) -> bool:
    """One TRPO step of ``params`` in place: ``surrogate`` (to maximize) and ``kl`` (whose Hessian is ``F``) are
    functions of ``params`` with their graphs; ``evaluate()`` recomputes both at the parameters' current values
    (called without gradient during the line search). Returns whether a step was taken."""
    params = list(params)
    g = flat_grad(surrogate, params, retain_graph=True).detach()
    kl_grad = flat_grad(kl, params, create_graph=True)

    def fisher(v: Tensor) -> Tensor:
        return flat_grad(kl_grad @ v, params, retain_graph=True).detach() + damping * v

    direction = conjugate_gradient(fisher, g, iters=cg_iters)
    step = trust_region_step(direction, fisher(direction), max_kl)
    start = torch.nn.utils.parameters_to_vector(params).detach()
    before = float(surrogate.detach())
    for k in range(backtracks):
        torch.nn.utils.vector_to_parameters(start + 0.5 ** k * step, params)
        with torch.no_grad():
            new_surrogate, new_kl = evaluate()
        if float(new_surrogate) > before and float(new_kl) <= max_kl:
            return True
    torch.nn.utils.vector_to_parameters(start, params)
    return False


def gaussian_kl(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """``KL(N(μ_p, σ_p²) ‖ N(μ_q, σ_q²))`` of diagonal Gaussians, summed over the last (action) dimension."""
    var_p, var_q = torch.exp(2 * log_std_p), torch.exp(2 * log_std_q)
    return (log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2 * var_q) - 0.5).sum(-1)


__all__ = ["conjugate_gradient", "flat_grad", "gaussian_kl", "trust_region_step", "trust_region_update"]
