"""The batched execution path: a meta-batch of T tasks, each with its own weights, one kernel call per layer.

After the first inner step every task of a meta-batch has its own weights, so the loop path calls each layer T
times. Here the T tasks run as one call: their activations are laid out ``[N, T, *features]`` (N examples per
task), and

* ``Conv2d`` is one grouped convolution (the tasks stacked as channel groups, ``groups = T``), the kernels
  ``[T, O, C, k, k]`` reshaped to ``[T·O, C, k, k]``;
* ``Linear`` is one batched matrix product (``einsum``) with weights ``[T, out, in]``;
* transductive ``BatchNorm`` (per-task batch statistics, MAML's convention) is ordinary training-mode
  ``batch_norm`` over the ``T·C`` channels of that layout, ``GroupNorm`` is ``group_norm`` with ``T·G``
  groups, ``LayerNorm`` normalizes the last dims and scales by each task's weight;
* pools and activations act per example and channel, so they run once on the whole layout; a ``ReLU`` followed
  by a ``MaxPool2d`` runs after it (``max ∘ relu = relu ∘ max``, gradients included, since ReLU is monotone and
  passes no gradient where it clips), on a quarter of the values.

A weight that is not per task (shape of the module's own parameter, as for the layers an ``adapt`` selection
leaves alone) is shared: one ordinary convolution or matrix product over all ``N·T`` examples. The inner loop's
gradient of the *sum* of the task losses with respect to the per-task weights ``[T, ...]`` is each task's own
gradient (the tasks share nothing), so one ``torch.autograd.grad`` call, with ``create_graph`` for second order,
gives all T inner steps; see :mod:`metaloop.core.inner`. The forward is the same arithmetic as the loop path's,
in another order: the meta-gradients agree to rounding (tested in float64, ``tests/core/test_batched.py``).

Only models built from the layers above (nested ``nn.Sequential`` of them) are batched; :func:`unbatchable`
names the first layer that is not, and ``path=auto`` then falls back to the loop path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Softplus, nn.Identity)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


@dataclass(frozen=True)
class TaskBatching:
    """The batched context: ``tasks`` tasks; ``ndims`` the number of dims of each parameter of the model."""

    tasks: int
    ndims: Mapping[str, int]


_CONTEXT: ContextVar[TaskBatching | None] = ContextVar("metaloop_batched", default=None)


def batching() -> TaskBatching | None:
    """The active :class:`TaskBatching`, or ``None`` outside the batched path."""
    return _CONTEXT.get()


@contextmanager
def batched_tasks(tasks: int, model: nn.Module) -> Iterator[TaskBatching]:
    """Run the enclosed code on the batched path over ``tasks`` tasks of ``model``."""
    token = _CONTEXT.set(TaskBatching(tasks, {n: p.dim() for n, p in model.named_parameters()}))
    try:
        yield _CONTEXT.get()
    finally:
        _CONTEXT.reset(token)


def unbatchable(module: nn.Module, prefix: str = "") -> str | None:
    """The first layer of ``module`` that the batched path cannot run, as ``"name (Type)"``, or ``None``."""
    if type(module) is nn.Sequential:
        for name, child in module.named_children():
            found = unbatchable(child, f"{prefix}.{name}" if prefix else name)
            if found is not None:
                return found
        return None
    where = prefix or "the model"
    if type(module) is nn.Conv2d:
        return None if module.padding_mode == "zeros" else f"{where} (Conv2d with padding_mode={module.padding_mode})"
    if type(module) is nn.Linear or type(module) is nn.Flatten and module.start_dim == 1 and module.end_dim == -1:
        return None
    if type(module) in _ELEMENTWISE or type(module) in _POOLS:
        return None
    if type(module) in _NORMS:
        return None
    if type(module) is nn.Dropout and module.p == 0:
        return None
    return f"{where} ({type(module).__name__})"


def per_task(p: Tensor, tasks: int, ndim: int) -> Tensor:
    """``p`` with a leading task dim: as it is when it has one, else expanded (shared by every task)."""
    return p if p.dim() == ndim + 1 else p.expand(tasks, *p.shape)


def expand_adapted(params: Mapping[str, Tensor], names: list[str] | tuple[str, ...]) -> dict[str, Tensor]:
    """``params`` with the adapted ``names`` made per task (``[T, ...]``), as the inner loop's first step needs."""
    ctx = batching()
    assert ctx is not None
    out = dict(params)
    for n in names:
        out[n] = per_task(out[n], ctx.tasks, ctx.ndims[n])
    return out


def task_losses(loss_fn: Callable[[Tensor, Tensor], Tensor], pred: Tensor, target: Tensor) -> Tensor:
    """``loss_fn`` of each task's ``pred[t]`` and ``target[t]``: ``[T]``. Cross-entropy and the mean squared
    error (with their default mean reduction) are one call over all tasks; any other loss is called per task."""
    tasks = pred.shape[0]
    if loss_fn is F.cross_entropy and pred.dim() == 3 and target.dim() == 2:
        return F.cross_entropy(pred.flatten(0, 1), target.flatten(), reduction="none").view(tasks, -1).mean(1)
    if loss_fn is F.mse_loss and pred.shape == target.shape:
        return (pred - target).square().flatten(1).mean(1)
    return torch.stack([loss_fn(pred[t], target[t]) for t in range(tasks)])


