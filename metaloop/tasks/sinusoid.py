"""Sinusoid regression tasks, the protocol of Finn et al. 2017 (§5.1).

Each task is ``y = A · sin(x − φ)`` with amplitude ``A ~ U[0.1, 5]``, phase ``φ ~ U[0, π]`` and inputs
``x ~ U[−5, 5]`` (the sign of the phase follows the official code; it is immaterial). A task's points
are drawn from a generator seeded by ``(seed, split, index)`` alone, so task ``i`` of a split is the
same in every run, process and DataLoader worker, and no global RNG is touched.
"""

from __future__ import annotations

import math

import torch

from metaloop.tasks.base import TaskBatch, TaskStream, task_seed  # noqa: F401 (task_seed: its former home)

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
INPUT = (-5.0, 5.0)


class SinusoidTasks(TaskStream):
    """An indexable, seeded stream of sinusoid tasks (a ``torch.utils.data.Dataset`` of tasks).

    Args:
        shots: support points per task (K).
        queries: query points per task.
        seed: the stream's seed.
        split: ``"train"``, ``"val"`` or ``"test"``: independent streams.
        length: the dataset's length (the stream itself is unbounded).

    ``dataset[i]`` is one task without the task dimension; :meth:`batch` and
    :func:`~metaloop.tasks.base.collate_tasks` give ``[tasks, points, 1]`` tensors.
    """

    def __init__(self, shots: int, queries: int, *, seed: int = 0, split: str = "train", length: int = 2**31 - 1):
        super().__init__(seed=seed, split=split, length=length)
        self.shots, self.queries = shots, queries

    def _draw(self, index: int) -> torch.Tensor:
        """Uniform ``[0, 1)`` numbers for ``[amplitude, phase, x_1 … x_n]`` of task ``index``."""
        return torch.rand(2 + self.shots + self.queries, generator=self.generator(index))

    def _tasks(self, draws: torch.Tensor) -> TaskBatch:
        def scale(u: torch.Tensor, low_high: tuple[float, float]) -> torch.Tensor:
            return low_high[0] + (low_high[1] - low_high[0]) * u

        amplitude, phase = scale(draws[:, 0], AMPLITUDE), scale(draws[:, 1], PHASE)
        x = scale(draws[:, 2:, None], INPUT)
        y = amplitude[:, None, None] * torch.sin(x - phase[:, None, None])
        k = self.shots
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:], info={"amplitude": amplitude, "phase": phase})

    def batch(self, start: int, count: int) -> TaskBatch:
        """Tasks ``start … start + count − 1`` as one batch (the same tasks as ``dataset[i]``)."""
        return self._tasks(torch.stack([self._draw(i) for i in range(start, start + count)]))
