"""ANIL (Raghu et al. 2020): the inner loop adapts only the head; the body is meta-learned through it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metaloop.algorithms import ANIL
from metaloop.models.mlp import MLP
from metaloop.tasks.sinusoid import SinusoidTasks

LR = 0.05
HEAD = ["4.weight", "4.bias"]


def setup(seed: int = 0):
    torch.manual_seed(seed)
    model = MLP(1, [8, 8], 1).double()
    batch = SinusoidTasks(5, 7, seed=11).batch(0, 2).to("cpu", torch.float64)
    return model, batch


def objective(model, params, batch, steps) -> float:
    """Mean query loss after `steps` plain SGD steps on the head only."""
    total = 0.0
    for i in range(len(batch)):
        (sx, sy), (qx, qy) = batch.task(i)
        p = {n: v.detach() for n, v in params.items()}
        for _ in range(steps):
            head = {n: p[n].clone().requires_grad_(True) for n in HEAD}
            loss = F.mse_loss(functional_call(model, {**p, **head}, (sx,)), sy)
            grads = torch.autograd.grad(loss, [head[n] for n in HEAD])
            p = {**p, **{n: p[n] - LR * g for n, g in zip(HEAD, grads)}}
        total += float(F.mse_loss(functional_call(model, p, (qx,)), qy))
    return total / len(batch)


def test_anil_adapts_only_the_head():
    """ANIL's inner loop: body parameters are returned as the very same tensors, the head moves."""
    model, batch = setup()
    learner = ANIL(model, F.mse_loss, inner_lr=LR, inner_steps=2, path="loop")
    assert learner.adapted_names == HEAD
    params = learner.params()
    phi = learner.adapt(params, batch.task(0)[0])
    for n, v in params.items():
        if n in HEAD:
            assert not torch.equal(phi[n].detach(), v.detach())
        else:
            assert phi[n] is v


def test_anil_body_still_gets_meta_gradient():
    """ANIL's outer loop meta-learns the body through the head's adaptation (finite differences)."""
    model, batch = setup(1)
    learner = ANIL(model, F.mse_loss, inner_lr=LR, inner_steps=2, path="loop")
    learner.meta_gradient(batch)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    for n, g in grads.items():
        if not n.startswith("4.") and n.endswith("weight"):
            assert float(g.abs().sum()) > 0, n
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(7)
    h = 1e-5
    for _ in range(3):
        d = {n: torch.randn(v.shape, generator=gen, dtype=v.dtype) for n, v in theta.items()}
        plus = objective(model, {n: theta[n] + h * d[n] for n in theta}, batch, 2)
        minus = objective(model, {n: theta[n] - h * d[n] for n in theta}, batch, 2)
        fd = (plus - minus) / (2 * h)
        analytic = float(sum((grads[n] * d[n]).sum() for n in theta))
        assert abs(fd - analytic) <= 1e-6 * max(abs(fd), 1e-3), (fd, analytic)


# ---------------------------------------------------------------------- feature reuse (body once per task)
def conv_bn_net() -> torch.nn.Module:
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64, 3)).double()


def image_batch():
    from metaloop.tasks.base import TaskBatch

    gen = torch.Generator().manual_seed(1)
    sx = torch.randn(2, 6, 1, 8, 8, generator=gen, dtype=torch.float64)
    qx = torch.randn(2, 6, 1, 8, 8, generator=gen, dtype=torch.float64)
    y = torch.arange(3).repeat_interleave(2).expand(2, -1).clone()
    return TaskBatch(sx, y, qx, y.clone())


def meta_grads(make, batch):
    learner = make()
    learner.zero_grad(set_to_none=True)
    learner.meta_gradient(batch)
    return torch.cat([p.grad.flatten() for p in learner.parameters() if p.grad is not None])


@pytest.mark.parametrize("path", ["loop", "vmap"])
def test_feature_reuse_gives_the_same_meta_gradient(path):
    """Running the body once per task and the head per inner step is the same computation (float64)."""
    model, batch = setup(2)
    learners = [ANIL(model, F.mse_loss, inner_lr=LR, inner_steps=3, path=path, reuse_features=r) for r in (True, False)]
    grads = [meta_grads(lambda learner=learner: learner, batch) for learner in learners]
    assert learners[0].head_module == "4" and learners[1].head_module is None  # the reuse did happen
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14)
    model = conv_bn_net()
    grads = [meta_grads(lambda r=r: ANIL(model, F.cross_entropy, inner_lr=0.1, inner_steps=2, path="loop",
                                         reuse_features=r), image_batch()) for r in (True, False)]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14)


def count_body_calls(model: torch.nn.Module) -> list[int]:
    calls = [0]
    model[0].register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_feature_reuse_runs_the_body_once_per_task():
    """Three inner steps + the query: the body runs twice per task (support, query), not 3 + 1 times."""
    model, batch = setup(3)
    calls = count_body_calls(model)
    learner = ANIL(model, F.mse_loss, inner_lr=LR, inner_steps=3, path="loop")
    assert learner.head_module == "4"
    learner.meta_gradient(batch)
    assert calls[0] == 2 * len(batch)
    calls[0] = 0
    ANIL(model, F.mse_loss, inner_lr=LR, inner_steps=3, path="loop", reuse_features=False).meta_gradient(batch)
    assert calls[0] == 4 * len(batch)


def test_feature_reuse_memoizes_examples_in_evaluation():
    """In evaluation the body embeds each distinct example once, across episodes, with the same metrics."""
    model, batch = setup(4)
    twice = batch.__class__(*(torch.cat([t, t]) for t in batch.tensors()))
    learner = ANIL(model, F.mse_loss, inner_lr=LR, inner_steps=3, path="loop")
    plain = ANIL(model, F.mse_loss, inner_lr=LR, inner_steps=3, path="loop", reuse_features=False)
    with learner.memoize_embeddings() as memo:
        got = learner.evaluate_batch(twice, [0, 1, 3], F.mse_loss)
    distinct = len(torch.unique(torch.cat([batch.support_x.flatten(0, -2), batch.query_x.flatten(0, -2)]), dim=0))
    assert memo.computed == distinct
    torch.testing.assert_close(got, plain.evaluate_batch(twice, [0, 1, 3], F.mse_loss), rtol=1e-12, atol=1e-14)


def test_feature_reuse_falls_back_when_the_output_is_not_the_head():
    """A model that post-processes its last layer's output runs whole at every step, with the right result."""

    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = MLP(1, [8], 8)
            self.head = torch.nn.Linear(8, 1)

        def forward(self, x):
            return 2.0 * self.head(torch.relu(self.body(x)))

    torch.manual_seed(0)
    model = Scaled().double()
    batch = SinusoidTasks(5, 7, seed=11).batch(0, 2).to("cpu", torch.float64)
    learner = ANIL(model, F.mse_loss, inner_lr=LR, inner_steps=2, path="loop")
    assert learner.head_module == "head"
    reused = meta_grads(lambda: learner, batch)
    assert learner.head_module is None  # found out on the first call
    plain = meta_grads(lambda: ANIL(model, F.mse_loss, inner_lr=LR, inner_steps=2, path="loop",
                                    reuse_features=False), batch)
    torch.testing.assert_close(reused, plain, rtol=1e-12, atol=1e-14)
