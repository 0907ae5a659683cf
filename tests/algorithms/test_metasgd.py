"""Meta-SGD (Li et al. 2017): θ' = θ − α ∘ ∇L_support(θ), with α meta-learned alongside θ."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from metaloop.algorithms import MetaSGD
from metaloop.models.mlp import MLP
from metaloop.tasks.sinusoid import SinusoidTasks

STEPS = 2


def setup(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    model = MLP(1, [8, 8], 1).double()
    batch = SinusoidTasks(5, 7, seed=5).batch(0, 2).to("cpu", torch.float64)
    learner = MetaSGD(model, F.mse_loss, inner_lr=0.05, inner_steps=STEPS, path="loop", **kwargs)
    with torch.no_grad():  # non-uniform learned rates, so the test is not special to α = const
        for lr in learner.lrs.values():
            lr.mul_(1 + 0.5 * torch.rand(lr.shape, dtype=lr.dtype))
    return model, batch, learner


def objective(model, params, lrs, batch) -> float:
    """Mean query loss after STEPS steps θ ← θ − α ∘ ∇L_support(θ), with plain gradients."""
    total = 0.0
    for i in range(len(batch)):
        (sx, sy), (qx, qy) = batch.task(i)
        p = {n: v.detach() for n, v in params.items()}
        for _ in range(STEPS):
            leaves = {n: v.clone().requires_grad_(True) for n, v in p.items()}
            loss = F.mse_loss(functional_call(model, leaves, (sx,)), sy)
            grads = torch.autograd.grad(loss, list(leaves.values()))
            p = {n: p[n] - lrs[n].detach() * g for n, g in zip(p, grads)}
        total += float(F.mse_loss(functional_call(model, p, (qx,)), qy))
    return total / len(batch)


def directional_fd(fn, base, grads, *, seed, directions=3, h=1e-5):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(directions):
        d = {n: torch.randn(v.shape, generator=gen, dtype=v.dtype) for n, v in base.items()}
        fd = (fn({n: base[n] + h * d[n] for n in base}) - fn({n: base[n] - h * d[n] for n in base})) / (2 * h)
        analytic = float(sum((grads[n] * d[n]).sum() for n in base))
        assert abs(fd - analytic) <= 1e-6 * max(abs(fd), 1e-3), (fd, analytic)


def test_learned_rates_gradient_matches_finite_differences():
    """Meta-SGD eq. 4: the outer loop differentiates the query loss with respect to the rates α."""
    model, batch, learner = setup()
    learner.zero_grad(set_to_none=True)
    learner.meta_gradient(batch)
    lrs = {n: p.detach().clone() for n, p in learner.inner_learning_rate().items()}
    grads = {n: p.grad.detach().clone() for n, p in learner.inner_learning_rate().items()}
    assert set(grads) == {n for n, _ in model.named_parameters()}
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    directional_fd(lambda a: objective(model, theta, a, batch), lrs, grads, seed=1)


def test_init_gradient_matches_finite_differences():
    """Meta-SGD eq. 4: the initialization θ gets the exact second-order meta-gradient."""
    model, batch, learner = setup(1)
    learner.zero_grad(set_to_none=True)
    learner.meta_gradient(batch)
    lrs = {n: p.detach().clone() for n, p in learner.inner_learning_rate().items()}
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    directional_fd(lambda t: objective(model, t, lrs, batch), theta, grads, seed=2)


def test_first_order_rates_gradient():
    """First-order Meta-SGD, one step: ∂L_q/∂α = −∇L_support(θ) ∘ ∇L_query(θ')."""
    torch.manual_seed(2)
    model = MLP(1, [8, 8], 1).double()
    batch = SinusoidTasks(5, 7, seed=5).batch(0, 1).to("cpu", torch.float64)
    learner = MetaSGD(model, F.mse_loss, inner_lr=0.05, inner_steps=1, first_order=True, path="loop")
    learner.meta_gradient(batch)
    (sx, sy), (qx, qy) = batch.task(0)
    theta = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    g_s = torch.autograd.grad(F.mse_loss(functional_call(model, theta, (sx,)), sy), list(theta.values()))
    phi = {n: (v - 0.05 * g).detach().requires_grad_(True) for (n, v), g in zip(theta.items(), g_s)}
    g_q = torch.autograd.grad(F.mse_loss(functional_call(model, phi, (qx,)), qy), list(phi.values()))
    for (n, lr), a, b in zip(learner.inner_learning_rate().items(), g_s, g_q):
        torch.testing.assert_close(lr.grad, -a * b, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(model.get_parameter(n).grad, b, rtol=1e-10, atol=1e-14)
