"""The loop and vmap execution paths compute the same meta-gradient (float64, relative error < 1e-10)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metaloop.core.norms as norms
from metaloop.algorithms import ANIL, FOMAML, MAML, MetaSGD, Pretrain, Reptile
from metaloop.algorithms.base import resolve_path
from metaloop.errors import MetaloopError
from metaloop.models.mlp import MLP
from metaloop.tasks.base import TaskBatch
from metaloop.tasks.sinusoid import SinusoidTasks


def sinusoid_batch() -> TaskBatch:
    return SinusoidTasks(4, 6, seed=21).batch(0, 3).to("cpu", torch.float64)


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3),
    ).double()


def image_batch(tasks: int = 2, ways: int = 3, shots: int = 2, queries: int = 2) -> TaskBatch:
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(ways)
    sx = torch.randn(tasks, ways * shots, 1, 8, 8, generator=gen, dtype=torch.float64)
    qx = torch.randn(tasks, ways * queries, 1, 8, 8, generator=gen, dtype=torch.float64)
    sy = labels.repeat_interleave(shots).expand(tasks, -1).clone()
    qy = labels.repeat_interleave(queries).expand(tasks, -1).clone()
    return TaskBatch(sx, sy, qx, qy)


def layer_norm_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 1)).double()


def group_norm_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3),
    ).double()


def grads_by_path(make_learner, batch) -> dict[str, list[torch.Tensor]]:
    out = {}
    for path in ("loop", "vmap"):
        learner = make_learner(path)
        learner.zero_grad(set_to_none=True)
        learner.meta_gradient(batch)
        grads = [p.grad for p in learner.parameters()]
        assert all(g is not None for g in grads[: len(list(learner.model.parameters()))])
        out[path] = [
            torch.zeros_like(p) if g is None else g.detach().clone()
            for p, g in zip(learner.parameters(), grads)
        ]
    return out


def assert_paths_agree(grads: dict[str, list[torch.Tensor]], rel: float = 1e-10) -> None:
    loop = torch.cat([g.flatten() for g in grads["loop"]])
    vmap = torch.cat([g.flatten() for g in grads["vmap"]])
    scale = loop.abs().max()
    assert scale > 0
    assert float((loop - vmap).abs().max() / scale) < rel


MLP_CASES = {
    "maml-1": lambda m, p: MAML(m, F.mse_loss, inner_lr=0.05, inner_steps=1, path=p),
    "maml-2": lambda m, p: MAML(m, F.mse_loss, inner_lr=0.05, inner_steps=2, path=p),
    "fomaml": lambda m, p: FOMAML(m, F.mse_loss, inner_lr=0.05, inner_steps=2, path=p),
    "metasgd": lambda m, p: MetaSGD(m, F.mse_loss, inner_lr=0.05, inner_steps=2, path=p),
    "anil": lambda m, p: ANIL(m, F.mse_loss, inner_lr=0.05, inner_steps=2, path=p),
    "reptile": lambda m, p: Reptile(m, F.mse_loss, inner_lr=0.05, inner_steps=3, path=p),
    "pretrain": lambda m, p: Pretrain(m, F.mse_loss, inner_lr=0.05, path=p),
}


@pytest.mark.parametrize("name", list(MLP_CASES))
def test_mlp_loop_equals_vmap(name):
    """Every algorithm's meta-gradient is the same whether tasks run in a Python loop or under vmap."""
    torch.manual_seed(0)
    model = MLP(1, [8, 8], 1).double()
    grads = grads_by_path(lambda path: MLP_CASES[name](model, path), sinusoid_batch())
    assert_paths_agree(grads)


def test_conv_batchnorm_transductive_loop_equals_vmap():
    """Second-order MAML through transductive BatchNorm (Finn et al.'s convention) agrees across paths."""
    model = conv_net()
    make = lambda path: MAML(  # noqa: E731
        model, F.cross_entropy, inner_lr=0.1, inner_steps=2, bn_mode="transductive", path=path
    )
    assert_paths_agree(grads_by_path(make, image_batch()))


def test_layer_norm_loop_equals_vmap():
    """Second-order MAML with an adapted LayerNorm affine agrees across paths."""
    model = layer_norm_net()
    make = lambda path: MAML(model, F.mse_loss, inner_lr=0.05, inner_steps=2, path=path)  # noqa: E731
    assert_paths_agree(grads_by_path(make, sinusoid_batch()))


def test_group_norm_loop_equals_vmap():
    """Second-order MAML with an adapted GroupNorm affine agrees across paths."""
    model = group_norm_net()
    make = lambda path: MAML(model, F.cross_entropy, inner_lr=0.1, inner_steps=2, path=path)  # noqa: E731
    assert_paths_agree(grads_by_path(make, image_batch()))


def test_vmap_path_decomposes_norms(monkeypatch):
    """Why norms are decomposed: under vmap they run from elementary ops, and the result matches the loop."""
    calls = {"layer_norm": 0, "batch_norm": 0}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(norms, "layer_norm", counting("layer_norm", norms.layer_norm))
    monkeypatch.setattr(norms, "batch_norm", counting("batch_norm", norms.batch_norm))

    model = layer_norm_net()
    grads = {}
    for path in ("loop", "vmap"):
        calls["layer_norm"] = 0
        model.zero_grad(set_to_none=True)
        MAML(model, F.mse_loss, inner_lr=0.05, inner_steps=2, path=path).meta_gradient(sinusoid_batch())
        grads[path] = [p.grad.clone() for p in model.parameters()]
        assert (calls["layer_norm"] > 0) == (path == "vmap")
    assert_paths_agree(grads)

    model = conv_net()
    calls["batch_norm"] = 0
    MAML(model, F.cross_entropy, inner_lr=0.1, path="loop").meta_gradient(image_batch())
    assert calls["batch_norm"] == 0
    MAML(model, F.cross_entropy, inner_lr=0.1, path="vmap").meta_gradient(image_batch())
    assert calls["batch_norm"] > 0


def test_evaluate_batch_loop_equals_vmap():
    """Evaluation (adapt after 0, 1, 3 steps, then score the query set) agrees across paths."""
    torch.manual_seed(0)
    model = MLP(1, [8, 8], 1).double()
    batch = sinusoid_batch()
    results = [
        MAML(model, F.mse_loss, inner_lr=0.05, path=p).evaluate_batch(batch, [0, 1, 3], F.mse_loss)
        for p in ("loop", "vmap")
    ]
    assert results[0].shape == (3, 3)
    torch.testing.assert_close(results[0], results[1], rtol=1e-10, atol=0)

    model = conv_net()
    batch = image_batch()
    results = [
        MAML(model, F.cross_entropy, inner_lr=0.1, path=p).evaluate_batch(batch, [0, 2], F.cross_entropy)
        for p in ("loop", "vmap")
    ]
    torch.testing.assert_close(results[0], results[1], rtol=1e-10, atol=0)


def test_vmap_with_running_batchnorm_is_refused():
    """'running' BatchNorm updates buffers in place per task, which vmap cannot batch: a clear error."""
    with pytest.raises(MetaloopError, match="bn_mode"):
        MAML(conv_net(), F.cross_entropy, bn_mode="running", path="vmap")


def test_auto_path():
    """path='auto' picks vmap for Linear-only models and loop for anything else."""
    assert resolve_path("auto", MLP(1, [8, 8], 1)) == "vmap"
    assert resolve_path("auto", conv_net()) == "loop"
    assert resolve_path("loop", MLP(1, [8], 1)) == "loop"
    with pytest.raises(MetaloopError, match="path"):
        resolve_path("fast", MLP(1, [8], 1))
