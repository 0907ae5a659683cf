"""Ridge regression without bias, in the form that is cheaper for the shapes: the base learner of MetaOptNet's
ridge head and of R2D2 (Bertinetto, Henriques, Torr and Vedaldi, "Meta-learning with differentiable closed-form
solvers", ICLR 2019)::

    W = argmin_W ‖X W − Y‖² + λ ‖W‖²
      = Xᵀ (X Xᵀ + λ I)⁻¹ Y     when d > n  (dual / Woodbury form: an n × n solve)
      = (Xᵀ X + λ I)⁻¹ Xᵀ Y     otherwise   (primal form: a d × d solve)

Differentiable in ``X`` and ``Y`` through ``torch.linalg.solve``; the choice of form depends on shapes only, so it
is the same under ``vmap``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def ridge_weights(X: Tensor, Y: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """``(W, α)`` of ridge regression without bias: ``W = argmin ‖XW − Y‖² + λ‖W‖² = Xᵀα``.

    The dual (Woodbury) form ``α = (XXᵀ + λI)⁻¹ Y`` when there are more features than examples,
    the primal ``W = (XᵀX + λI)⁻¹ XᵀY`` (then ``α = (Y − XW)/λ``) otherwise. The choice depends on
    shapes only, so it is the same under ``vmap``.
    """
    n, d = X.shape
    if d > n:
        gram = X @ X.T + lam * torch.eye(n, dtype=X.dtype, device=X.device)
        alpha = torch.linalg.solve(gram, Y)
        return X.T @ alpha, alpha
    gram = X.T @ X + lam * torch.eye(d, dtype=X.dtype, device=X.device)
    W = torch.linalg.solve(gram, X.T @ Y)
    return W, (Y - X @ W) / lam


__all__ = ["ridge_weights"]
