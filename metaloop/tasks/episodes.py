"""Seeded N-way K-shot episodes over any labelled dataset.

The episode protocol of Vinyals et al. 2016 ("Matching Networks for One Shot Learning", §4) as used by
MAML (Finn et al. 2017, §5.2) and Prototypical Networks (Snell et al. 2017, §3.1): an episode draws N
classes at random, then K support and Q query examples of each class, without replacement, and
relabels the N classes ``0 … N − 1`` in a random order, so that a label means nothing across episodes.

Like :mod:`metaloop.tasks.sinusoid`, episode ``i`` is drawn from its own ``torch.Generator`` seeded by
``(seed, split, i)`` alone: it is the same in every run, process and DataLoader worker, and the global
RNG is never touched.

Meta-training and meta-testing with different ways or shots (for example ProtoNets' 60-way training
for 5-way testing) is simply two samplers, usually over two datasets::

    train_tasks = EpisodicTasks(omniglot_split("train"), ways=60, shots=1, queries=5, split="train")
    test_tasks = EpisodicTasks(omniglot_split("test"), ways=5, shots=1, queries=15, split="test", seed=1)

The labelled dataset is any object with

- ``labels`` (or torchvision's ``targets``): a sequence or 1-D tensor of ``n`` integer class ids, and
- either ``images``: a tensor ``[n, ...]`` (the fast path: an episode is one indexing operation), or
  ``__getitem__(i)`` returning example ``i`` as a tensor (or a tuple whose first element is one, as
  torchvision datasets return ``(x, y)``).

``uint8`` examples become ``float32`` in ``[0, 1]``; other dtypes are passed through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Sized
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from metaloop.data.labelled import to_float
from metaloop.errors import MetaloopError
from metaloop.tasks.base import TaskBatch, TaskStream


@runtime_checkable
class LabelledDataset(Protocol):
    """What :class:`EpisodicTasks` samples from: ``labels`` plus ``images`` or ``__getitem__``."""

    labels: Sequence[int] | Tensor

    def __getitem__(self, index: int) -> Any: ...


def _labels_of(dataset: Any) -> Tensor:
    raw = getattr(dataset, "labels", None)
    if raw is None:
        raw = getattr(dataset, "targets", None)
    if raw is None:
        raise MetaloopError(
            f"EpisodicTasks: the dataset ({type(dataset).__name__}) has no 'labels' attribute"
        )
    try:
        labels = torch.as_tensor(raw)
    except (TypeError, ValueError, RuntimeError) as e:
        raise MetaloopError(f"EpisodicTasks: dataset.labels is not a sequence of integers ({e})") from e
    if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise MetaloopError(
            f"EpisodicTasks: dataset.labels must be a 1-D sequence of integer class ids, "
            f"got dtype {labels.dtype} and shape {tuple(labels.shape)}"
        )
    return labels.to(torch.int64)


def _positive(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MetaloopError(f"EpisodicTasks: {name} must be an integer >= {minimum}, got {value!r}")
    return value


class EpisodicTasks(TaskStream):
    """An indexable, seeded stream of N-way K-shot episodes (a ``torch.utils.data.Dataset`` of tasks).

    Args:
        dataset: a labelled dataset (see the module docstring).
        ways: classes per episode (N).
        shots: support examples per class (K).
        queries: query examples per class (Q), disjoint from the support examples.
        seed: the stream's seed.
        split: ``"train"``, ``"val"`` or ``"test"``: independent streams for the same seed.
        length: the dataset's length (the stream itself is unbounded).
        transform: applied to the stacked examples ``[n, ...]`` of the support and of the query
            after the ``uint8`` → float conversion (for example a normalization). It should be
            deterministic: randomness from the global RNG would break the stream's determinism.

    ``tasks[i]`` is one episode without the task dimension: ``support_x [ways·shots, ...]``,
    ``support_y [ways·shots]`` (``int64``, labels ``0 … ways − 1`` in class-major order: the ``shots``
    examples of class 0 first, then class 1, …), ``query_x [ways·queries, ...]`` and ``query_y`` in the
    same order; ``info["classes"]`` holds the dataset's class id behind each episode label.
    :meth:`batch` and :func:`~metaloop.tasks.base.collate_tasks` give ``[tasks, ...]`` tensors.

    Raises:
        MetaloopError: fewer classes than ``ways``, or a class with fewer than ``shots + queries``
            examples (one line naming the field and the class).
    """

    def __init__(
        self,
        dataset: LabelledDataset | Any,
        ways: int,
        shots: int,
        queries: int,
        *,
        seed: int = 0,
        split: str = "train",
        length: int = 2**31 - 1,
        transform: Callable[[Tensor], Tensor] | None = None,
    ):
        self.ways = _positive("ways", ways, 1)
        self.shots = _positive("shots", shots, 1)
        self.queries = _positive("queries", queries, 0)
        super().__init__(seed=seed, split=split, length=_positive("length", length, 1))
        self.dataset, self.transform = dataset, transform

        labels = _labels_of(dataset)
        size = len(dataset) if isinstance(dataset, Sized) else None
        if size is not None and size != labels.shape[0]:
            raise MetaloopError(
                f"EpisodicTasks: dataset.labels has {labels.shape[0]} entries but the dataset has {size}"
            )
        images = getattr(dataset, "images", None)
        if isinstance(images, Tensor) and images.shape[0] != labels.shape[0]:
            raise MetaloopError(
                f"EpisodicTasks: dataset.images has {images.shape[0]} rows "
                f"but dataset.labels has {labels.shape[0]}"
            )
        self._images: Tensor | None = images if isinstance(images, Tensor) else None

        # The examples of class c are _order[_offsets[c] : _offsets[c] + _counts[c]] (in index order).
        self.class_ids, self._counts = torch.unique(labels, sorted=True, return_counts=True)
        self._order = torch.argsort(labels, stable=True)
        self._offsets = torch.cumsum(self._counts, 0) - self._counts
        if self.class_ids.numel() < ways:
            raise MetaloopError(
                f"EpisodicTasks: ways={ways} but the dataset has only {self.class_ids.numel()} classes"
            )
        need = shots + queries
        small = torch.nonzero(self._counts < need).flatten()
        if small.numel():
            c = int(small[0])
            raise MetaloopError(
                f"EpisodicTasks: shots + queries = {shots} + {queries} = {need} but class "
                f"{int(self.class_ids[c])} has only {int(self._counts[c])} examples "
                f"({small.numel()} of {self.class_ids.numel()} classes are too small)"
            )

    def _draw(self, index: int) -> tuple[Tensor, Tensor]:
        """Episode ``index``: positions of its classes in :attr:`class_ids` ``[ways]`` and the
        dataset indices of its examples ``[ways, shots + queries]`` (support first in each row)."""
        if not 0 <= index < self.length:
            raise IndexError(f"episode {index} out of range for {self.length} episodes")
        g = self.generator(index)
        chosen = torch.randperm(self.class_ids.numel(), generator=g)[: self.ways]
        counts = self._counts[chosen]
        width = int(counts.max())
        # A random permutation of each class's examples: sort uniform keys, padding sorts last.
        keys = torch.rand(self.ways, width, generator=g)
        keys.masked_fill_(torch.arange(width)[None, :] >= counts[:, None], 2.0)
        picks = torch.argsort(keys, dim=1, stable=True)[:, : self.shots + self.queries]
        return chosen, self._order[self._offsets[chosen][:, None] + picks]

    def _examples(self, indices: Tensor) -> Tensor:
        """The examples at ``indices`` (any shape), as ``[*indices.shape, ...]``."""
        flat = indices.reshape(-1)
        if self._images is not None:
            x = torch.index_select(self._images, 0, flat)
        else:
            items = []
            for i in flat.tolist():
                item = self.dataset[i]
                if isinstance(item, (tuple, list)):
                    item = item[0]
                items.append(torch.as_tensor(item))
            x = torch.stack(items)
        x = to_float(x)
        if self.transform is not None:
            x = self.transform(x)
        return x.reshape(*indices.shape, *x.shape[1:])

    def batch(self, start: int, count: int) -> TaskBatch:
        """Episodes ``start … start + count − 1`` as one batch (the same episodes as ``tasks[i]``)."""
        draws = [self._draw(i) for i in range(start, start + count)]
        classes = torch.stack([c for c, _ in draws])
        indices = torch.stack([ix for _, ix in draws])  # [count, ways, shots + queries]
        k, q, n = self.shots, self.queries, self.ways
        support = indices[:, :, :k].reshape(count, n * k)
        query = indices[:, :, k:].reshape(count, n * q)
        labels = torch.arange(n)
        return TaskBatch(
            self._examples(support),
            labels.repeat_interleave(k).expand(count, n * k).clone(),
            self._examples(query),
            labels.repeat_interleave(q).expand(count, n * q).clone(),
            info={"classes": self.class_ids[classes]},
        )

    def indices(self, index: int) -> tuple[Tensor, Tensor]:
        """The dataset indices of episode ``index``: support ``[ways·shots]`` and query ``[ways·queries]``."""
        _, ix = self._draw(index)
        return ix[:, : self.shots].reshape(-1), ix[:, self.shots :].reshape(-1)

    def __repr__(self) -> str:
        return (
            f"EpisodicTasks({self.ways}-way {self.shots}-shot, {self.queries} queries, "
            f"{self.class_ids.numel()} classes, seed={self.seed}, split={self.split!r})"
        )
