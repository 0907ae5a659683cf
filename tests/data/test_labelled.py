"""One container for labelled examples stacked in a tensor (images, feature vectors, packed tokens), which the
episode sampler reads with one indexing operation."""

from __future__ import annotations

import pytest
import torch

from metaloop.data.images import LabelledImages
from metaloop.data.labelled import LabelledExamples
from metaloop.errors import MetaloopError
from metaloop.tasks.episodes import EpisodicTasks


@pytest.mark.parametrize("examples", [
    torch.randint(0, 256, (12, 1, 4, 4), dtype=torch.uint8),  # images
    torch.randn(12, 6),  # feature vectors
    torch.randint(0, 50, (12, 2, 7)),  # packed tokens
])
def test_every_kind_of_example_samples_episodes(examples):
    data = LabelledExamples(examples, torch.arange(4).repeat(3))
    assert data.classes == ["0", "1", "2", "3"] and data.num_classes == 4 and len(data) == 12
    batch = EpisodicTasks(data, ways=2, shots=1, queries=1, seed=0).batch(0, 3)
    assert batch.support_x.shape[:2] == (3, 2) and batch.support_x.shape[2:] == examples.shape[1:]
    if examples.dtype == torch.uint8:
        assert batch.support_x.dtype == torch.float32 and float(batch.support_x.max()) <= 1.0
    else:
        assert batch.support_x.dtype == examples.dtype
    assert repr(data) == f"LabelledExamples(12 examples of {'×'.join(map(str, examples.shape[1:]))}, 4 classes)"


def test_images_are_labelled_examples_of_four_dimensions():
    images = LabelledImages(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 1]), ["a", "b"])
    assert isinstance(images, LabelledExamples) and repr(images) == "LabelledImages(3 images of 1×2×2, 2 classes)"
    assert images[0].dtype == torch.float32
    with pytest.raises(MetaloopError, match=r"images must be \[n, channels, height, width\]"):
        LabelledImages(torch.zeros(3, 4), torch.tensor([0, 1, 1]), ["a", "b"])


@pytest.mark.parametrize(("examples", "labels"), [
    (torch.zeros(3), torch.zeros(3)),  # one number per example is no example
    (torch.zeros(3, 2), torch.zeros(4)),
    (torch.zeros(3, 2), torch.zeros(3, 1)),
])
def test_bad_shapes_are_refused(examples, labels):
    with pytest.raises(MetaloopError, match=r"examples must be \[n, \.\.\.\] and labels \[n\]"):
        LabelledExamples(examples, labels)
