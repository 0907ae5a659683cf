"""The evaluation's embedding memo (metaloop.core.memo): same results, each distinct example embedded
once, never a stale embedding, and off where BatchNorm makes an embedding depend on its batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metaloop.algorithms import MetaOptNet, ProtoNet
from metaloop.core.memo import EmbeddingMemo
from metaloop.tasks.base import TaskBatch


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 6)).double()


def _episodes_from_a_pool(tasks: int = 12, ways: int = 3, shots: int = 2, queries: int = 3) -> tuple[TaskBatch, int]:
    """Episodes drawn from a pool of 5 examples per class, so that examples repeat across episodes."""
    gen = torch.Generator().manual_seed(0)
    pool = torch.randn(ways, 5, 4, generator=gen, dtype=torch.float64)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.stack([torch.randint(0, 5, (n,), generator=gen) for _ in range(ways)])  # [ways, n]
        x = torch.stack([pool[c, idx[c]] for c in range(ways)]).reshape(ways * n, 4)
        return x, torch.arange(ways).repeat_interleave(n)

    s, q = zip(*[(draw(shots), draw(queries)) for _ in range(tasks)])
    batch = TaskBatch(torch.stack([x for x, _ in s]), torch.stack([y for _, y in s]),
                      torch.stack([x for x, _ in q]), torch.stack([y for _, y in q]))
    return batch, ways * 5


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def test_memo_gives_the_same_evaluation_and_embeds_each_example_once():
    batch, unique = _episodes_from_a_pool()
    for learner in (ProtoNet(_mlp(), path="loop"), MetaOptNet(_mlp(), head="ridge", path="loop")):
        plain = learner.evaluate_batch(batch, [0], _loss)
        with learner.memoize_embeddings() as memo:
            memoized = learner.evaluate_batch(batch, [0], _loss)
            again = learner.evaluate_batch(batch, [0], _loss)  # a second chunk: all hits
        assert memo is not None and 0 < memo.computed <= unique
        torch.testing.assert_close(memoized, plain, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(again, plain, rtol=1e-12, atol=1e-12)
        assert learner._memo is None  # the context leaves nothing behind


def test_memo_never_returns_an_embedding_of_other_parameters():
    learner = ProtoNet(_mlp(), path="loop")
    batch, _ = _episodes_from_a_pool()
    with learner.memoize_embeddings() as memo:
        before = learner.evaluate_batch(batch, [0], _loss)
        computed = memo.computed
        with torch.no_grad():
            for p in learner.model.parameters():
                p.mul_(-1.5)  # in place: same storage, new version
        after = learner.evaluate_batch(batch, [0], _loss)
        assert memo.computed == 2 * computed
    torch.testing.assert_close(after, learner.evaluate_batch(batch, [0], _loss), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(after, before)


def test_memo_is_off_in_training_and_with_transductive_batch_norm():
    bn = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6)).double()
    with ProtoNet(bn).memoize_embeddings() as memo:
        assert memo is None
    learner = ProtoNet(_mlp(), path="loop")
    batch, _ = _episodes_from_a_pool()
    with learner.memoize_embeddings() as memo:
        learner.meta_gradient(batch)  # training mode: every embedding carries its graph
    assert memo.computed == 0
    running = ProtoNet(nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6)).double(), bn_mode="running")
    with running.memoize_embeddings() as memo:
        assert memo is not None


def test_embedding_memo_batches_only_the_missing_rows():
    memo, seen = EmbeddingMemo(), []

    def compute(rows: torch.Tensor) -> torch.Tensor:
        seen.append(rows.shape[0])
        return rows.sum(-1, keepdim=True)

    params = {"w": torch.zeros(2)}
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]])
    torch.testing.assert_close(memo(params, x, compute), torch.tensor([[3.0], [7.0], [3.0]]))
    torch.testing.assert_close(memo(params, x[[1, 0]], compute), torch.tensor([[7.0], [3.0]]))
    assert seen == [2] and memo.computed == 2
