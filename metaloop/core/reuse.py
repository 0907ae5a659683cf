"""Feature reuse (Raghu et al. 2020, "Rapid Learning or Feature Reuse?", ICLR 2020, §5).

When the inner loop adapts only a model's final linear layer (ANIL's head, or any ``adapt`` spec inside it) and
the model's output is that layer's output, ``f(x) = head(body(x))``: the body runs once per task and each inner
step re-runs only the head on the features ``z = body(x)``. The result is the same computation, gradients
included, since ``z`` keeps its graph to the body's parameters. In evaluation the features of each distinct
example may be memoized across episodes (:mod:`metaloop.core.memo`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn
from torch.func import functional_call

from metaloop.core.batched import batched_call, batching
from metaloop.core.context import is_vectorized
from metaloop.core.functional import FunctionalModel
from metaloop.core.inner import ParamDict
from metaloop.core.memo import EmbeddingMemo
from metaloop.core.params import head_names


class _NotSplit(Exception):
    """The model's output is not its final linear layer's output."""


class HeadReuse:
    """The split ``head(body(x))`` of ``fmodel``'s model, when ``adapted`` names only parameters of its final
    linear layer (``module``: that layer's name; ``None`` when there is no such split, or ``enabled`` is false).
    A model whose output turns out not to be its last layer's is found out on the first call, and never tried
    again."""

    def __init__(self, fmodel: FunctionalModel, adapted: Iterable[str], *, enabled: bool = True) -> None:
        model = fmodel.module
        head = head_names(model)
        prefix = head[0].rpartition(".")[0] if head else ""
        self.fmodel = fmodel
        self.module: str | None = None
        if enabled and prefix and set(adapted) <= set(head) and isinstance(model.get_submodule(prefix), nn.Linear):
            self.module = prefix
        self._head_params = {n: n[len(prefix) + 1:] for n in head}

    def features(self, params: ParamDict, x: Any, *, training: bool, memo: EmbeddingMemo | None = None
                 ) -> Tensor | None:
        """The head's input for ``x`` under the body's ``params``, or ``None`` where the model is not
        ``head(body(x))`` (then the whole model runs at every inner step). ``memo`` (evaluation only, outside
        ``vmap``) keeps each distinct example's features."""
        if self.module is None:
            return None
        body = {n: v for n, v in params.items() if n not in self._head_params}
        module = self.module

        def compute(rows: Any) -> Tensor:
            z = self.fmodel.head_input(body, rows, module, training=training)
            if z is None:
                raise _NotSplit
            return z

        try:
            if memo is not None and not training and isinstance(x, Tensor) and not is_vectorized() \
                    and batching() is None:
                return memo(body, x, compute)
            return compute(x)
        except _NotSplit:
            self.module = None
            return None

    def output(self, params: ParamDict, z: Tensor) -> Tensor:
        """The final linear layer on features ``z`` with its parameters from ``params``."""
        head = self.fmodel.module.get_submodule(self.module)
        own = {short: params[n] for n, short in self._head_params.items() if n in params}
        if batching() is not None:
            return batched_call(head, own, z)
        return functional_call(head, own, (z,), strict=False)


__all__ = ["HeadReuse"]
