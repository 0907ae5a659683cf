"""A Gaussian policy: an MLP for the action's mean and a learned, state-independent log standard deviation.

As in Finn et al. 2017 (§5.3) and Duan et al. 2016: ``a ~ N(μ_θ(s), diag(exp(2 log σ)))``, ``μ_θ`` an MLP (two
hidden layers of 100 ReLU units by default), ``log σ`` one parameter per action dimension (initial ``log_std``); ``activation`` ``"relu"`` (the MAML paper's
§5.3) or ``"tanh"`` (rllab's default).
An ordinary ``nn.Module``: the inner loop adapts it through ``functional_call`` like any other model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


class GaussianMLP(nn.Module):
    """``forward(obs [..., obs_dim]) -> mean [..., act_dim]``; ``log_std`` is a parameter ``[act_dim]``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (100, 100), log_std: float = 0.0,
                 activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        layers: list[nn.Module] = []
        width = obs_dim
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        layers.append(nn.Linear(width, act_dim))
        self.net = nn.Sequential(*layers)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std)))

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs)


def mean_action(policy: nn.Module, params: Mapping[str, Tensor], obs: Tensor) -> Tensor:
    """``μ_θ(s)`` under ``params``: ``[..., act_dim]``."""
    return functional_call(policy, dict(params), (obs,))


def log_prob(policy: nn.Module, params: Mapping[str, Tensor], obs: Tensor, actions: Tensor) -> Tensor:
    """``log π(a | s)`` under ``params`` (summed over action dimensions): ``[...]``."""
    mean = mean_action(policy, params, obs)
    log_std = params["log_std"]
    z = (actions - mean) / torch.exp(log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def act(policy: nn.Module, params: Mapping[str, Tensor], obs: Tensor, noise: Tensor) -> Tensor:
    """The action ``μ(s) + σ · noise`` for standard normal ``noise`` of the action's shape (drawn by the caller, so
    that a task's samples come from its own generator)."""
    return mean_action(policy, params, obs) + torch.exp(params["log_std"]) * noise
