"""Test cases shared by the solver and MetaOptNet tests: clustered few-shot data in float64."""

from __future__ import annotations

import torch


def clustered(ways: int, shots: int, d: int, seed: int, queries: int = 4, sep: float = 0.7):
    """Support ``X`` (shuffled labels), labels ``y``, one-hot ``Y`` with the class bound n, queries ``Q``."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(ways).repeat_interleave(shots)[torch.randperm(ways * shots, generator=gen)]
    means = sep * torch.randn(ways, d, generator=gen, dtype=torch.float64)
    X = means[y] + torch.randn(ways * shots, d, generator=gen, dtype=torch.float64)
    Q = torch.randn(queries, d, generator=gen, dtype=torch.float64)
    Y = (y.unsqueeze(-1) == torch.arange(ways * shots)).double()
    return X, y, Y, Q


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())
