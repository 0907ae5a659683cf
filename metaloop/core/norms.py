"""Normalization layers, rerouted without touching the user's module.

Two problems with the native norms in meta-learning, both solved here by a
:class:`torch.overrides.TorchFunctionMode` that intercepts ``F.batch_norm``, ``F.layer_norm`` and
``F.group_norm`` while a functional forward runs. The user's ``nn.Module`` is never modified.

1. **Transductive batch statistics** (the convention of MAML, Finn et al. 2017, and of its official
   code): every forward normalizes with the statistics of the batch at hand, support or query, at
   training and at test time, and the running buffers are neither read nor written. With
   ``force_batch_stats=True`` every ``F.batch_norm`` call is rewritten to ``training=True`` with no
   running buffers, whatever ``module.training`` says.
2. **Second-order gradients under ``vmap``.** torch.func's batching rule for the native
   ``batch_norm``/``layer_norm`` backward gives wrong gradients for the inputs of a norm whose affine
   weight is adapted per task (pytorch/functorch#534; a relative error of 7e-3 in float64, measured in
   ``shared/research/peers-speed.md``). With ``decompose=True`` the norms are computed from elementary
   ops (``var_mean``, ``rsqrt``, multiply, add), whose batching rules are exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

#: Module types whose forward goes through one of the intercepted functionals.
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
)


def has_norms(module: nn.Module) -> bool:
    """True if ``module`` contains a BatchNorm, LayerNorm or GroupNorm layer."""
    return any(isinstance(m, NORM_TYPES) for m in module.modules())


def has_batch_norm(module: nn.Module) -> bool:
    """True if ``module`` contains a BatchNorm layer."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """``F.batch_norm`` from elementary ops (exact under ``vmap``; running buffers are not updated)."""
    shape = [1, -1] + [1] * (input.dim() - 2)
    if training or running_mean is None or running_var is None:
        dims = [0] + list(range(2, input.dim()))
        var, mean = torch.var_mean(input, dim=dims, correction=0, keepdim=True)
    else:
        mean, var = running_mean.view(shape), running_var.view(shape)
    out = (input - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        out = out * weight.view(shape)
    if bias is not None:
        out = out + bias.view(shape)
    return out


def layer_norm(
    input: Tensor,
    normalized_shape: Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """``F.layer_norm`` from elementary ops (exact under ``vmap``)."""
    dims = list(range(-len(normalized_shape), 0))
    var, mean = torch.var_mean(input, dim=dims, correction=0, keepdim=True)
    out = (input - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """``F.group_norm`` from elementary ops (exact under ``vmap``)."""
    n, c = input.shape[:2]
    grouped = input.reshape(n, num_groups, -1)
    var, mean = torch.var_mean(grouped, dim=-1, correction=0, keepdim=True)
    out = ((grouped - mean) * torch.rsqrt(var + eps)).reshape(input.shape)
    shape = [1, c] + [1] * (input.dim() - 2)
    if weight is not None:
        out = out * weight.view(shape)
    if bias is not None:
        out = out + bias.view(shape)
    return out


def _bind(names: Sequence[str], args: tuple, kwargs: dict) -> dict:
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
_LN_ARGS = ("input", "normalized_shape", "weight", "bias", "eps")
_GN_ARGS = ("input", "num_groups", "weight", "bias", "eps")


class NormOverride(TorchFunctionMode):
    """Reroute the norm functionals while active (see the module docstring).

    Args:
        force_batch_stats: BatchNorm always uses the current batch's statistics and never touches
            its running buffers (transductive mode).
        decompose: compute BatchNorm, LayerNorm and GroupNorm from elementary ops, so that
            second-order gradients are exact under ``vmap``.
    """

    def __init__(self, *, force_batch_stats: bool, decompose: bool) -> None:
        super().__init__()
        self.force_batch_stats = force_batch_stats
        self.decompose = decompose

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            bound = _bind(_BN_ARGS, args, kwargs)
            if self.force_batch_stats:
                bound.update(running_mean=None, running_var=None, training=True)
            return (batch_norm if self.decompose else F.batch_norm)(**bound)
        if self.decompose and func is F.layer_norm:
            return layer_norm(**_bind(_LN_ARGS, args, kwargs))
        if self.decompose and func is F.group_norm:
            return group_norm(**_bind(_GN_ARGS, args, kwargs))
        return func(*args, **kwargs)
