"""A memo of per-example embeddings, for evaluating the metric heads (ProtoNet, MetaOptNet) and ANIL.

Their test-time ``adapt`` never changes the embedding network (ANIL's: the body under its head): every
episode embeds its support and query examples with the same meta-parameters. Over 600–1000 test episodes
the same examples come back again and again (a test split of a few thousand texts feeds 60,000
embeddings), so the evaluation embeds each distinct example once. A hit needs the same example bytes
*and* the same parameter tensors (storage and version), so an embedding under other parameters is never
returned.

It is only correct where an example's embedding does not depend on the rest of its batch: not with
BatchNorm in transductive mode (see :meth:`~metaloop.algorithms.base.MetaLearner.memoize_embeddings`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

import torch
from torch import Tensor


class EmbeddingMemo:
    """``memo(params, x, compute)``: ``compute(x)`` row by row, each distinct (params, row) computed once."""

    def __init__(self) -> None:
        self.table: dict[tuple, Tensor] = {}
        self.computed = 0  # examples actually embedded (for tests and curiosity)

    def __call__(self, params: Mapping[str, Tensor], x: Tensor, compute: Callable[[Tensor], Tensor]) -> Tensor:
        version = tuple((v.data_ptr(), v._version, tuple(v.shape)) for v in params.values())
        rows = x.detach().reshape(x.shape[0], -1).cpu().contiguous().numpy()
        keys = [(version, hashlib.blake2b(r.tobytes(), digest_size=16).digest()) for r in rows]
        todo: dict[tuple, int] = {}
        for i, key in enumerate(keys):
            if key not in self.table and key not in todo:
                todo[key] = i
        if todo:
            with torch.no_grad():
                z = compute(x[list(todo.values())])
            for j, key in enumerate(todo):
                self.table[key] = z[j]
            self.computed += len(todo)
        return torch.stack([self.table[key] for key in keys])
