"""Labelled examples stacked in one tensor: the form the episode sampler reads fastest.

One container serves images (``uint8 [n, channels, height, width]``), feature vectors (``float32 [n, d]``) and
packed tokens (``int64 [n, 2, L]``): :class:`~metaloop.tasks.episodes.EpisodicTasks` draws an episode from it with
one indexing operation. Texts before tokenization are :class:`~metaloop.data.texts.LabelledTexts`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from metaloop.errors import MetaloopError


def to_float(x: Tensor) -> Tensor:
    """``uint8`` images as ``float32`` in ``[0, 1]``; other tensors unchanged."""
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


class LabelledExamples(Dataset):
    """Examples with integer class labels.

    Attributes:
        images: the examples, ``[n, ...]`` (images, feature vectors or packed tokens; the attribute is the one
            :class:`~metaloop.tasks.episodes.EpisodicTasks` indexes directly, whatever the examples are).
        labels: ``int64 [n]``, class ids ``0 … len(classes) − 1``.
        classes: the name of each class id (default: the ids as strings).

    ``dataset[i]`` is example ``i``, ``uint8`` images as ``float32`` in ``[0, 1]``.
    """

    #: What an example is called in messages and the ``repr``.
    noun = "examples"

    def __init__(self, images: Tensor, labels: Tensor, classes: Sequence[str] | None = None) -> None:
        if images.ndim < 2 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise MetaloopError(f"{self.noun} must be [n, ...] and labels [n], got {tuple(images.shape)} and "
                                f"{tuple(labels.shape)}")
        labels = labels.to(torch.int64)
        if classes is None:
            classes = [str(c) for c in range(int(labels.max()) + 1 if labels.numel() else 0)]
        self.images, self.labels, self.classes = images, labels, list(classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> Tensor:
        return to_float(self.images[index])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        shape = "×".join(str(s) for s in self.images.shape[1:])
        return f"{type(self).__name__}({len(self)} {self.noun} of {shape}, {self.num_classes} classes)"


__all__ = ["LabelledExamples", "to_float"]
