"""Batches of tasks as tensors: ``[tasks, examples, ...]`` for support and query; the seed of each task; the
skeleton of a task stream.

Every task stream (:class:`TaskStream`) draws task ``i`` of a split from a generator seeded by :func:`task_seed`
``(seed, split, i)``, never from a global RNG: a resumed run and any number of processes see the same tasks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from metaloop.errors import MetaloopError


#: The splits a task seed tells apart.
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def task_seed(seed: int, split: str, index: int) -> int:
    """A 63-bit seed for one task, distinct across seeds, splits and indices."""
    return ((seed * 1_000_003 + SPLIT_IDS[split]) * 0x9E3779B97F4A7C15 + index) % (2**63 - 1)


def map_tensors(fn: Callable[[Tensor], Tensor], value: Any) -> Any:
    """Apply ``fn`` to a tensor, or to every tensor in a (nested) dict, list or tuple."""
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_tensors(fn, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(fn, v) for v in value)
    return value


@dataclass
class TaskBatch:
    """A meta-batch: support ``(x, y)`` and query ``(x, y)``, each with a leading task dimension.

    ``x`` may be a tensor ``[tasks, n, ...]`` or a dict of such tensors (for text models). ``info``
    carries per-task metadata (for example a sinusoid's amplitude and phase) for plots; it is not
    used by the algorithms.
    """

    support_x: Any
    support_y: Tensor
    query_x: Any
    query_y: Tensor
    info: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.support_y.shape[0])

    @property
    def support(self) -> tuple[Any, Tensor]:
        return self.support_x, self.support_y

    @property
    def query(self) -> tuple[Any, Tensor]:
        return self.query_x, self.query_y

    def task(self, i: int) -> tuple[tuple[Any, Tensor], tuple[Any, Tensor]]:
        """The ``i``-th task as ``(support, query)``, without the task dimension."""
        pick = lambda t: t[i]  # noqa: E731
        return (
            (map_tensors(pick, self.support_x), self.support_y[i]),
            (map_tensors(pick, self.query_x), self.query_y[i]),
        )

    def slice_task(self, i: int) -> "TaskBatch":
        """Task ``i`` as a batch without the task dimension (an item of a dataset of tasks)."""
        pick = lambda t: t[i]  # noqa: E731
        return TaskBatch(*(map_tensors(pick, v) for v in self.tensors()), info=map_tensors(pick, self.info))

    def slice(self, start: int, stop: int) -> "TaskBatch":
        cut = lambda t: t[start:stop]  # noqa: E731
        return TaskBatch(*(map_tensors(cut, v) for v in self.tensors()), info=map_tensors(cut, self.info))

    def tensors(self) -> tuple[Any, Tensor, Any, Tensor]:
        return self.support_x, self.support_y, self.query_x, self.query_y

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "TaskBatch":
        def move(t: Tensor) -> Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device)

        return TaskBatch(*(map_tensors(move, v) for v in self.tensors()), info=self.info)


def stack_tensors(values: list[Any]) -> Any:
    """Stack a list of tensors, or of (nested) dicts or tuples of tensors, along a new dim 0."""
    first = values[0]
    if isinstance(first, Tensor):
        return torch.stack(values)
    if isinstance(first, dict):
        return {k: stack_tensors([v[k] for v in values]) for k in first}
    if isinstance(first, tuple):
        return tuple(stack_tensors([v[i] for v in values]) for i in range(len(first)))
    raise TypeError(f"cannot stack values of type {type(first).__name__}")


def collate_tasks(tasks: list[TaskBatch]) -> TaskBatch:
    """Stack single tasks (each without the task dimension) into one batch.

    Usable as the ``collate_fn`` of a ``torch.utils.data.DataLoader`` over a dataset of tasks.
    """
    fields = zip(*(t.tensors() for t in tasks), strict=True)
    return TaskBatch(*(stack_tensors(list(f)) for f in fields), info=stack_tensors([t.info for t in tasks]))


class TaskStream(Dataset):
    """The skeleton of every seeded task stream (a ``torch.utils.data.Dataset`` of tasks).

    Task ``index`` of ``split`` is drawn from :meth:`generator` ``(index)``, seeded by ``task_seed(seed, split,
    index)``; a subclass defines :meth:`batch` ``(start, count)``, tasks ``start … start + count − 1`` stacked as one
    :class:`TaskBatch`, and ``stream[i]`` is task ``i`` without the task dimension. The stream is unbounded;
    ``length`` is its length as a dataset. ``splits``: the splits a subclass has (a class attribute).
    """

    splits: tuple[str, ...] = tuple(SPLIT_IDS)

    def __init__(self, *, seed: int = 0, split: str = "train", length: int = 2**31 - 1) -> None:
        if split not in self.splits:
            raise MetaloopError(f"{type(self).__name__}: split must be one of {', '.join(self.splits)}, got {split!r}")
        self.seed, self.split, self.length = int(seed), split, int(length)

    def __len__(self) -> int:
        return self.length

    def generator(self, index: int) -> torch.Generator:
        """The generator of task ``index`` of this stream's seed and split."""
        return torch.Generator().manual_seed(task_seed(self.seed, self.split, index))

    def batch(self, start: int, count: int) -> TaskBatch:
        raise NotImplementedError

    def __getitem__(self, index: int) -> TaskBatch:
        return self.batch(index, 1).slice_task(0)
