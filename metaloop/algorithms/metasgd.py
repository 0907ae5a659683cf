"""Meta-SGD.

Li, Zhou, Chen and Li, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning", 2017
(arXiv:1707.09835). The inner step is ``θ' = θ − α ∘ ∇_θ L_support(θ)`` (eq. 3), where ``α`` has the
shape of ``θ`` and is meta-learned with ``θ`` by the outer loop (eq. 4). We initialize every entry of
``α`` to ``inner_lr``; entries may become negative, as in the paper.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from metaloop.algorithms.base import LossFn
from metaloop.algorithms.maml import MAML
from metaloop.core.inner import LearningRate
from metaloop.errors import MetaloopError


def _key(name: str) -> str:
    return name.replace(".", "__")


class MetaSGD(MAML):
    """MAML with learned per-parameter inner learning rates ``self.lrs`` (meta-parameters)."""

    reads = tuple(name for name in MAML.reads if name != "test_inner_lr")  # it learns its step sizes

    def __init__(self, model: nn.Module, loss_fn: LossFn, **kwargs: Any) -> None:
        if kwargs.get("test_inner_lr") is not None:
            raise MetaloopError("option 'test_inner_lr': algorithm 'metasgd' has no fixed inner step size "
                                "(Meta-SGD meta-learns one per parameter)")
        super().__init__(model, loss_fn, **kwargs)
        named = dict(model.named_parameters())
        self.lrs = nn.ParameterDict(
            {_key(n): nn.Parameter(torch.full_like(named[n].detach(), self.inner_lr)) for n in self.adapted_names}
        )

    def inner_learning_rate(self) -> LearningRate:
        return {n: self.lrs[_key(n)] for n in self.adapted_names}
