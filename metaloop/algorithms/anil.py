"""ANIL: Almost No Inner Loop.

Raghu, Raghu, Bengio and Vinyals, "Rapid Learning or Feature Reuse? Towards Understanding the
Effectiveness of MAML", ICLR 2020 (arXiv:1909.09157). MAML whose inner loop adapts only the head (the
final layer); the body is still meta-learned by the outer loop, through the head's adaptation.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from metaloop.algorithms.base import LossFn
from metaloop.algorithms.maml import MAML


class ANIL(MAML):
    """MAML with ``adapt="head"`` by default (any other ``adapt`` spec is honoured)."""

    needs_head = True

    def __init__(self, model: nn.Module, loss_fn: LossFn, **kwargs: Any) -> None:
        if kwargs.get("adapt", "all") == "all":
            kwargs["adapt"] = "head"
        super().__init__(model, loss_fn, **kwargs)
