"""A plain multi-layer perceptron (the sinusoid network of Finn et al. 2017 is ``MLP(1, [40, 40], 1)``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def MLP(in_features: int, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    """``Linear → ReLU`` for each hidden width, then a final ``Linear``; PyTorch's default init."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)
