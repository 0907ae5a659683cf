"""Lake et al.'s Omniglot one-shot benchmark (Lake, Salakhutdinov & Tenenbaum 2015, Science 350(6266)) as tasks:
20 runs of 20-way 1-shot classification, read by :mod:`metaloop.data.omniglot`."""

from __future__ import annotations

import os

import torch

from metaloop.data.labelled import to_float
from metaloop.data.omniglot import read_runs, runs_archive
from metaloop.tasks.base import TaskBatch


def lake_runs(root: str | os.PathLike[str] | None = None) -> TaskBatch:
    """Lake et al.'s 20 one-shot runs as one batch of 20 tasks (20-way 1-shot, 20 queries).

    ``support_x [20, 20, 1, 28, 28]`` are the ``training/classKK.png`` images with labels ``KK − 1``
    (so ``support_y[t] = 0 … 19``); ``query_x`` are ``test/item01.png … item20.png`` with the labels of
    ``class_labels.txt``. Float images in ``[0, 1]``, preprocessed as the other Omniglot images;
    ``info["run"]`` is the run number. The zip is small and read directly (no extraction).

    Note that the runs' 200 characters come from the evaluation alphabets, some of which the Vinyals
    *training* split contains: see :func:`~metaloop.data.omniglot.lake_run_characters` to exclude them from training.
    """
    support, query, query_y, runs = read_runs(runs_archive(root))
    tasks, ways = support.shape[:2]
    support_y = torch.arange(ways).expand(tasks, ways).clone()
    return TaskBatch(
        to_float(support[:, :, None]), support_y, to_float(query[:, :, None]), query_y, info={"run": runs}
    )


__all__ = ["lake_runs"]
