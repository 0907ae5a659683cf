"""ANIL on a policy (Raghu, Raghu, Bengio and Vinyals, "Rapid Learning or Feature Reuse?", ICLR 2020,
arXiv:1909.09157): MAML-RL whose inner step ``θ'_head = θ_head + α ∇_head J(θ)`` adapts only the policy's last layer
(the mean head); ``log_std`` and the body are meta-learned only."""

from __future__ import annotations

from typing import Any

from torch import nn

from metaloop.algorithms.maml_rl import MAMLRL


class ANILRL(MAMLRL):
    """MAML-RL with ``adapt="head"`` by default (any other spec is honoured)."""

    def __init__(self, policy: nn.Module, **kwargs: Any) -> None:
        if kwargs.get("adapt", "all") == "all":
            kwargs["adapt"] = "head"
        super().__init__(policy, **kwargs)
