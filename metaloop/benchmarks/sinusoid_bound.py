"""How well can one step on the head alone do on the sinusoid? A lower bound for ANIL's one-step error.

ANIL (Raghu et al. 2020) adapts only the last linear layer, ``f(x) = w·φ(x) + b``. One SGD step of size α on
the mean squared error of K support points ``(x_k, y_k)`` gives

    f'(x) = f(x) + Σ_k g(x, x_k) · (y_k − f(x_k)),    g(x, x') = (2α / K) · (φ(x)·φ(x') + 1),

a *linear smoother*: each support point's weight depends on the query and on that point only. When the
features come out of a ReLU (the 1-40-40-1 MLP of Finn et al. 2017), ``φ ≥ 0`` and so ``g ≥ 0``.

On the sinusoid task distribution (``y = A sin(x − p)``, ``A ~ U[0.1, 5]``, ``p ~ U[0, π]``, ``x ~ U[−5, 5]``,
support and query points drawn independently) the expected query MSE of such a smoother is, for each query
point ``x``, a quadratic in the function ``g(x, ·)``:

    risk(x) = C(x, x) + K(K − 1) ⟨g, C g⟩ + K ⟨g², diag C⟩ − 2K ⟨C(x, ·), g⟩,

where ``C`` is the covariance of ``y(x)`` over tasks and ``⟨·,·⟩`` averages over ``x' ~ U[−5, 5]``; the best
starting function ``f`` is the prior mean ``m(x) = E[y(x)]`` (any other adds its own squared distance to
``m``). :func:`one_step_bound` minimizes this over every kernel, or over every nonnegative kernel, on a grid:
no network, learning rate or meta-training can get ANIL's one-step error below it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metaloop.tasks.sinusoid import AMPLITUDE, INPUT, PHASE

#: Grid points of the quadrature (the bound changes by ~1e-5 between 101 and 201 points).
POINTS = 201


def grid(points: int) -> Tensor:
    """Midpoints of ``points`` equal cells of the input range (float64): the quadrature of ``x ~ U[−5, 5]``."""
    low, high = INPUT
    return low + (torch.arange(points, dtype=torch.float64) + 0.5) * (high - low) / points


def moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """The prior mean ``m(x)`` and covariance ``C(x, x')`` of ``y = A sin(x − p)`` over the task distribution.

    Closed forms for ``p ~ U[0, π]``: ``E sin(x − p) = −2 cos(x) / π`` and
    ``E sin(x − p) sin(x' − p) = cos(x − x') / 2``.
    """
    if PHASE != (0.0, math.pi):
        raise ValueError(f"the closed forms assume a phase range of [0, π], got {PHASE}")
    a, b = AMPLITUDE
    mean_a, mean_a2 = (a + b) / 2, (b**3 - a**3) / (3 * (b - a))
    m = -2 * mean_a / math.pi * torch.cos(x)
    second = mean_a2 / 2 * torch.cos(x[:, None] - x[None, :])
    return m, second - m[:, None] * m[None, :]


def _quadratic(shots: int, cov: Tensor) -> tuple[Tensor, Tensor]:
    """``M`` and the rows ``b_x`` of the risk ``C(x, x) + gᵀ M g − 2 b_xᵀ g`` on a uniform grid."""
    w = 1.0 / cov.shape[0]
    M = shots * (shots - 1) * w**2 * cov + shots * w * torch.diag(torch.diagonal(cov))
    return M, shots * w * cov


def smoother_risk(kernel: Tensor, shots: int) -> float:
    """Expected query MSE of ``m(x) + Σ_k g(x, x_k) (y_k − m(x_k))`` with ``K = shots`` support points.

    ``kernel[i, j] = g(x_i, x_j)`` on :func:`grid` points (queries × support points, the same grid).
    """
    cov = moments(grid(kernel.shape[0]))[1]
    M, B = _quadratic(shots, cov)
    kernel = kernel.to(torch.float64)
    per_query = torch.diagonal(cov) + ((kernel @ M) * kernel).sum(1) - 2 * (B * kernel).sum(1)
    return per_query.mean().item()


def best_kernel(shots: int, *, points: int = POINTS, nonnegative: bool = True, tol: float = 1e-10,
                max_iterations: int = 20000) -> Tensor:
    """The kernel of least :func:`smoother_risk`, ``[points, points]``.

    Unconstrained, each row solves ``M g = b_x``. Constrained to ``g ≥ 0``, each row is a nonnegative least
    squares problem, solved here by accelerated projected gradient (FISTA) on all rows at once until the
    KKT conditions hold to ``tol`` (relative); ``M`` is well conditioned, so this takes a few hundred steps.
    """
    if shots < 1:
        raise ValueError(f"shots must be positive, got {shots}")
    M, B = _quadratic(shots, moments(grid(points))[1])
    if not nonnegative:
        return torch.linalg.solve(M, B.T).T
    step = 1.0 / torch.linalg.eigvalsh(M)[-1]
    g = y = torch.zeros_like(B)
    t = 1.0
    for _ in range(max_iterations):
        g_next = (y - step * (y @ M - B)).clamp_min(0)
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = g_next + (t - 1) / t_next * (g_next - g)
        g, t = g_next, t_next
        grad = g @ M - B  # KKT: grad ≥ 0 everywhere, and grad = 0 where g > 0
        violation = torch.where(g > 0, grad.abs(), (-grad).clamp_min(0)).max()
        if violation <= tol * B.abs().max():
            return g
    raise RuntimeError(f"best_kernel: projected gradient did not converge in {max_iterations} iterations")


def head_step_kernel(features: Tensor, lr: float, shots: int) -> Tensor:
    """``g(x, x') = 2α/K · (φ(x)·φ(x') + 1)``: one SGD step of size ``lr`` on a linear head (weights and bias)
    over ``features`` (one row per :func:`grid` point), with the mean squared error of ``shots`` points."""
    features = features.to(torch.float64)
    return 2 * lr / shots * (features @ features.T + 1)


def one_step_bound(shots: int, *, points: int = POINTS, nonnegative: bool = True) -> float:
    """The least expected query MSE of any one-step linear smoother (nonnegative kernel: ANIL on ReLU features)."""
    return smoother_risk(best_kernel(shots, points=points, nonnegative=nonnegative), shots)
