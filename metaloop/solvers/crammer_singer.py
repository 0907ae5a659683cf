"""The Crammer–Singer multi-class SVM dual, solved to a tolerance, differentiable in the Gram matrix.

Crammer and Singer, "On the Algorithmic Implementation of Multiclass Kernel-based Vector Machines",
JMLR 2001; in the form of MetaOptNet (Lee et al. 2019, eq. 6; ``MetaOptNetHead_SVM_CS`` in their
code), which borrows liblinear's notation. For support embeddings ``X`` (``n × d``), the Gram matrix
``K = X Xᵀ``, one-hot labels ``Y`` (``n × M``) and the cost ``C``::

    min_α  ½ Σ_m α_mᵀ K α_m − Σ_{i,m} Y_im α_im          (α is n × M, α_m its column m)
    s.t.   α_im ≤ C·Y_im   for all i, m,     Σ_m α_im = 0   for all i

with primal weights ``w_m = Σ_i α_im x_i`` (``W = Xᵀ α``) and logits ``w_m · q``. This is exactly the
dual that liblinear (and so scikit-learn's ``LinearSVC(multi_class="crammer_singer",
fit_intercept=False, C=C)``) solves: liblinear's linear term ``Σ (1 − δ_{y_i m}) α_im`` equals
``−Σ_i α_{i y_i}`` on the feasible set because ``Σ_m α_im = 0``. Its primal is
``min ½ Σ_m ‖w_m‖² + C Σ_i ξ_i  s.t.  w_{y_i}·x_i − w_m·x_i ≥ 1 − δ_{y_i m} − ξ_i``, so ``C`` is the
same number in MetaOptNet, liblinear and scikit-learn.

**Solver.** A primal-dual interior-point method with Mehrotra's predictor-corrector, in float64,
from an infeasible start (``α = 0``, slacks ``s = 1``, multipliers ``μ = 1``, ``ν = 0``). Each Newton
system is solved by its structure: the Hessian is ``blockdiag_m(K + D_m)`` (``D_m = diag(μ_m / s_m)``,
the barrier's diagonal), so one step costs ``M`` Cholesky factorizations of ``n × n`` and one ``n × n``
Schur complement for the ``n`` equality constraints, not a dense solve in ``n·M`` unknowns. It stops
when the scaled KKT residual is at most ``tol``::

    max( ‖Kα − Y + μ + ν1ᵀ‖∞ / s_d,  ‖α + s − CY‖∞ / s_p,  ‖α1‖∞ / s_p,  max(s ⊙ μ) / (s_d s_p) )
    with s_d = 1 + C·max|K_ij|  (the units of the gradient)  and  s_p = 1 + C  (the units of α)

and warns (``RuntimeWarning``) if it does not get there. Near the rounding limit (a singular ``K``) the
Newton systems are nearly singular and the iterates can drift away from the optimum, so the method keeps
its best iterate (least residual) and stops there after ``_STALL`` iterations without a new best, after
``max_iter`` iterations, or when no Newton step can be factorized. Then the solution is
*polished*: the active set (``α_im = C·Y_im``, read off the final iterate as ``μ_im > s_im``) is
fixed, the equality-constrained QP that remains is solved exactly, and coordinates that violate
``α ≤ CY`` or get a negative multiplier switch sides (a primal-dual active-set correction, rarely
more than one round). The polished point is kept if its KKT residual is below both ``tol`` and the
interior-point residual, which makes ``α`` exact to rounding (residual ~1e-16) whenever ``K`` is
non-singular; otherwise the interior-point iterate is kept (see the last paragraph).
:class:`CrammerSingerDual` polishes only when a gradient is needed (meta-training); in evaluation the
iterate at ``tol`` is used: weights accurate to about ``√tol``, at a fraction of the cost.

**Cost.** Each iteration factorizes and inverts ``M`` matrices of ``n × n``: ``O(M n³)``, which
dominates an episode at many ways (45-way 10-shot: 45 matrices of 450 × 450, 11–16 iterations). In
evaluation :func:`solve_dual_working_set` gets the same optimum from problems restricted to the variables
that can be nonzero (each example's own class and the classes that compete with it), about twice as fast
at 45-way 10-shot on CLINC150 embeddings.

**Gradients** (:class:`CrammerSingerDual`): implicit differentiation of the KKT conditions on that
active set. With ``α`` fixed on the active set ``A`` and free elsewhere, ``dα`` solves the
equality-constrained QP ``min ½ Σ_m dα_mᵀ K dα_m + ⟨dK α, dα⟩`` over ``{dα_A = 0, Σ_m dα_m = 0}``, so
``dα = −B(dK α)`` with ``B`` the inverse of the Hessian restricted to that subspace (symmetric). For an
upstream gradient ``g = ∂L/∂α`` the backward is therefore ``u = B g`` and ``∂L/∂K = −u αᵀ``: one solve
of the same structured system; autograd carries it on through ``K = XXᵀ`` and ``W = Xᵀα``. This is
the exact derivative of the polished solution wherever strict complementarity holds (the active set
is locally constant), which is the generic case; at a degenerate point it is one of the one-sided
derivatives. Using the exact active set rather than the barrier's smoothed KKT system (as qpth does)
makes the gradient exact rather than accurate to the final barrier parameter.

Why write it rather than use a library: qpth (what MetaOptNet used) is unmaintained; general
differentiable solvers (cvxpylayers, theseus, …) add heavy dependencies, and solve the ``n·M``-variable
QP without this structure. The solver is some 300 lines of torch, checked against scikit-learn's
liblinear and scipy's SLSQP in ``tests/algorithms/test_metaoptnet.py``.

When ``K`` is singular (more support examples than features), ``α`` is not unique but ``W = Xᵀα`` and
the logits are (the primal is strongly convex). The interior-point method still converges (the
barrier keeps its systems positive definite; a step whose Cholesky fails gets a ``1e-10``-relative
diagonal), but polishing usually fails, so ``α`` is the iterate at ``tol`` and ``W`` is accurate to
about the square root of the duality gap (1.7e-7 relative to liblinear at ``tol=1e-10`` in the tests).
The backward then uses the iterate's active set, with the same jitter if a restricted system is
singular: an approximation (it still matched finite differences in our checks).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

_JITTER = 1e-10
#: Interior-point iterations without a new least residual before the solver stops at its best iterate.
_STALL = 5


@dataclass
class SolverInfo:
    """What the solver reports: iterations, the final scaled KKT residual, whether it converged and
    whether the polished (exact active-set) solution was kept."""

    iterations: int
    residual: float
    converged: bool
    polished: bool


def _per_class(blocks: Tensor, r: Tensor) -> Tensor:
    """``out[:, m] = blocks[m] @ r[:, m]`` for ``blocks`` ``[M, n, n]`` and ``r`` ``[n, M]`` (a batched
    matrix-vector product that reads ``blocks`` in place: an einsum would copy it)."""
    return torch.bmm(blocks, r.T.unsqueeze(-1)).squeeze(-1).T


def _shared(blocks: Tensor, v: Tensor) -> Tensor:
    """``out[:, m] = blocks[m] @ v`` for one vector ``v`` ``[n]``: ``[n, M]``."""
    return torch.matmul(blocks, v).T


class _FreeSet:
    """The variables the interior-point method moves: all of them (``mask=None``), or those of a working set.

    Variables outside the set are held at ``α = 0`` (their upper bound when the example is not of that
    class). Each class's Newton block is gathered to its free examples (``idx[m]``, padded to the largest
    count with decoupled unit rows), so a step costs ``M`` factorizations of ``L × L`` instead of ``n × n``.
    """

    def __init__(self, mask: Tensor | None, n: int, M: int) -> None:
        self.mask, self.n, self.M = mask, n, M
        if mask is None:
            return
        counts = mask.sum(0)
        order = torch.argsort((~mask).to(torch.int8), dim=0, stable=True)  # each column's free rows first
        self.idx = order[: int(counts.max())].T.contiguous()  # [M, L]
        self.valid = torch.arange(self.idx.shape[1], device=mask.device) < counts.unsqueeze(-1)  # [M, L]
        self.weight = self.valid.to(torch.float64)

    def blocks(self, K: Tensor, D: Tensor) -> Tensor:
        """``K + diag(D_m)`` per class, on its free examples: ``[M, L, L]``."""
        if self.mask is None:
            blocks = K.expand(self.M, self.n, self.n).clone()
            blocks.diagonal(dim1=1, dim2=2).add_(D.T)
            return blocks
        idx, w = self.idx, self.weight
        blocks = K[idx.unsqueeze(-1), idx.unsqueeze(-2)] * w.unsqueeze(-1) * w.unsqueeze(-2)
        blocks.diagonal(dim1=1, dim2=2).add_(torch.where(self.valid, D.T.gather(1, idx), torch.ones_like(w)))
        return blocks

    def sum_blocks(self, blocks: Tensor) -> Tensor:
        """``Σ_m`` of the blocks, each scattered to its examples: ``[n, n]``."""
        if self.mask is None:
            return _sum_blocks(blocks)
        pair = self.valid.unsqueeze(-1) & self.valid.unsqueeze(-2)
        flat = (self.idx.unsqueeze(-1) * self.n + self.idx.unsqueeze(-2))[pair]
        total = torch.zeros(self.n * self.n, dtype=blocks.dtype, device=blocks.device)
        return total.index_add_(0, flat, blocks[pair]).view(self.n, self.n)

    def per_class(self, blocks: Tensor, r: Tensor) -> Tensor:
        """``out[:, m] = blocks[m] @ r[:, m]`` on the free examples, zero elsewhere: ``[n, M]``."""
        if self.mask is None:
            return _per_class(blocks, r)
        gathered = r.T.gather(1, self.idx) * self.weight
        product = torch.bmm(blocks, gathered.unsqueeze(-1)).squeeze(-1) * self.weight
        return torch.zeros_like(r.T).scatter_add_(1, self.idx, product).T

    def shared(self, blocks: Tensor, v: Tensor) -> Tensor:
        """``out[:, m] = blocks[m] @ v`` on the free examples: ``[n, M]``."""
        if self.mask is None:
            return _shared(blocks, v)
        return self.per_class(blocks, v.unsqueeze(-1).expand(self.n, self.M))


def _sum_blocks(blocks: Tensor) -> Tensor:
    """``blocks.sum(0)`` for ``[M, n, n]``, as ``M`` in-place additions (several times faster on CPU than
    torch's reduction over the leading dimension of a large tensor)."""
    total = blocks[0].clone()
    for block in blocks[1:]:
        total += block
    return total


def _max_step(v: Tensor, dv: Tensor) -> Tensor:
    """Largest ``a ≤ 1`` with ``v + a·dv ≥ 0`` (``v > 0``)."""
    ratios = torch.where(dv < 0, -v / dv, torch.full_like(v, float("inf")))
    return ratios.min().clamp(max=1.0)


def _kkt_scales(K: Tensor, C: float) -> tuple[float, float, float]:
    kmax = float(K.abs().max()) if K.numel() else 0.0
    dual = 1.0 + kmax * C  # units of the gradient Kα − Y
    primal = 1.0 + C  # units of α
    return dual, primal, dual * primal


def _cholesky_with_jitter(matrix: Tensor, jitter: Tensor | float) -> Tensor:
    """Cholesky factor of ``matrix``, adding ``jitter`` × 1, 100, 10⁴, 10⁶ until it factorizes (a
    rank-deficient Gram matrix, as with more support examples than features)."""
    chol, info = torch.linalg.cholesky_ex(matrix)
    for factor in (1.0, 1e2, 1e4, 1e6):
        if not bool((info != 0).any()):
            return chol
        chol, info = torch.linalg.cholesky_ex(matrix + factor * jitter)
    if bool((info != 0).any()):
        raise torch.linalg.LinAlgError("Crammer-Singer: the restricted KKT system is singular")
    return chol


def _eye(matrix: Tensor) -> Tensor:
    return torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)


