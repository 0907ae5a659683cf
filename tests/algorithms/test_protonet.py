"""Prototypical Networks (Snell et al. 2017): prototypes, logits, both execution paths, ways, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from metaloop.algorithms import ProtoNet
from metaloop.algorithms.protonet import squared_distances
from metaloop.errors import MetaloopError
from metaloop.tasks.base import TaskBatch


def mlp(d_in: int = 4, d_out: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d_in, 8), nn.Tanh(), nn.Linear(8, d_out)).double()


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()
    ).double()


def episodes(tasks: int, ways: int, shots: int, queries: int, shape: tuple[int, ...], seed: int = 1) -> TaskBatch:
    """Random inputs; the support labels are 0..ways-1 in a shuffled order."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(ways)
    sy = torch.stack([labels.repeat_interleave(shots)[torch.randperm(ways * shots, generator=gen)] for _ in range(tasks)])
    qy = labels.repeat_interleave(queries).expand(tasks, -1).clone()
    sx = torch.randn(tasks, ways * shots, *shape, generator=gen, dtype=torch.float64)
    qx = torch.randn(tasks, ways * queries, *shape, generator=gen, dtype=torch.float64)
    return TaskBatch(sx, sy, qx, qy)


def test_prototypes_are_class_means():
    """c_k = mean of f(x_i) over the support points of class k (eq. 1), with unequal shots; the
    class bound is the support size and the unused classes are marked absent."""
    model = mlp()
    learner = ProtoNet(model)
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([2, 0, 2, 1, 2, 0])  # 3 classes, shots 2, 1, 3
    state = learner.adapt(learner.params(), (x, y))
    with torch.no_grad():
        z = model(x)
    assert state.prototypes.shape == (6, 5)
    for k in range(3):
        members = [z[i] for i in range(6) if int(y[i]) == k]
        expected = sum(members) / len(members)
        torch.testing.assert_close(state.prototypes[k], expected, rtol=1e-14, atol=1e-14)
    assert state.present.tolist() == [True, True, True, False, False, False]
    assert torch.all(state.prototypes[3:] == 0)
    # no inner loop: every step count gives the same state
    states = learner.adapt_steps(learner.params(), (x, y), [0, 1, 5])
    assert all(torch.equal(s.prototypes, state.prototypes) for s in states)


def test_logits_are_negative_squared_distances():
    """logit_k(x) = −‖f(x) − c_k‖² for present classes, −inf for absent ones; the loss is the
    3-way cross-entropy."""
    model = mlp()
    learner = ProtoNet(model)
    sx, sy = torch.randn(6, 4, dtype=torch.float64), torch.tensor([1, 0, 2, 2, 0, 1])
    qx, qy = torch.randn(4, 4, dtype=torch.float64), torch.tensor([0, 2, 1, 1])
    state = learner.adapt(learner.params(), (sx, sy))
    logits = learner.predict(state, qx)
    with torch.no_grad():
        zs, zq = model(sx), model(qx)
    centers = torch.stack([zs[sy == k].mean(0) for k in range(3)])
    for j in range(4):
        for k in range(3):
            diff = zq[j] - centers[k]
            torch.testing.assert_close(logits[j, k], -(diff * diff).sum(), rtol=1e-13, atol=1e-13)
    assert torch.all(logits[:, 3:] == float("-inf"))
    loss = learner.loss(state, (qx, qy))
    torch.testing.assert_close(loss, F.cross_entropy(logits[:, :3], qy), rtol=1e-14, atol=0)
    assert torch.isfinite(loss)


def path_gradients(model: nn.Module, batch: TaskBatch) -> dict[str, torch.Tensor]:
    grads = {}
    for path in ("loop", "vmap"):
        learner = ProtoNet(model, path=path)
        learner.zero_grad(set_to_none=True)
        learner.meta_gradient(batch)
        grads[path] = torch.cat([p.grad.flatten() for p in learner.parameters()])
    return grads


@pytest.mark.parametrize("net", ["mlp", "conv-batchnorm"])
def test_loop_equals_vmap(net):
    """The meta-gradient is the same under both execution paths (float64, relative error < 1e-10),
    for an MLP and for a conv net with transductive BatchNorm."""
    if net == "mlp":
        model, batch = mlp(), episodes(3, 3, 2, 2, (4,))
    else:
        model, batch = conv_net(), episodes(2, 3, 2, 2, (1, 6, 6))
    grads = path_gradients(model, batch)
    scale = grads["loop"].abs().max()
    assert scale > 0
    assert float((grads["loop"] - grads["vmap"]).abs().max() / scale) < 1e-10


def hand_protonet(model: nn.Module, sx, sy, qx, ways: int) -> torch.Tensor:
    """ProtoNets written out for one task with exactly ``ways`` columns."""
    zs, zq = model(sx), model(qx)
    centers = torch.stack([zs[sy == k].mean(0) for k in range(ways)])
    return -((zq[:, None, :] - centers[None]) ** 2).sum(-1)


