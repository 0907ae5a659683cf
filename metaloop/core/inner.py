"""The gradient-based inner loop, shared by MAML, FOMAML, ANIL, Meta-SGD, Reptile and the baseline.

One step, for every adapted parameter ``θ_n`` (the others are left as they are)::

    g = ∇_θ L_support(θ)                  # torch.autograd.grad, or torch.func.grad under vmap
    g = g · min(1, c / ‖g‖)               # only with clip_norm=c; ‖g‖ is the global norm over adapted θ
    θ_n ← θ_n − α_n · g_n                 # SGD; α is a float or one tensor per parameter (Meta-SGD)

Gradient semantics:

* ``first_order=False`` (MAML, Finn et al. 2017): the step is built with ``create_graph=True``, so the
  meta-gradient flows through ``g`` (Hessian-vector products), through the clipping factor and into
  learned rates ``α``.
* ``first_order=True`` (FOMAML): ``g`` is treated as a constant, so ``∂θ'/∂θ = I`` and the meta-gradient
  is the query gradient at the adapted parameters. Learned rates still get the gradient ``−g·∂L/∂θ'``.
* ``optimizer="adam"`` replaces the SGD step by Adam (as in Reptile's code, Nichol et al. 2018); it is
  first-order only.

``loss_fn`` may be a sequence of losses (minibatches of one task): step t then takes the gradient of
``loss_fn[(t − 1) % len(loss_fn)]``, the rest is the same (Reptile's inner loop over a task's minibatches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from metaloop.core.batched import batching, expand_adapted
from metaloop.core.context import is_vectorized
from metaloop.errors import MetaloopError

ParamDict = dict[str, Tensor]
LossFn = Callable[[ParamDict], Tensor]
LearningRate = float | Mapping[str, Tensor]
INNER_OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


def gradients(loss_fn: LossFn, params: ParamDict, names: Sequence[str], *, create_graph: bool) -> ParamDict:
    """``∂ loss_fn(params) / ∂ params[n]`` for ``n`` in ``names``.

    Uses ``torch.autograd.grad`` (the loop path) or ``torch.func.grad`` (inside
    :func:`metaloop.core.context.vectorized`). Without ``create_graph`` the result is detached. On the batched
    path (:mod:`metaloop.core.batched`) ``loss_fn`` gives the ``[T]`` task losses and the gradients are per task,
    ``[T, ...]``, the adapted parameters made per task first.
    """
    if is_vectorized():
        others = {k: v for k, v in params.items() if k not in names}

        def partial_loss(adapted: ParamDict) -> Tensor:
            return loss_fn({**others, **adapted})

        grads = torch.func.grad(partial_loss)({n: params[n] for n in names})
        return grads if create_graph else {n: g.detach() for n, g in grads.items()}
    batched = batching() is not None
    with torch.enable_grad():
        params = expand_adapted(params, names) if batched else dict(params)
        for n in names:
            if not params[n].requires_grad:  # evaluation: start a fresh graph from a detached copy
                fresh = params[n].detach()
                params[n] = (fresh.clone() if batched else fresh).requires_grad_(True)
        loss = loss_fn(params)
        if batched:  # [T] task losses: each task's weights get its own loss's gradient
            loss = loss.sum()
        grads = torch.autograd.grad(
            loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True
        )
    return {n: torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)}


def clip_by_global_norm(grads: ParamDict, max_norm: float) -> ParamDict:
    """Scale ``grads`` by ``min(1, max_norm / ‖grads‖)`` (differentiable; no data-dependent branch)."""
    if batching() is not None:  # per-task gradients [T, ...]: each task's own norm
        total = torch.sqrt(sum((g * g).flatten(1).sum(1) for g in grads.values()))
        scale = torch.clamp(max_norm / (total + 1e-12), max=1.0)
        return {n: g * scale.view(-1, *[1] * (g.dim() - 1)) for n, g in grads.items()}
    total = torch.sqrt(sum((g * g).sum() for g in grads.values()))
    scale = torch.clamp(max_norm / (total + 1e-12), max=1.0)
    return {n: g * scale for n, g in grads.items()}


def gradient_descent_steps(
    loss_fn: LossFn | Sequence[LossFn],
    params: Mapping[str, Tensor],
    names: Sequence[str],
    *,
    lr: LearningRate,
    steps: int,
    first_order: bool = False,
    clip_norm: float | None = None,
    optimizer: Literal["sgd", "adam"] = "sgd",
    adam_betas: tuple[float, float] = (0.0, 0.999),
    adam_eps: float = 1e-8,
) -> Iterator[ParamDict]:
    """Yield the parameters after 0, 1, …, ``steps`` inner steps (see the module docstring)."""
    if optimizer not in INNER_OPTIMIZERS:
        raise MetaloopError(f"option 'inner_optimizer': {optimizer!r} is not one of sgd, adam")
    if optimizer == "adam" and not first_order:
        raise MetaloopError("option 'inner_optimizer': adam is first-order only (set first_order)")
    losses = [loss_fn] if callable(loss_fn) else list(loss_fn)
    current = dict(params)
    yield current
    moments: dict[str, tuple[Tensor, Tensor]] = {}
    beta1, beta2 = adam_betas
    for t in range(1, steps + 1):
        grads = gradients(losses[(t - 1) % len(losses)], current, names, create_graph=not first_order)
        if clip_norm is not None:
            grads = clip_by_global_norm(grads, clip_norm)
        updated = dict(current)
        for n in names:
            step_size = lr if isinstance(lr, (int, float)) else lr[n]
            g = grads[n]
            if optimizer == "adam":
                m, v = moments.get(n, (torch.zeros_like(g), torch.zeros_like(g)))
                m = beta1 * m + (1 - beta1) * g
                v = beta2 * v + (1 - beta2) * g * g
                moments[n] = (m, v)
                g = (m / (1 - beta1**t)) / (torch.sqrt(v / (1 - beta2**t)) + adam_eps)
            updated[n] = current[n] - step_size * g
        current = updated
        yield current


def gradient_descent(loss_fn: LossFn, params: Mapping[str, Tensor], names: Sequence[str], **kwargs) -> ParamDict:
    """The parameters after ``steps`` inner steps; arguments as in :func:`gradient_descent_steps`."""
    result: ParamDict = dict(params)
    for result in gradient_descent_steps(loss_fn, params, names, **kwargs):
        pass
    return result
