"""ANIL (Raghu et al. 2020): the inner loop adapts only the head; the body is meta-learned through it."""

from __future__ import annotations

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