def _diagonal_scale(matrix: Tensor) -> float:
    return float(matrix.diagonal(dim1=-2, dim2=-1).abs().max().clamp(min=1.0))


class _Restricted:
    """``B``: the inverse of ``blockdiag_m(K)`` restricted to ``{α_A = 0, Σ_m α_m = 0}``.

    ``apply(r, offset)`` returns ``(u, ν)`` with ``u = 0`` off ``free``, ``K u_m + ν = r_m`` on the
    free coordinates of each class ``m`` and ``Σ_m u_m + offset = 0``: the solution of
    ``min ½ Σ_m u_mᵀ K u_m − ⟨r, u⟩`` on that affine subspace. With ``P_m = diag(free[:, m])`` and
    ``B_m = P_m (P_m K P_m + I − P_m)⁻¹ P_m``: ``u_m = B_m (r_m − ν)``, ``(Σ_m B_m) ν = Σ_m B_m r_m + offset``.
    """

    def __init__(self, K: Tensor, free: Tensor) -> None:
        p = free.T.to(K.dtype)  # [M, n]
        eye = _eye(K)
        blocks = p.unsqueeze(-1) * K.unsqueeze(0) * p.unsqueeze(-2) + torch.diag_embed(1 - p)
        chol = _cholesky_with_jitter(blocks, _JITTER * _diagonal_scale(K) * p.unsqueeze(-1) * eye)
        inverse = torch.cholesky_inverse(chol)
        self.B = p.unsqueeze(-1) * inverse * p.unsqueeze(-2)  # [M, n, n]
        none_free = (p.sum(0) == 0).to(K.dtype)  # a row with every coordinate fixed: ν_i is free
        schur = _sum_blocks(self.B) + torch.diag(none_free)
        self.schur = _cholesky_with_jitter(schur, _JITTER * _diagonal_scale(schur) * eye)

    def apply(self, r: Tensor, offset: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(u, ν)`` for the right-hand side ``r`` (``n × M``); see the class docstring."""
        Br = _per_class(self.B, r)
        rhs = Br.sum(1) if offset is None else Br.sum(1) + offset
        nu = torch.cholesky_solve(rhs.unsqueeze(-1), self.schur).squeeze(-1)
        u = Br - _shared(self.B, nu)
        return u, nu


def _newton_direction(
    free: _FreeSet, inverse: Tensor, schur: Tensor, r_d: Tensor, r_p: Tensor, r_e: Tensor, s: Tensor, mu: Tensor,
    r_c: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The Newton step ``(Δα, Δs, Δμ, Δν)`` of the interior-point method.

    Linearized KKT: ``KΔα_m + Δμ_m + Δν = −r_d,m``, ``Δα + Δs = −r_p``, ``Σ_m Δα_m = −r_e``,
    ``μ⊙Δs + s⊙Δμ = −r_c``. Eliminating ``Δs`` and ``Δμ`` leaves ``(K + D_m) Δα_m = t_m − Δν`` with
    ``D = μ/s`` and ``t = −r_d − (μ⊙r_p − r_c)/s``; the equality constraints give
    ``(Σ_m (K + D_m)⁻¹) Δν = Σ_m (K + D_m)⁻¹ t_m + r_e``. ``inverse`` holds the ``(K + D_m)⁻¹`` and
    ``schur`` the Cholesky factor of their sum.
    """
    t = -r_d - (mu * r_p - r_c) / s
    z = free.per_class(inverse, t)
    d_nu = torch.cholesky_solve((z.sum(1) + r_e).unsqueeze(-1), schur).squeeze(-1)
    d_alpha = z - free.shared(inverse, d_nu)
    d_s = -r_p - d_alpha
    d_mu = (-r_c - mu * d_s) / s
    if free.mask is not None:  # the variables outside the working set do not move
        d_s, d_mu = d_s * free.mask, d_mu * free.mask
    return d_alpha, d_s, d_mu, d_nu


def _polish(
    K: Tensor, Y: Tensor, H: Tensor, free: Tensor, tol: float, scales: tuple[float, float], rounds: int = 10
) -> tuple[Tensor, Tensor, float] | None:
    """Exact solution on an active set, corrected until the KKT conditions hold (or ``None``).

    Starting from the interior-point guess, fix ``α = H`` off ``free``, solve the remaining
    equality-constrained QP, and move coordinates that violate ``α ≤ H`` to the active set and
    active ones with a negative multiplier back to the free set (a primal-dual active-set step);
    the interior-point guess is nearly right, so this ends in a round or two.
    """
    scale_d, scale_p = scales
    zero = torch.zeros_like(H)
    for _ in range(rounds):
        fixed = torch.where(free, zero, H)
        u, nu = _Restricted(K, free).apply(Y - K @ fixed, offset=fixed.sum(1))
        alpha = fixed + u
        grad = K @ alpha - Y + nu.unsqueeze(-1)  # −μ on the active set, 0 (to rounding) on the free set
        over = torch.where(free, alpha - H, zero)  # > 0: violates α ≤ H
        negative = torch.where(free, zero, grad)  # > 0: a negative multiplier μ = −grad
        res = max(
            float(torch.where(free, grad, zero).abs().max()) / scale_d,
            float(negative.clamp(min=0).max()) / scale_d,
            float(over.clamp(min=0).max()) / scale_p,
            float(alpha.sum(1).abs().max()) / scale_p,
        )
        if res <= tol:
            return alpha, free, res
        flipped = (over > tol * scale_p) | (negative > tol * scale_d)
        if not bool(flipped.any()):
            return None
        free = free ^ flipped
    return None


def _interior_point(
    K: Tensor, Y: Tensor, C: float, mask: Tensor | None, tol: float, max_iter: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, int, float]:
    """The interior-point iterations on the variables in ``mask`` (all when ``None``; the others stay 0):
    ``(α, s, μ, ν, iterations, scaled KKT residual of that restricted problem)``."""
    n, M = Y.shape
    H = C * Y
    scale_d, scale_p, scale_c = _kkt_scales(K, C)
    free_set = _FreeSet(mask, n, M)
    on = torch.ones_like(Y) if mask is None else mask.to(Y.dtype)
    alpha = torch.zeros_like(Y)
    s = torch.ones_like(Y)  # slack of α ≤ H
    mu = on.clone()  # multiplier of α ≤ H (0, and unused, outside the working set)
    nu = torch.zeros(n, dtype=Y.dtype, device=Y.device)  # multiplier of Σ_m α_m = 0
    count = float(on.sum())

    def residuals() -> tuple[Tensor, Tensor, Tensor, float]:
        r_d = (K @ alpha - Y + mu + nu.unsqueeze(-1)) * on
        r_p = (alpha + s - H) * on
        r_e = alpha.sum(1)
        res = max(
            float(r_d.abs().max()) / scale_d,
            float(r_p.abs().max()) / scale_p,
            float(r_e.abs().max()) / scale_p,
            float((s * mu).max()) / scale_c,
        )
        return r_d, r_p, r_e, res

    iterations = 0
    r_d, r_p, r_e, res = residuals()
    best, best_res, stalled = (alpha, s, mu, nu), res, 0
    while res > tol and iterations < max_iter and stalled < _STALL:
        iterations += 1
        blocks = free_set.blocks(K, mu / s)  # [M, L, L]: K + D_m on each class's free examples
        try:  # K singular and D → 0 on the free set: regularize the step (the residuals stay exact)
            inverse = torch.cholesky_inverse(_cholesky_with_jitter(blocks, _JITTER * scale_d * _eye(blocks)))
            schur_matrix = free_set.sum_blocks(inverse)
            schur = _cholesky_with_jitter(schur_matrix, _JITTER * _diagonal_scale(schur_matrix) * _eye(schur_matrix))
        except torch.linalg.LinAlgError:  # no usable Newton step: stop at the best iterate
            break

        system = (free_set, inverse, schur, r_d, r_p, r_e, s, mu)
        gap = (s * mu).sum() / count
        # predictor (affine scaling), then Mehrotra's centering and second-order correction
        _, ds, dmu, _ = _newton_direction(*system, s * mu)
        step = torch.minimum(_max_step(s, ds), _max_step(mu, dmu))
        gap_aff = ((s + step * ds) * (mu + step * dmu)).sum() / count
        sigma = (gap_aff / gap) ** 3
        d_alpha, d_s, d_mu, d_nu = _newton_direction(*system, s * mu + ds * dmu - sigma * gap)
        step = (0.99 * torch.minimum(_max_step(s, d_s), _max_step(mu, d_mu))).clamp(max=1.0)
        alpha = alpha + step * d_alpha
        s = s + step * d_s
        mu = mu + step * d_mu
        nu = nu + step * d_nu
        r_d, r_p, r_e, res = residuals()
        if res < best_res:
            best, best_res, stalled = (alpha, s, mu, nu), res, 0
        else:  # near the rounding limit the Newton systems are nearly singular and the iterates may drift
            stalled += 1
        if float(step) < 1e-12:  # no progress: rounding limits the attainable residual
            break
    return (*best, iterations, best_res)


def solve_dual(
    K: Tensor, Y: Tensor, C: float, *, tol: float = 1e-9, max_iter: int = 100, polish: bool = True
) -> tuple[Tensor, Tensor, SolverInfo]:
    """Solve the Crammer–Singer dual for one task (see the module docstring).

    Args:
        K: ``n × n`` Gram matrix of the support embeddings (symmetric positive semi-definite).
        Y: ``n × M`` one-hot labels; every column (class) must have at least one example.
        C: the cost, ``> 0``.
        tol: bound on the scaled KKT residual.
        max_iter: interior-point iterations at most; a warning is issued if ``tol`` is not reached.
        polish: fix the active set and solve the remaining equality-constrained QP exactly.

    Returns:
        ``(α, free, info)``: the solution (``n × M``, float64), the mask of coordinates whose upper
        bound is inactive (used by the backward) and a :class:`SolverInfo`.
    """
    K = K.detach().double()
    Y = Y.detach().double()
    H = C * Y
    scale_d, scale_p, _ = _kkt_scales(K, C)
    alpha, s, mu, _, iterations, res = _interior_point(K, Y, C, None, tol, max_iter)
    free = s >= mu
    polished = False
    if polish:
        try:
            found = _polish(K, Y, H, free, tol, (scale_d, scale_p))
        except torch.linalg.LinAlgError:  # degenerate active set: keep the interior-point iterate
            found = None
        if found is not None and found[2] <= res:
            alpha, free, res = found
            polished = True
    return alpha, free, _report(iterations, res, tol, polished)


def _report(iterations: int, res: float, tol: float, polished: bool) -> SolverInfo:
    converged = res <= tol
    if not converged:
        warnings.warn(
            f"Crammer-Singer SVM: KKT residual {res:.2e} > tol {tol:.0e} after {iterations} iterations",
            RuntimeWarning,
            stacklevel=3,
        )
    return SolverInfo(iterations, res, converged, polished)


def solve_dual_working_set(
    K: Tensor, Y: Tensor, C: float, *, tol: float = 1e-9, max_iter: int = 100, rivals: int = 4, rounds: int = 20
) -> tuple[Tensor, SolverInfo]:
    """The same optimum as :func:`solve_dual` (without the polish), for many classes: ``(α, info)``.

    At the optimum most ``α_im`` of a class ``m ≠ y_i`` sit at their bound 0 (example ``i`` does not
    compete with class ``m``). So the interior-point method runs on a working set: each example's own
    class and the ``rivals`` classes with the highest mean kernel value against it. Then the KKT conditions
    of the variables left out are checked (at ``α_im = 0 = H_im`` the multiplier ``−((Kα)_im + ν_i)``
    must be ≥ 0); violators join the set and the restricted problem is solved again. When none is left,
    the KKT residual of the *full* problem is at most ``tol``: the same optimum, at ``M`` factorizations of
    (free examples per class)² instead of ``n²`` per iteration. No polish, hence no backward: for
    evaluation. ``info.iterations`` counts the iterations of every round.
    """
    K = K.detach().double()
    Y = Y.detach().double()
    n, M = Y.shape
    own = Y > 0
    if M <= rivals + 1:
        alpha, _, info = solve_dual(K, Y, C, tol=tol, max_iter=max_iter, polish=False)
        return alpha, info
    scale_d = _kkt_scales(K, C)[0]
    means = (K @ Y) / Y.sum(0)
    mask = own.clone()
    mask.scatter_(1, means.masked_fill(own, float("-inf")).topk(rivals, dim=1).indices, True)
    iterations = 0
    for _ in range(rounds):
        alpha, _, _, nu, used, res = _interior_point(K, Y, C, mask, tol, max_iter)
        iterations += used
        outside = (K @ alpha + nu.unsqueeze(-1)).masked_fill(mask, float("-inf"))  # > 0: a negative multiplier
        violation = max(float(outside.max()), 0.0) / scale_d
        res = max(res, violation)
        if violation <= tol:
            break
        mask |= outside > tol * scale_d
    return alpha, _report(iterations, res, tol, False)


class CrammerSingerDual(torch.autograd.Function):
    """``α = CrammerSingerDual.apply(K, Y, C, tol, max_iter)``, differentiable in ``K``.

    The forward runs :func:`solve_dual` (float64 inside; ``α`` comes back in ``K``'s dtype) when ``K``
    needs a gradient, else :func:`solve_dual_working_set` (no polish: the iterate at ``tol``). The
    backward is the implicit derivative described in the module docstring: ``∂L/∂K = −(B g) αᵀ``.
    ``Y`` and ``C`` get no gradient. The last :class:`SolverInfo` is kept in ``CrammerSingerDual.last_info``.
    """

    last_info: SolverInfo | None = None

    @staticmethod
    def forward(ctx, K: Tensor, Y: Tensor, C: float, tol: float, max_iter: int) -> Tensor:  # type: ignore[override]
        if ctx.needs_input_grad[0]:
            alpha, free, info = solve_dual(K, Y, C, tol=tol, max_iter=max_iter)
        else:  # no backward: no polish (it is for the exact active set), and a working set for many classes
            alpha, info = solve_dual_working_set(K, Y, C, tol=tol, max_iter=max_iter)
            free = alpha < C * Y.double()
        CrammerSingerDual.last_info = info
        ctx.save_for_backward(K, alpha, free)
        return alpha.to(K.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_alpha: Tensor):  # type: ignore[override]
        K, alpha, free = ctx.saved_tensors
        u, _ = _Restricted(K.detach().double(), free).apply(grad_alpha.double())
        grad_K = -(u @ alpha.T)
        return grad_K.to(K.dtype), None, None, None, None


def svm_weights(X: Tensor, Y: Tensor, C: float, *, tol: float = 1e-9, max_iter: int = 100) -> tuple[Tensor, Tensor]:
    """``(W, α)`` of the Crammer–Singer SVM without bias, ``W = Xᵀα`` (``Y``: ``n × n`` one-hot bound).

    The QP is solved over the classes that have support examples; the columns of the others are zero.
    Differentiable in ``X`` (see :class:`CrammerSingerDual`).
    Loop path only: selecting the present classes is data-dependent.
    """
    present = torch.nonzero(Y.sum(0) > 0).squeeze(-1)
    alpha_present = CrammerSingerDual.apply(X @ X.T, Y[:, present], C, tol, max_iter)
    alpha = torch.zeros_like(Y).index_copy(1, present, alpha_present)
    return X.T @ alpha, alpha
