"""LEO's network (Rusu et al. 2019, "Meta-Learning with Latent Embedding Optimization", ICLR 2019; DeepMind's
``model.py``): the encoder ``[L, d]``, the relation network (three ``2L × 2L`` layers), the decoder ``[2d, L]``
and the two learned step-size vectors, with the code's Glorot initialization drawn from a seeded generator. The
algorithm that runs it functionally is :class:`metaloop.algorithms.leo.LEO`.
"""

from __future__ import annotations

import torch
from torch import nn

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One round of SplitMix64: a bijective 64-bit mix (Steele, Lea and Flood 2014)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def stream_seed(seed: int, iteration: int) -> int:
    """The generator seed of meta-training iteration ``iteration`` (a 63-bit mix of both numbers)."""
    return _splitmix64(_splitmix64(seed & _MASK64) ^ (iteration & _MASK64)) >> 1


class LEONet(nn.Module):
    """LEO's meta-parameters: encoder, relation network, decoder and the two step-size vectors.

    Parameter names (the keys of :meth:`LEO.params`): ``encoder.weight`` ``[L, d]``,
    ``relation.{0,2,4}.weight`` ``[2L, 2L]``, ``decoder.weight`` ``[2d, L]``, ``inner_lr`` ``[L]`` (α),
    ``finetune_lr`` ``[d]`` (η). It has no ``forward``: :class:`LEO` runs it functionally.
    """

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        inner_lr_init: float,
        finetune_lr_init: float,
        *,
        seed: int = 0,
    ) -> None:
        super().__init__()
        d, L = feature_dim, latent_dim
        # skip_init: no default (kaiming) initialization, so building the net draws nothing from the
        # global RNG; the Glorot initialization below draws from a generator seeded by ``seed``.
        self.encoder = nn.utils.skip_init(nn.Linear, d, L, bias=False)
        self.relation = nn.Sequential(
            nn.utils.skip_init(nn.Linear, 2 * L, 2 * L, bias=False),
            nn.ReLU(),
            nn.utils.skip_init(nn.Linear, 2 * L, 2 * L, bias=False),
            nn.ReLU(),
            nn.utils.skip_init(nn.Linear, 2 * L, 2 * L, bias=False),
        )
        self.decoder = nn.utils.skip_init(nn.Linear, L, 2 * d, bias=False)
        self.inner_lr = nn.Parameter(torch.full((L,), float(inner_lr_init)))
        self.finetune_lr = nn.Parameter(torch.full((d,), float(finetune_lr_init)))
        gen = torch.Generator().manual_seed(stream_seed(seed, -1))
        with torch.no_grad():
            for name in self.weight_names():
                nn.init.xavier_uniform_(self.get_parameter(name), generator=gen)

    @staticmethod
    def weight_names() -> tuple[str, ...]:
        """The weight matrices (those under the L2 penalty)."""
        return (
            "encoder.weight", "relation.0.weight", "relation.2.weight", "relation.4.weight", "decoder.weight"
        )


__all__ = ["LEONet", "stream_seed"]
