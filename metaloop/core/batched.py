"""The batched execution path: a meta-batch of T tasks, each with its own weights, one kernel call per layer.

After the first inner step every task of a meta-batch has its own weights, so the loop path calls each layer T
times. Here the T tasks run as one call: their activations are laid out ``[N, T, *features]`` (N examples per
task), and

* ``Conv2d`` is one grouped convolution (the tasks stacked as channel groups, ``groups = T``), the kernels
  ``[T, O, C, k, k]`` reshaped to ``[T·O, C, k, k]``;
* ``Linear`` is one batched matrix product (``einsum``) with weights ``[T, out, in]``;
* transductive ``BatchNorm`` (per-task batch statistics, MAML's convention) is ordinary training-mode
  ``batch_norm`` over the ``T·C`` channels of that layout (in ``running`` mode the same in training, the
  running buffers then updated task by task as the loop path does, and the running statistics in evaluation), ``GroupNorm`` is ``group_norm`` with ``T·G``
  groups, ``LayerNorm`` normalizes the last dims and scales by each task's weight;
* pools and activations act per example and channel, so they run once on the whole layout; a ``ReLU`` followed
  by a ``MaxPool2d`` runs after it (``max ∘ relu = relu ∘ max``, gradients included, since ReLU is monotone and
  passes no gradient where it clips), on a quarter of the values.

A weight that is not per task (shape of the module's own parameter, as for the layers an ``adapt`` selection
leaves alone) is shared: one ordinary convolution or matrix product over all ``N·T`` examples. The inner loop's
gradient of the *sum* of the task losses with respect to the per-task weights ``[T, ...]`` is each task's own
gradient (the tasks share nothing), so one ``torch.autograd.grad`` call, with ``create_graph`` for second order,
gives all T inner steps; see :mod:`metaloop.core.inner`. The forward is the same arithmetic as the loop path's,
in another order: the meta-gradients agree to rounding (tested in float64, ``tests/core/test_batched.py``; why each
step is exact: docs/algorithms.md, "The batched path").

Only models built from the layers above (nested ``nn.Sequential`` of them) are batched, and modules that say how
they run here from such children: a method ``batched_forward(child, x)``, where ``child(name, h)`` runs the child
``name`` on activations ``h`` of the ``[N, T, ...]`` layout (``metaloop.models.resnet12``'s blocks: a residual
sum is elementwise). :func:`unbatchable` names the first layer that is neither, and ``path=auto`` then falls back
to the loop path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Softplus, nn.Identity)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


@dataclass(frozen=True)
class TaskBatching:
    """The batched context: ``tasks`` tasks; ``ndims`` the number of dims of each parameter of the model;
    ``running``: BatchNorm in ``running`` mode, whose buffer updates wait in ``updates`` until the context ends."""

    tasks: int
    ndims: Mapping[str, int]
    running: bool = False
    updates: list[tuple[nn.Module, Tensor, Tensor]] = field(default_factory=list)


_CONTEXT: ContextVar[TaskBatching | None] = ContextVar("metaloop_batched", default=None)


def batching() -> TaskBatching | None:
    """The active :class:`TaskBatching`, or ``None`` outside the batched path."""
    return _CONTEXT.get()


@contextmanager
def batched_tasks(tasks: int, model: nn.Module, *, running: bool = False) -> Iterator[TaskBatching]:
    """Run the enclosed code on the batched path over ``tasks`` tasks of ``model``; with ``running`` (BatchNorm in
    ``running`` mode), the running statistics are updated at the end as the loop path updates them: task by task,
    each task's forwards in their order."""
    ctx = TaskBatching(tasks, {n: p.dim() for n, p in model.named_parameters()}, running)
    token = _CONTEXT.set(ctx)
    try:
        yield ctx
    finally:
        _CONTEXT.reset(token)
    _update_running_stats(ctx)


@torch.no_grad()
def _update_running_stats(ctx: TaskBatching) -> None:
    for t in range(ctx.tasks):
        for layer, mean, var in ctx.updates:
            factor = layer.momentum
            if layer.num_batches_tracked is not None:
                layer.num_batches_tracked.add_(1)
                if factor is None:
                    factor = 1.0 / float(layer.num_batches_tracked)
            layer.running_mean.mul_(1 - factor).add_(mean[t], alpha=factor)
            layer.running_var.mul_(1 - factor).add_(var[t], alpha=factor)


def unbatchable(module: nn.Module, prefix: str = "") -> str | None:
    """The first layer of ``module`` that the batched path cannot run, as ``"name (Type)"``, or ``None``."""
    if type(module) is nn.Sequential:
        for name, child in module.named_children():
            found = unbatchable(child, f"{prefix}.{name}" if prefix else name)
            if found is not None:
                return found
        return None
    if hasattr(module, "batched_forward"):  # a module that says how it runs here, from its children
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
    return _run(module, "", params, x.movedim(0, 1), ctx.tasks, until).movedim(1, 0)


def _run(module: nn.Module, prefix: str, params: Mapping[str, Tensor], h: Tensor, tasks: int,
         until: str | None = None) -> Tensor:
    """``module`` (named ``prefix``) on ``h`` in the ``[N, T, ...]`` layout."""
    layers = list(_leaves(module, prefix))
    i = 0
    while i < len(layers) and layers[i][0] != until:
        name, layer = layers[i]
        after = layers[i + 1][1] if i + 1 < len(layers) and layers[i + 1][0] != until else None
        if type(layer) is nn.ReLU and isinstance(after, nn.MaxPool2d):  # max-pool first: ReLU on 1/4 of the values
            h = _layer(layer, name, params, _layer(after, layers[i + 1][0], params, h, tasks), tasks)
            i += 2
            continue
        if hasattr(layer, "batched_forward"):
            def child(child_name: str, value: Tensor, layer: nn.Module = layer, name: str = name) -> Tensor:
                return _run(getattr(layer, child_name), f"{name}.{child_name}" if name else child_name, params,
                            value, tasks)

            h = layer.batched_forward(child, h)
        else:
            h = _layer(layer, name, params, h, tasks)
        i += 1
    return h


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


def _uses_running_stats(layer: nn.Module) -> bool:
    ctx = batching()
    return bool(ctx and ctx.running and not layer.training and layer.running_mean is not None)


def _updates_running_stats(layer: nn.Module) -> bool:
    ctx = batching()
    return bool(ctx and ctx.running and layer.training and layer.track_running_stats)


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
        elif _uses_running_stats(layer):  # running mode, evaluation: the running statistics, shared by the tasks
            out = F.batch_norm(flat, layer.running_mean.repeat(tasks), layer.running_var.repeat(tasks), w, b, False,
                               0.0, layer.eps)
        else:  # each task's batch statistics (transductive, or running mode in training)
            out = F.batch_norm(flat, None, None, w, b, True, 0.0, layer.eps)
            if _updates_running_stats(layer):
                dims = [0, *range(2, flat.dim())]
                with torch.no_grad():
                    var, mean = torch.var_mean(flat, dim=dims, correction=1)
                batching().updates.append((layer, mean.view(tasks, -1), var.view(tasks, -1)))
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
