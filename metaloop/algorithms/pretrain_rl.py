"""The pretrained-policy baseline of Finn et al. 2017 (§5.3, "pretrained"): one policy trained on all training tasks
at once, by the policy gradient of the mean return over tasks (no inner step, Adam), then fine-tuned at test time
with MAML-RL's inner step ``θ' = θ + α ∇_θ J(θ)``. At its initialization (no training): the "random initialization"
baseline."""

from __future__ import annotations

from typing import Any

from torch import nn

from metaloop.algorithms.maml_rl import MAMLRL


class PretrainRL(MAMLRL):
    """MAML-RL's meta-objective with no inner step inside it (``train_steps = 0``)."""

    reads = ("inner_lr", "test_inner_lr", "adapt")

    def __init__(self, policy: nn.Module, **kwargs: Any) -> None:
        super().__init__(policy, **kwargs)
        self.train_steps = 0
