"""Class labels of an episode with a static upper bound on the number of ways.

The metric and closed-form heads (ProtoNets, MetaOptNet) build one column per class. The number of
ways N may differ between meta-training and testing (ProtoNets train 60-way and test 5-way on
Omniglot), and under ``torch.func.vmap`` shapes must not depend on the data. So N is never a
constructor argument and never read from the labels: with ``n`` support examples labelled
``0..N-1`` (N ≤ n), every head works with ``n`` class columns, a static bound, and the columns of
classes that have no support example are masked to ``-inf`` logits. ``F.cross_entropy`` with query
labels in ``0..N-1`` and ``argmax`` accuracy are then exactly those of the N-way problem, since a
``-inf`` logit has probability 0 and gradient 0.

(Label smoothing over the logits' columns would put mass on the masked classes and give an infinite
loss: smooth over the N real classes only, if at all.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from metaloop.core.context import is_vectorized
from metaloop.errors import MetaloopError


def one_hot_bound(y: Tensor, dtype: torch.dtype) -> Tensor:
    """``[n, n]`` one-hot encoding of ``n`` labels in ``0..n-1`` (the bound is ``n = len(y)``).

    Written as a comparison with ``arange`` rather than ``F.one_hot``, which checks the label range
    with a data-dependent ``.item()`` that ``vmap`` cannot run. Outside ``vmap`` the labels are checked.
    """
    n = y.shape[0]
    if not is_vectorized() and n > 0 and (int(y.min()) < 0 or int(y.max()) >= n):
        raise MetaloopError(
            f"support labels must lie in 0..N-1 with N ≤ {n} (the number of support examples), "
            f"got labels from {int(y.min())} to {int(y.max())}"
        )
    return (y.unsqueeze(-1) == torch.arange(n, device=y.device)).to(dtype)


def mask_logits(logits: Tensor, present: Tensor) -> Tensor:
    """``logits`` with the columns of absent classes (``present`` is False) set to ``-inf``."""
    return logits.masked_fill(~present, float("-inf"))
