"""Sinusoid regression tasks, the protocol of Finn et al. 2017 (§5.1)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from metaloop.tasks.base import TaskBatch, collate_tasks
from metaloop.tasks.sinusoid import SinusoidTasks


def assert_same(a: TaskBatch, b: TaskBatch) -> None:
    for x, y in zip(a.tensors(), b.tensors()):
        assert torch.equal(x, y)
    assert a.info.keys() == b.info.keys()
    for k in a.info:
        assert torch.equal(a.info[k], b.info[k])


def test_same_seed_and_index_give_same_task():
    """A task depends on (seed, split, index) only: two datasets agree, whatever the global RNG."""
    torch.manual_seed(0)
    a = SinusoidTasks(5, 10, seed=7)[3]
    torch.manual_seed(1)
    b = SinusoidTasks(5, 10, seed=7)[3]
    assert_same(a, b)
    state = torch.get_rng_state()
    SinusoidTasks(5, 10, seed=7).batch(0, 4)
    assert torch.equal(torch.get_rng_state(), state)  # no global RNG is touched


def test_dataloader_workers_are_deterministic():
    """Tasks drawn in DataLoader worker processes equal those drawn in the main process."""
    ds = SinusoidTasks(5, 10, seed=7, length=6)
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_tasks)
    batches = list(loader)
    assert len(batches) == 2
    assert_same(batches[0], ds.batch(0, 3))
    assert_same(batches[1], ds.batch(3, 3))


def test_splits_and_seeds_differ():
    """Train, val and test are independent streams, and so are different seeds."""
    tasks = [SinusoidTasks(5, 10, seed=0, split=s)[0] for s in ("train", "val", "test")]
    tasks.append(SinusoidTasks(5, 10, seed=1)[0])
    tasks.append(SinusoidTasks(5, 10, seed=0)[1])
    amps = [float(t.info["amplitude"]) for t in tasks]
    assert len(set(amps)) == len(amps)
    with pytest.raises(ValueError):
        SinusoidTasks(5, 10, split="dev")


def test_ranges_and_function():
    """A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5], and y = A·sin(x − φ)."""
    batch = SinusoidTasks(10, 10, seed=3).batch(0, 300)
    amp, phase = batch.info["amplitude"], batch.info["phase"]
    assert 0.1 <= amp.min() and amp.max() <= 5.0
    assert 0.0 <= phase.min() and phase.max() <= math.pi
    assert amp.max() - amp.min() > 4.0 and phase.max() - phase.min() > 2.5  # the whole range is used
    for x, y in (batch.support, batch.query):
        assert -5.0 <= x.min() and x.max() <= 5.0
        torch.testing.assert_close(y, amp[:, None, None] * torch.sin(x - phase[:, None, None]))


def test_shapes():
    """Support and query are [tasks, K, 1] and [tasks, queries, 1]."""
    batch = SinusoidTasks(5, 7).batch(2, 4)
    assert len(batch) == 4
    assert batch.support_x.shape == batch.support_y.shape == (4, 5, 1)
    assert batch.query_x.shape == batch.query_y.shape == (4, 7, 1)
    assert batch.info["amplitude"].shape == (4,)
    one = SinusoidTasks(5, 7)[0]
    assert one.support_x.shape == (5, 1) and one.query_x.shape == (7, 1)


def test_batch_equals_stacked_items():
    """batch(start, count) holds the same tasks as dataset[start] … dataset[start + count − 1]."""
    ds = SinusoidTasks(5, 7, seed=4)
    assert_same(ds.batch(5, 3), collate_tasks([ds[i] for i in range(5, 8)]))
    assert_same(ds.batch(5, 3).slice_task(1), ds[6])
