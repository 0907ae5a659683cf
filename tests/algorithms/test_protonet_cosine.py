"""ProtoNet with ``distance="cosine"``: logits 10·cos(f(x), c_k), on both execution paths, with exact
and finite gradients when some class slots are absent."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaloop.algorithms import ProtoNet
from metaloop.algorithms.protonet import COSINE_SCALE
from metaloop.errors import MetaloopError
from metaloop.tasks.base import TaskBatch


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 5)).double()


def batch(tasks: int = 3) -> TaskBatch:
    gen = torch.Generator().manual_seed(1)
    sy = torch.tensor([0, 1, 0, 2, 1, 2]).expand(tasks, -1).clone()  # 3 classes, bound 6: 3 absent slots
    qy = torch.tensor([0, 1, 2, 2]).expand(tasks, -1).clone()
    return TaskBatch(torch.randn(tasks, 6, 4, generator=gen, dtype=torch.float64), sy,
                     torch.randn(tasks, 4, 4, generator=gen, dtype=torch.float64), qy)


def hand_loss(net: nn.Module, b: TaskBatch) -> torch.Tensor:
    total = 0.0
    for i in range(len(b)):
        (sx, sy), (qx, qy) = b.task(i)
        zs, zq = net(sx), net(qx)
        protos = torch.stack([zs[sy == k].mean(0) for k in range(3)])
        logits = COSINE_SCALE * F.cosine_similarity(zq.unsqueeze(1), protos.unsqueeze(0), dim=-1)
        total = total + F.cross_entropy(logits, qy)
    return total / len(b)


def test_cosine_logits():
    net = model()
    learner = ProtoNet(net, distance="cosine")
    (sx, sy), (qx, _) = batch(1).task(0)
    state = learner.adapt(learner.params(), (sx, sy))
    logits = learner.predict(state, qx).detach()
    assert logits.shape == (4, 6) and torch.isinf(logits[:, 3:]).all() and (logits[:, 3:] < 0).all()
    with torch.no_grad():
        zs, zq = net(sx), net(qx)
    protos = torch.stack([zs[sy == k].mean(0) for k in range(3)])
    torch.testing.assert_close(state.prototypes[:3].detach(), protos)
    expected = COSINE_SCALE * F.normalize(zq, dim=-1) @ F.normalize(protos, dim=-1).T
    torch.testing.assert_close(logits[:, :3], expected, rtol=1e-12, atol=1e-12)
    assert float(logits[:, :3].abs().max()) <= COSINE_SCALE + 1e-9
    # scale-free, unlike the squared distance
    with torch.no_grad():
        net[2].weight.mul_(7.0)
        net[2].bias.mul_(7.0)
    torch.testing.assert_close(learner.predict(learner.adapt(learner.params(), (sx, sy)), qx).detach(), logits)


@pytest.mark.parametrize("path", ["loop", "vmap"])
def test_cosine_meta_gradient_is_exact_and_finite(path):
    net = model()
    b = batch()
    learner = ProtoNet(net, distance="cosine", path=path)
    learner.zero_grad(set_to_none=True)
    loss = learner.meta_gradient(b)
    grads = [p.grad.clone() for p in net.parameters()]
    assert all(torch.isfinite(g).all() for g in grads)
    net.zero_grad(set_to_none=True)
    expected = hand_loss(net, b)
    expected.backward()
    assert loss == pytest.approx(float(expected.detach()), rel=1e-12)
    for g, p in zip(grads, net.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-10, atol=1e-12)


def test_unknown_distance():
    with pytest.raises(MetaloopError, match="option 'distance': 'manhattan' is not one of sqeuclidean, cosine"):
        ProtoNet(model(), distance="manhattan")
