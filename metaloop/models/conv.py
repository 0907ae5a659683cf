"""The Conv-4 backbone of few-shot learning (Vinyals et al. 2016; Finn et al. 2017, §5.2).

Four blocks of ``Conv2d(3×3, padding 1) → BatchNorm2d → ReLU → MaxPool2d(2)``, then a linear head.
On 28×28 Omniglot images the feature map goes 28 → 14 → 7 → 3 → 1, so the head sees ``hidden``
features; on 84×84 images it sees ``hidden · 5 · 5``.
"""

from __future__ import annotations

from torch import nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


def Conv4(in_channels: int, ways: int | None, *, hidden: int = 64, image_size: int = 28) -> nn.Sequential:
    """Conv-4 as a plain ``nn.Sequential``: with a ``ways``-way linear head as its last layer, or, with
    ``ways=None``, the embedding network alone (``hidden · s · s`` features, ``s = image_size // 16``)."""
    layers: list[nn.Module] = [
        conv_block(in_channels, hidden),
        conv_block(hidden, hidden),
        conv_block(hidden, hidden),
        conv_block(hidden, hidden),
        nn.Flatten(),
    ]
    if ways is not None:
        size = image_size // 16
        layers.append(nn.Linear(hidden * size * size, ways))
    return nn.Sequential(*layers)
