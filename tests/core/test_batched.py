"""The batched path (metaloop.core.batched) computes the loop path's meta-gradient (float64, relative error
< 1e-10): MLPs, Conv-4-like nets with transductive BatchNorm, GroupNorm and LayerNorm nets, 1 and 3 inner steps,
first and second order, an ``adapt`` subset, clipping, Meta-SGD, ANIL, Reptile, chunks; and evaluation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaloop.algorithms import ANIL, FOMAML, LEO, MAML, MetaSGD, Pretrain, ProtoNet, Reptile
from metaloop.algorithms.base import resolve_path
from metaloop.core.batched import unbatchable
from metaloop.errors import MetaloopError
from metaloop.models.conv import Conv4
from metaloop.models.mlp import MLP
from metaloop.models.resnet12 import ResNet12
from metaloop.tasks.base import TaskBatch
from metaloop.tasks.sinusoid import SinusoidTasks


def sinusoid_batch(tasks: int = 3) -> TaskBatch:
    return SinusoidTasks(4, 6, seed=21).batch(0, tasks).to("cpu", torch.float64)


def image_batch(tasks: int = 3, ways: int = 3, shots: int = 2, queries: int = 2, size: int = 8) -> TaskBatch:
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(ways)
    sx = torch.randn(tasks, ways * shots, 1, size, size, generator=gen, dtype=torch.float64)
    qx = torch.randn(tasks, ways * queries, 1, size, size, generator=gen, dtype=torch.float64)
    sy = labels.repeat_interleave(shots).expand(tasks, -1).clone()
    qy = labels.repeat_interleave(queries).expand(tasks, -1).clone()
    return TaskBatch(sx, sy, qx, qy)


def conv_bn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 4, 3, padding=1, stride=2), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16, 3))


def conv_gn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ELU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(64, 3))


def mlp_ln() -> nn.Module:
    return nn.Sequential(nn.Linear(1, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 8), nn.BatchNorm1d(8),
                         nn.ReLU(), nn.Linear(8, 1))


def meta_grads(make, model_fn, batch) -> dict[str, torch.Tensor]:
    out = {}
    for path in ("loop", "batched"):
        torch.manual_seed(0)
        learner = make(model_fn().double(), path)
        learner.zero_grad(set_to_none=True)
        loss = learner.meta_gradient(batch)
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in learner.parameters()]
        out[path] = (torch.cat([g.flatten() for g in grads]), loss)
    return out


def assert_agree(out) -> None:
    (loop, loop_loss), (batched, batched_loss) = out["loop"], out["batched"]
    scale = loop.abs().max()
    assert scale > 0
    assert float((loop - batched).abs().max() / scale) < 1e-10
    assert batched_loss == pytest.approx(loop_loss, rel=1e-10)


CASES = {
    "maml-1": lambda m, p: MAML(m, F.cross_entropy, inner_lr=0.1, inner_steps=1, path=p),
    "maml-3": lambda m, p: MAML(m, F.cross_entropy, inner_lr=0.1, inner_steps=3, path=p),
    "fomaml-3": lambda m, p: FOMAML(m, F.cross_entropy, inner_lr=0.1, inner_steps=3, path=p),
    "maml-head": lambda m, p: MAML(m, F.cross_entropy, inner_lr=0.1, inner_steps=2, adapt="head", path=p),
    "maml-subset": lambda m, p: MAML(m, F.cross_entropy, inner_lr=0.1, inner_steps=2, adapt="0.*,1.*", path=p),
    "maml-clip": lambda m, p: MAML(m, F.cross_entropy, inner_lr=0.1, inner_steps=2, inner_clip=0.05, path=p),
    "metasgd": lambda m, p: MetaSGD(m, F.cross_entropy, inner_lr=0.1, inner_steps=2, path=p),
    "anil": lambda m, p: ANIL(m, F.cross_entropy, inner_lr=0.1, inner_steps=3, path=p),
    "reptile": lambda m, p: Reptile(m, F.cross_entropy, inner_lr=0.1, inner_steps=3, path=p),
    "chunks": lambda m, p: MAML(m, F.cross_entropy, inner_lr=0.1, inner_steps=2, path=p, chunk_size=2),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("net", ["bn", "gn"])
def test_conv_batched_equals_loop(name, net):
    assert_agree(meta_grads(CASES[name], {"bn": conv_bn, "gn": conv_gn}[net], image_batch()))


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("first_order", [False, True])
def test_mlp_batched_equals_loop(steps, first_order):
    make = lambda m, p: MAML(m, F.mse_loss, inner_lr=0.05, inner_steps=steps, first_order=first_order,  # noqa: E731
                             path=p)
    assert_agree(meta_grads(make, lambda: MLP(1, [8, 8], 1), sinusoid_batch()))
    assert_agree(meta_grads(make, mlp_ln, sinusoid_batch()))


def test_conv4_batched_equals_loop():
    """Conv-4 itself (nested blocks, 28×28 images), second-order MAML with a loss the path calls per task."""
    loss = lambda logits, y: F.cross_entropy(logits, y, label_smoothing=0.1)  # noqa: E731
    make = lambda m, p: MAML(m, loss, inner_lr=0.1, inner_steps=2, path=p)  # noqa: E731
    assert_agree(meta_grads(make, lambda: Conv4(1, 3, hidden=8), image_batch(tasks=2, size=28)))


def test_evaluate_batch_batched_equals_loop():
    batch = image_batch()
    torch.manual_seed(0)
    model = conv_bn().double()
    results = [MAML(model, F.cross_entropy, inner_lr=0.1, path=p).evaluate_batch(batch, [0, 1, 3], F.cross_entropy)
               for p in ("loop", "batched")]
    assert results[1].shape == (3, 3)
    torch.testing.assert_close(results[1], results[0], rtol=1e-10, atol=0)
    acc = lambda logits, y: (logits.argmax(-1) == y).double().mean()  # noqa: E731
    anil = [ANIL(model, F.cross_entropy, inner_lr=0.1, path=p).evaluate_batch(batch, [0, 2], acc)
            for p in ("loop", "batched")]
    torch.testing.assert_close(anil[1], anil[0], rtol=0, atol=0)


def test_unbatchable_layers_are_named():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return x + self.fc(x)

    assert unbatchable(conv_bn()) is None and unbatchable(Conv4(1, 5)) is None
    assert unbatchable(nn.Sequential(nn.Linear(4, 4), Residual())) == "1 (Residual)"
    assert unbatchable(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))) == "1 (Dropout)"
    with pytest.raises(MetaloopError, match=r"option 'path'.*layer 1 \(Residual\)"):
        MAML(nn.Sequential(nn.Linear(4, 4), Residual()), F.mse_loss, path="batched")


def test_auto_picks_batched_for_linear_models_of_the_maml_family():
    assert resolve_path("auto", MLP(1, [8], 1), MAML) == "batched"
    assert resolve_path("auto", MLP(1, [8], 1), ProtoNet) == "vmap"
    assert resolve_path("auto", conv_bn(), MAML) == "loop"
    assert MAML(MLP(1, [8], 1), F.mse_loss).path == "batched"


@pytest.mark.parametrize("bn_mode", ["transductive", "running"])
def test_resnet12_batched_equals_loop(bn_mode):
    """ResNet-12's residual blocks run batched through their own batched_forward; auto keeps the loop for it."""
    make = lambda m, p: MAML(m, F.cross_entropy, inner_lr=0.1, inner_steps=2, bn_mode=bn_mode, path=p)  # noqa: E731
    model = lambda: ResNet12(1, 3, channels=(4, 6, 4, 4), image_size=16)  # noqa: E731
    assert_agree(meta_grads(make, model, image_batch(tasks=2, size=16)))
    assert resolve_path("auto", model(), MAML) == "loop"