@pytest.mark.parametrize("path", ["loop", "vmap"])
def test_train_5_way_test_3_way(path):
    """One learner meta-trains on 5-way episodes and is evaluated on 3-way ones through
    evaluate_batch; the metrics equal a hand-written 3-way ProtoNet."""
    model = mlp()
    learner = ProtoNet(model, path=path)
    optimizer = learner.make_optimizer(1e-2)
    train = episodes(2, 5, 2, 2, (4,), seed=3)
    losses = [learner.meta_step(train, optimizer) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))

    test = episodes(3, 3, 2, 4, (4,), seed=4)

    def accuracy(logits, y):
        return (logits.argmax(-1) == y).to(torch.float64).mean()

    acc = learner.evaluate_batch(test, [0, 1], accuracy)
    ce = learner.evaluate_batch(test, [0], F.cross_entropy)
    assert acc.shape == (3, 2) and ce.shape == (3, 1)
    with torch.no_grad():
        for i in range(3):
            (sx, sy), (qx, qy) = test.task(i)
            logits = hand_protonet(model, sx, sy, qx, 3)
            torch.testing.assert_close(acc[i, 0], accuracy(logits, qy))
            torch.testing.assert_close(acc[i, 1], acc[i, 0])
            torch.testing.assert_close(ce[i, 0], F.cross_entropy(logits, qy), rtol=1e-12, atol=0)


def test_meta_gradient_matches_finite_differences():
    """∇_φ of the query cross-entropy (through the prototypes and the query embeddings) matches
    central finite differences."""
    model = mlp(3, 3)
    learner = ProtoNet(model, path="loop")
    names = list(learner.params())
    (support, query) = episodes(1, 3, 2, 2, (3,), seed=5).task(0)

    def outer(*tensors):
        return learner.outer_loss(dict(zip(names, tensors)), support, query)

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in learner.params().values())
    assert torch.autograd.gradcheck(outer, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_bad_options_and_labels():
    with pytest.raises(MetaloopError, match="distance"):
        ProtoNet(mlp(), distance="manhattan")
    learner = ProtoNet(mlp())
    with pytest.raises(MetaloopError, match="support labels"):
        learner.adapt(learner.params(), (torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 1, 3])))


def broadcast_squared(z: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """The former formula: ``‖z_i − c_k‖²`` through the ``[queries, n, d]`` differences."""
    return (z.unsqueeze(1) - centers.unsqueeze(0)).pow(2).sum(-1)


def test_squared_distances_equal_the_broadcast_formula():
    """squared_distances (the ``‖z‖² − 2 z·cᵀ + ‖c‖²`` expansion, shifted by the mean present center)
    equals the broadcast formula in value and in gradient (float64), for embeddings far from the origin,
    absent classes (zero centers) and a query on a center (distance 0: clamped, gradient finite)."""
    gen = torch.Generator().manual_seed(7)
    offset = 50 * torch.randn(16, generator=gen, dtype=torch.float64)
    centers = offset + torch.randn(9, 16, generator=gen, dtype=torch.float64)
    present = torch.tensor([True] * 6 + [False] * 3)
    centers = centers * present.unsqueeze(-1)  # absent classes have zero centers, as in ProtoState
    z = offset + torch.randn(11, 16, generator=gen, dtype=torch.float64)
    z[3] = centers[2]
    weights = torch.randn(11, 9, generator=gen, dtype=torch.float64)

    results = []
    for formula in (broadcast_squared, lambda a, b: squared_distances(a, b, present)):
        zz, cc = z.clone().requires_grad_(True), centers.clone().requires_grad_(True)
        squared = formula(zz, cc)
        grads = torch.autograd.grad((weights * squared).sum(), (zz, cc))
        results.append((squared.detach(), *grads))
    (old, old_dz, old_dc), (new, new_dz, new_dc) = results
    assert new.shape == (11, 9) and bool((new >= 0).all()) and float(new[3, 2]) == 0.0
    torch.testing.assert_close(new[:, :6], old[:, :6], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(new[:, 6:], old[:, 6:], rtol=1e-12, atol=0)  # ‖z‖² ≈ 2500 from the zero centers
    for new_grad, old_grad in ((new_dz, old_dz), (new_dc, old_dc)):
        assert torch.isfinite(new_grad).all()
        torch.testing.assert_close(new_grad, old_grad, rtol=1e-10, atol=1e-7)


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


@pytest.mark.parametrize("distance", ["sqeuclidean", "cosine"])
def test_predict_builds_no_queries_by_classes_by_dim_tensor(distance):
    """predict allocates [queries, n] logits, never [queries, n, d] differences (its memory was
    queries × support rows × embedding size); the logits are the broadcast formula's."""
    model = mlp(4, 32)
    learner = ProtoNet(model, distance=distance)
    sx, sy = torch.randn(6, 4, dtype=torch.float64), torch.tensor([1, 0, 2, 2, 0, 1])
    qx = torch.randn(200, 4, dtype=torch.float64)
    with torch.no_grad():
        state = learner.adapt(learner.params(), (sx, sy))
        with LargestTensor() as largest:
            logits = learner.predict(state, qx)
        assert largest.numel <= 200 * 32 < 200 * 6 * 32
        if distance == "sqeuclidean":
            torch.testing.assert_close(logits[:, :3], -broadcast_squared(model(qx), state.prototypes[:3]),
                                       rtol=1e-12, atol=1e-12)
