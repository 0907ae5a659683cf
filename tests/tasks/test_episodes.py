"""The N-way K-shot episode sampler (Vinyals et al. 2016): counts, disjointness, relabelling, seeding."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from metaloop.errors import MetaloopError
from metaloop.tasks.base import TaskBatch, collate_tasks
from metaloop.tasks.episodes import EpisodicTasks
from metaloop.data.images import LabelledImages


class IndexImages:
    """A labelled dataset whose example ``i`` is the float tensor ``[[i]]``: episodes reveal their indices.

    12 classes with ids 3, 6, 9, … (not contiguous), of 10 to 15 examples, shuffled in index order.
    """

    def __init__(self, fast: bool = True):
        g = torch.Generator().manual_seed(123)
        counts = torch.tensor([10, 11, 12, 13, 14, 15] * 2)
        labels = torch.repeat_interleave(torch.arange(12) * 3 + 3, counts)
        self.labels = labels[torch.randperm(len(labels), generator=g)]
        if fast:
            self.images = torch.arange(len(self.labels), dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([[float(i)]])


class TupleItems(IndexImages):
    """torchvision-style: ``targets`` and items ``(x, y)``; no ``images`` tensor (the slow path)."""

    def __init__(self):
        super().__init__(fast=False)
        self.targets = self.labels.tolist()
        del self.labels

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([[float(i)]]), self.targets[i]


def indices(x: torch.Tensor) -> torch.Tensor:
    """The dataset indices of examples of IndexImages (one value each)."""
    return x.flatten().long()


def assert_same(a: TaskBatch, b: TaskBatch) -> None:
    for x, y in zip(a.tensors(), b.tensors()):
        assert torch.equal(x, y)
    assert torch.equal(a.info["classes"], b.info["classes"])


@pytest.mark.parametrize("ways,shots,queries", [(5, 1, 5), (5, 5, 5), (12, 3, 7), (1, 1, 0)])
def test_episode_guarantees(ways, shots, queries):
    """Exact shots and queries per class, class-major labels 0..N-1, support and query disjoint,
    each label standing for one original class (info["classes"])."""
    data = IndexImages()
    tasks = EpisodicTasks(data, ways, shots, queries, seed=1)
    batch = tasks.batch(0, 50)
    assert batch.support_x.shape == (50, ways * shots, 1, 1)
    assert batch.query_x.shape == (50, ways * queries, 1, 1)
    assert batch.support_y.dtype == torch.int64 and batch.query_y.dtype == torch.int64
    for t in range(50):
        sx, sy, qx, qy = (v[t] for v in batch.tensors())
        assert torch.equal(sy, torch.arange(ways).repeat_interleave(shots))
        assert torch.equal(qy, torch.arange(ways).repeat_interleave(queries))
        s, q = indices(sx), indices(qx)
        assert len(set(s.tolist())) == ways * shots and len(set(q.tolist())) == ways * queries
        assert not set(s.tolist()) & set(q.tolist())
        classes = batch.info["classes"][t]
        assert len(set(classes.tolist())) == ways
        assert torch.equal(data.labels[s], classes[sy])
        assert torch.equal(data.labels[q], classes[qy])
        s2, q2 = tasks.indices(t)
        assert torch.equal(s2, s) and torch.equal(q2, q)


def test_item_equals_batch_and_class_order_is_random():
    tasks = EpisodicTasks(IndexImages(), 5, 2, 3, seed=4)
    batch = tasks.batch(3, 6)
    for i in range(6):
        assert_same(collate_tasks([tasks[3 + i]]), batch.slice(i, i + 1))
    orders = tasks.batch(0, 40).info["classes"]
    assert any(not torch.equal(o, o.sort().values) for o in orders)  # labels are not sorted class ids


def test_classes_and_examples_are_drawn_uniformly():
    """Every class is drawn about ways/classes of the time; every example of a class about equally."""
    data = IndexImages()
    tasks = EpisodicTasks(data, 4, 1, 1, seed=0)
    batch = tasks.batch(0, 3000)
    class_counts = torch.bincount(batch.info["classes"].flatten(), minlength=40)[3:37:3]
    assert class_counts.sum() == 12000
    assert ((class_counts - 1000).abs() < 150).all(), class_counts
    drawn = torch.cat([indices(batch.support_x), indices(batch.query_x)])
    per_example = torch.bincount(drawn, minlength=len(data.labels)).float()
    expected = 2 * 1000 / torch.bincount(data.labels)[data.labels].float()
    assert ((per_example - expected).abs() / expected < 0.35).all()


def test_determinism_seeds_splits_and_global_rng():
    data = IndexImages()
    torch.manual_seed(0)
    a = EpisodicTasks(data, 5, 2, 3, seed=7).batch(0, 8)
    torch.manual_seed(1)
    b = EpisodicTasks(data, 5, 2, 3, seed=7).batch(0, 8)
    assert_same(a, b)
    state = torch.get_rng_state()
    EpisodicTasks(data, 5, 2, 3, seed=7).batch(0, 8)
    EpisodicTasks(data, 5, 2, 3, seed=7)[3]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    others = [
        EpisodicTasks(data, 5, 2, 3, seed=8).batch(0, 8),
        EpisodicTasks(data, 5, 2, 3, seed=7, split="test").batch(0, 8),
        EpisodicTasks(data, 5, 2, 3, seed=7).batch(8, 8),
    ]
    for other in others:
        assert not torch.equal(other.support_x, a.support_x)


def test_dataloader_workers_are_deterministic():
    tasks = EpisodicTasks(
        LabelledImages(
            torch.randint(0, 256, (120, 1, 4, 4), dtype=torch.uint8),
            torch.arange(12).repeat_interleave(10),
            [str(i) for i in range(12)],
        ),
        5,
        1,
        3,
        seed=3,
        length=8,
    )
    loader = DataLoader(tasks, batch_size=4, num_workers=2, collate_fn=collate_tasks)
    batches = list(loader)
    assert len(batches) == 2
    assert_same(batches[0], tasks.batch(0, 4))
    assert_same(batches[1], tasks.batch(4, 4))


def test_slow_path_and_uint8_conversion():
    """Datasets without an ``images`` tensor (items, or torchvision's (x, y) and ``targets``) give the
    same episodes; uint8 images become float in [0, 1]; ``transform`` applies to the stacked examples."""
    fast = EpisodicTasks(IndexImages(), 5, 2, 3, seed=2).batch(0, 4)
    assert_same(EpisodicTasks(IndexImages(fast=False), 5, 2, 3, seed=2).batch(0, 4), fast)
    assert_same(EpisodicTasks(TupleItems(), 5, 2, 3, seed=2).batch(0, 4), fast)
    images = torch.tensor([0, 255, 51, 102] * 3, dtype=torch.uint8)[:, None, None, None]
    data = LabelledImages(images, torch.arange(4).repeat(3), list("abcd"))
    batch = EpisodicTasks(data, 4, 1, 2).batch(0, 2)
    assert batch.support_x.dtype == torch.float32 and batch.support_x.shape == (2, 4, 1, 1, 1)
    assert set((batch.query_x * 255).round().unique().tolist()) <= {0.0, 51.0, 102.0, 255.0}
    assert 0.0 <= batch.query_x.min() and batch.query_x.max() <= 1.0
    doubled = EpisodicTasks(data, 4, 1, 2, transform=lambda x: 2 * x).batch(0, 2)
    assert torch.equal(doubled.query_x, 2 * batch.query_x)


def test_train_and_test_ways_differ_by_two_instances():
    data = IndexImages()
    train = EpisodicTasks(data, 10, 1, 2, split="train")
    test = EpisodicTasks(data, 3, 5, 5, split="test")
    assert train[0].support_x.shape[0] == 10 and test[0].support_x.shape[0] == 15


def test_errors_name_the_field():
    data = IndexImages()
    with pytest.raises(MetaloopError, match=r"ways=13 but the dataset has only 12 classes"):
        EpisodicTasks(data, 13, 1, 1)
    with pytest.raises(
        MetaloopError, match=r"shots \+ queries = 5 \+ 6 = 11 but class \d+ has only 10 examples"
    ) as e:
        EpisodicTasks(data, 5, 5, 6)
    assert "\n" not in str(e.value)
    for kwargs, field in [
        ({"ways": 0}, "ways"),
        ({"shots": 0}, "shots"),
        ({"queries": -1}, "queries"),
        ({"ways": 2.5}, "ways"),
    ]:
        args = {"ways": 5, "shots": 1, "queries": 1, **kwargs}
        with pytest.raises(MetaloopError, match=field):
            EpisodicTasks(data, **args)
    with pytest.raises(MetaloopError, match="split"):
        EpisodicTasks(data, 5, 1, 1, split="dev")
    with pytest.raises(MetaloopError, match="no 'labels'"):
        EpisodicTasks(object(), 5, 1, 1)
    bad = IndexImages()
    bad.labels = bad.labels.float()
    with pytest.raises(MetaloopError, match="integer class ids"):
        EpisodicTasks(bad, 5, 1, 1)
    short = IndexImages()
    short.images = short.images[:-1]
    with pytest.raises(MetaloopError, match="images has"):
        EpisodicTasks(short, 5, 1, 1)
    with pytest.raises(IndexError):
        EpisodicTasks(data, 5, 1, 1, length=3)[3]