def test_models_it_cannot_batch_are_refused_by_name():
    """A module the path does not know, even inside a ResNet-12 block, is named when path=batched is forced."""
    model = ResNet12(3, 5, channels=(4, 4, 4, 4), image_size=16, drop_rate=0.1)
    assert unbatchable(model) == "features.0.dropout (Dropout)"
    with pytest.raises(MetaloopError, match=r"option 'path': the batched path cannot run layer features.0.dropout"):
        MAML(model, F.cross_entropy, path="batched")


def test_batched_path_is_declared_by_the_algorithm():
    assert resolve_path("batched", conv_bn(), MAML) == "batched"
    for cls in (Pretrain, ProtoNet, LEO):
        assert not cls.batched_path
    with pytest.raises(MetaloopError, match="option 'path': Pretrain has no batched path"):
        Pretrain(conv_bn(), F.cross_entropy, path="batched")
    with pytest.raises(MetaloopError, match="bn_mode"):
        MAML(conv_bn(), F.cross_entropy, bn_mode="running", path="vmap")


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_batchnorm_batched_equals_loop(momentum):
    """Running BatchNorm: the same meta-gradient, the same running buffers after two meta-steps' forwards (updated
    task by task, forward by forward, as the loop path does), and the same evaluation on the running statistics."""
    batch = image_batch(tasks=3)
    out = {}
    for path in ("loop", "batched"):
        torch.manual_seed(0)
        model = conv_bn().double()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = momentum
        learner = MAML(model, F.cross_entropy, inner_lr=0.1, inner_steps=2, bn_mode="running", path=path)
        for _ in range(2):
            learner.zero_grad(set_to_none=True)
            learner.meta_gradient(batch)
        grads = torch.cat([p.grad.flatten() for p in learner.parameters()])
        buffers = torch.cat([b.double().flatten() for b in model.buffers()])
        metrics = learner.evaluate_batch(batch, [0, 2], F.cross_entropy)
        out[path] = grads, buffers, metrics
    for loop, batched in zip(out["loop"], out["batched"]):
        torch.testing.assert_close(batched, loop, rtol=1e-10, atol=1e-12)


def test_batched_path_runs_the_meta_batch_at_once(monkeypatch):
    """One batched forward per inner step and one for the query set, whatever the number of tasks."""
    import metaloop.core.functional as functional

    calls = []
    real = functional.batched_call
    monkeypatch.setattr(functional, "batched_call", lambda *a, **k: calls.append(a[2].shape[0]) or real(*a, **k))
    MAML(conv_bn().double(), F.cross_entropy, inner_lr=0.1, inner_steps=3, path="batched").meta_gradient(
        image_batch(tasks=5))
    assert calls == [5, 5, 5, 5]
