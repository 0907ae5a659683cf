"""The "pretrained" baseline of Finn et al. 2017 (§5.1): multi-task training, then fine-tuning.

Meta-training fits one model to the pooled support and query data of each sampled task, with no
inner loop (plain multi-task regression or classification). At test time it is fine-tuned on the
support set with the same inner SGD steps as MAML, so the comparison isolates what meta-learning adds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metaloop.algorithms.maml import MAML
from metaloop.core.inner import ParamDict


def _concat(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        return {k: _concat(a[k], b[k]) for k in a}
    return torch.cat([a, b])


class Pretrain(MAML):
    """Multi-task pretraining baseline; ``adapt`` fine-tunes like first-order MAML."""

    batched_path = False  # its outer loss concatenates a task's support and query

    reads = tuple(name for name in MAML.reads if name != "first_order")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["first_order"] = True
        super().__init__(*args, **kwargs)

    def outer_loss(self, params: ParamDict, support: tuple[Any, Tensor], query: tuple[Any, Tensor]) -> Tensor:
        x = _concat(support[0], query[0])
        y = torch.cat([support[1], query[1]])
        return self.loss(params, (x, y))
