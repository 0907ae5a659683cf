"""Prototypical Networks.

Snell, Swersky and Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017
(arXiv:1703.05175). With the embedding ``f_φ`` (the user's model), the prototype of class ``k`` is the
mean embedded support point of that class (eq. 1)::

    c_k = (1 / |S_k|) Σ_{(x_i, y_i) ∈ S_k} f_φ(x_i)

and a query ``x`` is classified by a softmax over negative squared Euclidean distances (eq. 2)::

    p_φ(y = k | x) = softmax_k(−‖f_φ(x) − c_k‖²)

The loss is the query cross-entropy ``J(φ) = −log p_φ(y = k | x)`` averaged over the query set
(Algorithm 1), and the meta-gradient is its gradient with respect to φ: there is no inner loop, so
``adapt`` is the same whatever the step count (``adapt_steps`` returns one state per count).

Ways: N is not a constructor argument. The prototypes are computed for a static bound of ``n`` classes
(``n`` = number of support examples) and classes with no support example get ``-inf`` logits (see
:mod:`metaloop.algorithms.labels`), so the same learner trains 20-way and tests 5-way, under both
execution paths. Support and query are embedded by separate forward passes (transductive BatchNorm
normalizes each set with its own statistics, as in MAML's convention).

Memory: the squared distances of eq. 2 are computed as ``‖z‖² − 2 z·c_kᵀ + ‖c_k‖²`` (see
:func:`squared_distances`), a ``[queries, n]`` matrix product, never the ``[queries, n, d]`` differences.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from metaloop.algorithms.base import LossFn, MetaLearner
from metaloop.algorithms.labels import mask_logits, one_hot_bound
from metaloop.core.inner import ParamDict
from metaloop.errors import MetaloopError

DISTANCES: tuple[str, ...] = ("sqeuclidean", "cosine")
#: The temperature of cosine logits (as in Chen et al. 2019, "A Closer Look at Few-shot Classification").
COSINE_SCALE = 10.0


def squared_distances(z: Tensor, centers: Tensor, present: Tensor) -> Tensor:
    """``[len(z), len(centers)]``: ``‖z_i − c_k‖²``, without the ``[len(z), len(centers), d]`` differences.

    The expansion ``‖z_i − m‖² − 2 (z_i − m)·(c_k − m) + ‖c_k − m‖²``, clamped at 0 (rounding can make
    it slightly negative), with ``m`` the mean of the present centers: the distance does not depend on
    ``m``, and shifting by it keeps the expansion from cancelling digits when the embeddings lie far from
    the origin. ``m`` is detached, which changes no gradient (every derivative in ``m`` is zero). The
    gradients in ``z_i`` and ``c_k`` are those of the broadcast formula, ``±2 (z_i − c_k)``, always finite
    (0 where the clamp acts, at a distance that is 0 to rounding).
    """
    weights = present.to(centers.dtype)
    shift = ((weights @ centers) / weights.sum().clamp(min=1)).detach()  # [d]
    z, centers = z - shift, centers - shift
    cross = z @ centers.T  # [queries, n]
    squared = z.pow(2).sum(-1, keepdim=True) - 2 * cross + centers.pow(2).sum(-1)
    return squared.clamp(min=0)


class ProtoState(NamedTuple):
    """A task state: the embedding parameters and the prototypes of the support set."""

    params: ParamDict
    prototypes: Tensor  # [n, d]: row k is c_k (zeros for an absent class)
    present: Tensor  # [n] bool: class k has at least one support example


class ProtoNet(MetaLearner):
    """Prototypical Networks (Snell et al. 2017). See the module docstring.

    Args:
        model: the embedding network ``f_φ``; its output is flattened to ``[examples, d]``.
        loss_fn: applied to the query logits and labels (default ``F.cross_entropy``, the paper's loss).
        distance: ``"sqeuclidean"``, the squared Euclidean distance of the paper, or ``"cosine"``:
            logits ``10·cos(f_φ(x), c_k)`` (nearest-centroid by cosine, the usual frozen-encoder baseline).
        bn_mode, path, chunk_size: see :class:`~metaloop.algorithms.base.MetaLearner`.
    """

    reads = (*MetaLearner.reads, "distance")
    role = "embedding"
    classification_only = True

    def __init__(
        self, model: nn.Module, loss_fn: LossFn = F.cross_entropy, *, distance: str = "sqeuclidean", **kwargs: Any
    ) -> None:
        super().__init__(model, loss_fn, **kwargs)
        if distance not in DISTANCES:
            raise MetaloopError(f"option 'distance': {distance!r} is not one of {', '.join(DISTANCES)}")
        self.distance = distance

    def adapt(self, params: ParamDict, support: tuple[Any, Tensor], *, steps: int | None = None) -> ProtoState:
        x, y = support
        z = self.embed(params, x)
        onehot = one_hot_bound(y, z.dtype)  # [n, n]
        counts = onehot.sum(0)
        # clamp: an absent class gets a zero prototype (masked later) rather than 0/0 = NaN, whose
        # gradient would poison the others even through the mask.
        prototypes = (onehot.T @ z) / counts.clamp(min=1).unsqueeze(-1)
        return ProtoState(params, prototypes, counts > 0)

    def predict(self, state: ProtoState, x: Any) -> Tensor:
        """Logits ``−‖f_φ(x) − c_k‖²`` for every class bound ``k`` (``-inf`` for absent classes)."""
        z = self.embed(state.params, x)
        if self.distance == "cosine":
            cos = F.normalize(z, dim=-1) @ F.normalize(state.prototypes, dim=-1).T
            return mask_logits(COSINE_SCALE * cos, state.present)
        squared = squared_distances(z, state.prototypes, state.present)  # [queries, n]
        return mask_logits(-squared, state.present)
