"""Meta-SGD on a policy (Li, Zhou, Chen and Li 2017, arXiv:1707.09835; its §4.3 reinforcement-learning
experiments): MAML-RL whose inner policy-gradient step ``θ' = θ + α ∘ ∇_θ J(θ)`` has a step size ``α`` of the
shape of ``θ``, initialized to ``inner_lr`` and meta-learned with ``θ`` through the inner step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metaloop.algorithms.maml_rl import MAMLRL
from metaloop.errors import MetaloopError


class MetaSGDRL(MAMLRL):
    """MAML-RL with learned per-parameter inner step sizes ``self.lrs`` (meta-parameters)."""

    reads = tuple(r for r in MAMLRL.reads if r != "test_inner_lr")  # it learns its step sizes

    def __init__(self, policy: nn.Module, **kwargs: Any) -> None:
        if kwargs.get("test_inner_lr") is not None:
            raise MetaloopError("option 'test_inner_lr': algorithm 'metasgd' has no fixed inner step size "
                                "(Meta-SGD meta-learns one per parameter)")
        super().__init__(policy, **kwargs)
        named = dict(policy.named_parameters())
        self.lrs = nn.ParameterDict({n.replace(".", "__"): nn.Parameter(torch.full_like(named[n].detach(),
                                                                                         self.inner_lr))
                                     for n in self.adapted_names})

    def step_sizes(self) -> dict[str, Tensor]:
        return {n: self.lrs[n.replace(".", "__")] for n in self.adapted_names}