def last_layer(module: nn.Module) -> str:
    """The name of the last layer the batched path runs (``""``: ``module`` itself)."""
    return list(_leaves(module, ""))[-1][0]


def batched_call(module: nn.Module, params: Mapping[str, Tensor], x: Tensor, *, until: str | None = None) -> Tensor:
    """``module``'s output for every task: ``x`` is ``[T, N, ...]`` and so is the result; ``params`` holds
    per-task ``[T, ...]`` or shared tensors by name (missing names: the module's own). With ``until``, the input
    of that layer instead."""
    ctx = batching()
    assert ctx is not None
    tasks = ctx.tasks
    h = x.movedim(0, 1)  # [N, T, ...]
    layers = list(_leaves(module, ""))
    i = 0
    while i < len(layers) and layers[i][0] != until:
        name, layer = layers[i]
        after = layers[i + 1][1] if i + 1 < len(layers) and layers[i + 1][0] != until else None
        if type(layer) is nn.ReLU and isinstance(after, nn.MaxPool2d):  # max-pool first: ReLU on 1/4 of the values
            h = _layer(layer, name, params, _layer(after, layers[i + 1][0], params, h, tasks), tasks)
            i += 2
            continue
        h = _layer(layer, name, params, h, tasks)
        i += 1
    return h.movedim(1, 0)


def _leaves(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    if type(module) is nn.Sequential:
        for name, child in module.named_children():
            yield from _leaves(child, f"{prefix}.{name}" if prefix else name)
    else:
        yield prefix, module


def _param(layer: nn.Module, name: str, key: str, params: Mapping[str, Tensor]) -> Tensor | None:
    own = getattr(layer, key)
    if own is None:
        return None
    return params.get(f"{name}.{key}" if name else key, own)


def _channels(h: Tensor) -> Tensor:
    """``[N, T, C, *spatial]`` as ``[N, T·C, *spatial]``."""
    return h.reshape(h.shape[0], h.shape[1] * h.shape[2], *h.shape[3:])


def _layer(layer: nn.Module, name: str, params: Mapping[str, Tensor], h: Tensor, tasks: int) -> Tensor:
    n = h.shape[0]
    if isinstance(layer, nn.Conv2d):
        w, b = _param(layer, name, "weight", params), _param(layer, name, "bias", params)
        assert w is not None
        if w.dim() == 4 and (b is None or b.dim() == 1):  # shared by every task
            out = F.conv2d(h.reshape(n * tasks, *h.shape[2:]), w, b, layer.stride, layer.padding, layer.dilation,
                           layer.groups)
            return out.view(n, tasks, *out.shape[1:])
        w = per_task(w, tasks, 4)
        out = F.conv2d(_channels(h), w.reshape(-1, *w.shape[2:]),
                       None if b is None else per_task(b, tasks, 1).reshape(-1),
                       layer.stride, layer.padding, layer.dilation, layer.groups * tasks)
        return out.view(n, tasks, -1, *out.shape[2:])
    if isinstance(layer, nn.Linear):
        w, b = _param(layer, name, "weight", params), _param(layer, name, "bias", params)
        assert w is not None
        if w.dim() == 2 and (b is None or b.dim() == 1):
            return F.linear(h, w, b)
        out = torch.einsum("nt...i,toi->nt...o", h, per_task(w, tasks, 2))
        if b is not None:
            b = per_task(b, tasks, 1)
            out = out + b.view(1, tasks, *[1] * (out.dim() - 3), -1)
        return out
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
        w, b = _param(layer, name, "weight", params), _param(layer, name, "bias", params)
        w = None if w is None else per_task(w, tasks, 1).reshape(-1)
        b = None if b is None else per_task(b, tasks, 1).reshape(-1)
        flat = _channels(h)
        if isinstance(layer, nn.GroupNorm):
            out = F.group_norm(flat, layer.num_groups * tasks, w, b, layer.eps)
        else:  # transductive: each task's batch statistics
            out = F.batch_norm(flat, None, None, w, b, True, 0.0, layer.eps)
        return out.view(h.shape)
    if isinstance(layer, nn.LayerNorm):
        w, b = _param(layer, name, "weight", params), _param(layer, name, "bias", params)
        shape = tuple(layer.normalized_shape)
        if (w is None or w.dim() == len(shape)) and (b is None or b.dim() == len(shape)):
            return F.layer_norm(h, shape, w, b, layer.eps)
        out = F.layer_norm(h, shape, None, None, layer.eps)
        view = (1, tasks, *[1] * (h.dim() - 2 - len(shape)), *shape)
        if w is not None:
            out = out * per_task(w, tasks, len(shape)).reshape(view)
        if b is not None:
            out = out + per_task(b, tasks, len(shape)).reshape(view)
        return out
    if isinstance(layer, nn.Flatten):
        return h.flatten(2)
    if isinstance(layer, _POOLS):
        out = layer(_channels(h))
        return out.view(n, tasks, -1, *out.shape[2:])
    return layer(h)  # elementwise
