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
        squared = (z.unsqueeze(1) - state.prototypes.unsqueeze(0)).pow(2).sum(-1)  # [queries, n]
        return mask_logits(-squared, state.present)
