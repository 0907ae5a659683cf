"""Calling an unmodified ``nn.Module`` with a parameter dict (``torch.func.functional_call``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from metaloop.core.batched import batched_call, batching, last_layer
from metaloop.core.context import is_vectorized
from metaloop.core.norms import NormOverride, has_batch_norm, has_norms
from metaloop.errors import MetaloopError

BNMode = Literal["transductive", "running"]
BN_MODES: tuple[str, ...] = ("transductive", "running")


class FunctionalModel:
    """A stateless view of ``module``: ``fmodel(params, x, training=...)``.

    ``params`` maps parameter names (as in ``module.named_parameters()``) to tensors; names that are
    missing fall back to the module's own parameters and buffers. The module itself is never changed,
    apart from its ``training`` flag, which follows the ``training`` argument.

    BatchNorm mode (``bn_mode``):

    * ``"transductive"`` (MAML's convention): every forward normalizes with the statistics of the
      batch at hand, at meta-training and at test time; support and query are normalized separately.
      Running buffers are neither used nor updated. Gradients flow through the batch statistics, so a
      query example's prediction depends on the other query examples.
    * ``"running"``: ordinary PyTorch semantics. In training mode BatchNorm uses batch statistics and
      updates its running buffers in place (outside the autograd graph); in evaluation mode it uses
      the running statistics, so predictions are per-example. Not available under ``vmap``, since
      per-task in-place buffer updates cannot be batched.

    ``x`` is a tensor, passed positionally, or a mapping of keyword arguments (for example a Hugging
    Face model's ``input_ids`` and ``attention_mask``).
    """

    def __init__(self, module: nn.Module, bn_mode: str = "transductive") -> None:
        if bn_mode not in BN_MODES:
            raise MetaloopError(f"option 'bn_mode': {bn_mode!r} is not one of {', '.join(BN_MODES)}")
        self.module = module
        self.bn_mode = bn_mode
        self.has_batch_norm = has_batch_norm(module)
        self.has_norms = has_norms(module)
        # BatchNorm's forward bumps ``num_batches_tracked`` in place in training mode, before any
        # functional is called; in transductive mode each call gets a throwaway copy of the counters,
        # so the buffers stay untouched (and vmap sees no mutation of a captured tensor).
        self.bn_counters = [
            f"{prefix}.num_batches_tracked" if prefix else "num_batches_tracked"
            for prefix, m in module.named_modules()
            if isinstance(m, _BatchNorm) and m.num_batches_tracked is not None
        ]

    def __call__(self, params: Mapping[str, Tensor], x: Any, *, training: bool = True) -> Any:
        if self.module.training != training:
            self.module.train(training)
        if batching() is not None:
            return batched_call(self.module, params, x)
        vec = is_vectorized()
        force = self.bn_mode == "transductive" and self.has_batch_norm
        if vec and self.bn_mode == "running" and self.has_batch_norm and training:
            raise MetaloopError("option 'bn_mode': 'running' BatchNorm cannot run under vmap; use path=loop")
        if force and training and self.bn_counters:
            counters = {n: self.module.get_buffer(n).clone() for n in self.bn_counters}
            params = {**counters, **params}
        if force or (vec and self.has_norms):
            with NormOverride(force_batch_stats=force, decompose=vec):
                return self._call(params, x)
        return self._call(params, x)

    def head_input(self, params: Mapping[str, Tensor], x: Any, head: str, *, training: bool = True) -> Tensor | None:
        """The input ``z`` of submodule ``head`` when the model's output *is* ``head(z)`` (the head called
        once, on one tensor, and its output returned as is), else ``None``.

        One forward of the whole model with a hook on ``head``: whatever the model's ``forward`` does, the
        check holds exactly when ``model(x) == head(z)``, so the inner loop of a head-only adaptation (ANIL)
        can re-run just the head on ``z``. ``z`` carries the autograd graph back to the body's parameters.
        """
        if batching() is not None:  # an nn.Sequential (metaloop.core.batched): head(z) when head is its last layer
            if self.module.training != training:
                self.module.train(training)
            return batched_call(self.module, params, x, until=head) if last_layer(self.module) == head else None
        module = self.module.get_submodule(head)
        calls: list[tuple[tuple, Any]] = []
        handle = module.register_forward_hook(lambda _m, args, out: calls.append((args, out)))
        try:
            out = self(params, x, training=training)
        finally:
            handle.remove()
        if len(calls) != 1 or calls[0][1] is not out or len(calls[0][0]) != 1 or not isinstance(calls[0][0][0], Tensor):
            return None
        return calls[0][0][0]

    def _call(self, params: Mapping[str, Tensor], x: Any) -> Any:
        if isinstance(x, Mapping):
            return functional_call(self.module, dict(params), (), dict(x), strict=False)
        return functional_call(self.module, dict(params), (x,), strict=False)
