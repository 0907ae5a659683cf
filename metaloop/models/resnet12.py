"""ResNet-12, the backbone of MetaOptNet (Lee et al., CVPR 2019; their ``models/ResNet12_embedding.py``).

Four residual blocks with 64, 160, 320 and 640 channels. Each block is three
``Conv3×3 → BatchNorm → LeakyReLU(0.1)`` layers (the last without its activation before the sum), a
``Conv1×1 → BatchNorm`` shortcut, the sum, LeakyReLU(0.1), then ``MaxPool2d(2)``. On 84×84 inputs the
output is 640 × 5 × 5, flattened to 16,000 features (as in MetaOptNet). Differences from their code:
DropBlock is replaced by optional plain dropout after each block (``drop_rate``, default 0), and there
is no average pooling, matching their mini-ImageNet setting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)


class ResidualBlock(nn.Module):
    """One ResNet-12 block: three 3×3 convolutions with a 1×1 shortcut, then 2×2 max-pooling."""

    def __init__(self, in_channels: int, out_channels: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(in_channels, out_channels), nn.BatchNorm2d(out_channels)
        self.conv2, self.bn2 = _conv3x3(out_channels, out_channels), nn.BatchNorm2d(out_channels)
        self.conv3, self.bn3 = _conv3x3(out_channels, out_channels), nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.act(out + self.shortcut(x))
        return self.dropout(self.pool(out))

    def batched_forward(self, child: Callable[[str, Tensor], Tensor], x: Tensor) -> Tensor:
        """The same on metaloop's batched path (:mod:`metaloop.core.batched`; ``child(name, h)`` runs a child);
        pooled before the activation, which is strictly increasing, so the result and its gradients are the same."""
        out = child("act", child("bn1", child("conv1", x)))
        out = child("act", child("bn2", child("conv2", out)))
        out = child("bn3", child("conv3", out))
        return child("dropout", child("act", child("pool", out + child("shortcut", x))))


class ResNet12(nn.Module):
    """ResNet-12 feature extractor; ``ways`` adds a linear head (for the gradient-based algorithms)."""

    def __init__(
        self,
        in_channels: int = 3,
        ways: int | None = None,
        *,
        channels: Sequence[int] = (64, 160, 320, 640),
        image_size: int = 84,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        blocks, width = [], in_channels
        for c in channels:
            blocks.append(ResidualBlock(width, c, drop_rate))
            width = c
        self.features = nn.Sequential(*blocks, nn.Flatten())
        size = image_size // 2 ** len(channels)
        self.out_features = width * size * size
        self.head = nn.Linear(self.out_features, ways) if ways is not None else None

    def forward(self, x: Tensor) -> Tensor:
        z = self.features(x)
        return self.head(z) if self.head is not None else z

    def batched_forward(self, child: Callable[[str, Tensor], Tensor], x: Tensor) -> Tensor:
        """:meth:`forward` on metaloop's batched path (see :meth:`ResidualBlock.batched_forward`)."""
        z = child("features", x)
        return child("head", z) if self.head is not None else z

