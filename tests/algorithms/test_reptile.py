"""Reptile (Nichol et al. 2018, Alg. 2): θ ← θ + ε · mean_i(φ_i − θ), φ_i = U^k_τi(θ)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metaloop.algorithms import Reptile
from metaloop.models.mlp import MLP
from metaloop.tasks.sinusoid import SinusoidTasks

INNER_LR, STEPS, EPS = 0.02, 3, 0.3


def setup(seed: int = 0):
    torch.manual_seed(seed)
    model = MLP(1, [8, 8], 1).double()
    batch = SinusoidTasks(5, 7, seed=9).batch(0, 3).to("cpu", torch.float64)
    return model, batch


def sgd_phi(model, theta, support, query=None):
    """k SGD steps on the support set, or on support and query in turn."""
    p = dict(theta)
    for t in range(STEPS):
        x, y = support if query is None or t % 2 == 0 else query
        leaves = {n: v.clone().requires_grad_(True) for n, v in p.items()}
        loss = F.mse_loss(functional_call(model, leaves, (x,)), y)
        grads = torch.autograd.grad(loss, list(leaves.values()))
        p = {n: p[n] - INNER_LR * g for n, g in zip(p, grads)}
    return p


def adam_phi(model, theta, support, query=None):
    """k steps of Adam (β1 = 0), one optimizer state over the steps, on the support set or on both in turn."""
    copy = {n: nn.Parameter(v.clone()) for n, v in theta.items()}
    opt = torch.optim.Adam(copy.values(), lr=INNER_LR, betas=(0.0, 0.999), eps=1e-8)
    for t in range(STEPS):
        x, y = support if query is None or t % 2 == 0 else query
        opt.zero_grad()
        F.mse_loss(functional_call(model, copy, (x,)), y).backward()
        opt.step()
    return {n: v.detach() for n, v in copy.items()}


def expected_update(model, batch, phi_fn, eps, alternate=False):
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    phis = [phi_fn(model, theta, *(batch.task(i) if alternate else batch.task(i)[:1])) for i in range(len(batch))]
    return {n: theta[n] + eps * torch.stack([phi[n] - theta[n] for phi in phis]).mean(0) for n in theta}


@pytest.mark.parametrize("optimizer, phi_fn", [("sgd", sgd_phi), ("adam", adam_phi)])
def test_reptile_step(optimizer, phi_fn):
    """Reptile's batched update with k SGD steps, or Adam(β1=0) as in the paper's code, in the inner loop."""
    model, batch = setup()
    expected = expected_update(model, batch, phi_fn, EPS)
    learner = Reptile(
        model, F.mse_loss, inner_lr=INNER_LR, inner_steps=STEPS, inner_optimizer=optimizer, path="loop"
    )
    learner.meta_step(batch, learner.make_optimizer(EPS))
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n], rtol=1e-10, atol=1e-12)


def test_reptile_linear_annealing():
    """anneal=True: before_step(opt, i, n) sets the outer step size to ε(1 − i/n)."""
    model, batch = setup(1)
    learner = Reptile(model, F.mse_loss, inner_lr=INNER_LR, inner_steps=STEPS, anneal=True, path="loop")
    opt = learner.make_optimizer(EPS)
    for i, n in [(0, 10), (3, 10), (9, 10)]:
        learner.before_step(opt, i, n)
        assert opt.param_groups[0]["lr"] == pytest.approx(EPS * (1 - i / n), rel=1e-15)
    learner.before_step(opt, 3, 10)
    expected = expected_update(model, batch, sgd_phi, EPS * 0.7)
    learner.meta_step(batch, opt)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n], rtol=1e-10, atol=1e-12)


def test_reptile_without_anneal_keeps_step_size():
    """anneal=False (the default): ε stays constant."""
    model, _ = setup(2)
    learner = Reptile(model, F.mse_loss, inner_lr=INNER_LR, inner_steps=STEPS, path="loop")
    opt = learner.make_optimizer(EPS)
    learner.before_step(opt, 5, 10)
    assert opt.param_groups[0]["lr"] == EPS


def test_reptile_adam_outer_step():
    """outer_optimizer="adam" (Nichol et al. 2018, §3): θ − mean_i φ_i is Adam's gradient, over two steps
    (so that Adam's moments matter), with annealing of Adam's step size."""
    model, batch = setup(3)
    reference = copy.deepcopy(model)
    learner = Reptile(model, F.mse_loss, inner_lr=INNER_LR, inner_steps=STEPS, outer_optimizer="adam", anneal=True,
                      path="loop")
    opt = learner.make_optimizer(EPS)
    assert isinstance(opt, torch.optim.Adam)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=EPS)
    for i in range(2):
        theta = {n: p.detach().clone() for n, p in reference.named_parameters()}
        phis = [sgd_phi(reference, theta, batch.task(t)[0]) for t in range(len(batch))]
        for n, p in reference.named_parameters():
            p.grad = theta[n] - torch.stack([phi[n] for phi in phis]).mean(0)
        ref_opt.param_groups[0]["lr"] = EPS * (1 - i / 4)
        ref_opt.step()
        learner.before_step(opt, i, 4)
        learner.meta_step(batch, opt)
        for (n, p), q in zip(model.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-10, atol=1e-12)


def test_reptile_options_are_checked():
    model, _ = setup()
    with pytest.raises(ValueError, match="outer_optimizer"):
        Reptile(model, F.mse_loss, outer_optimizer="rmsprop")
    with pytest.raises(ValueError, match="inner_batches"):
        Reptile(model, F.mse_loss, inner_batches="query")


@pytest.mark.parametrize("path", ["loop", "vmap"])
@pytest.mark.parametrize("optimizer, phi_fn", [("sgd", sgd_phi), ("adam", adam_phi)])
def test_reptile_alternating_batches(optimizer, phi_fn, path):
    """inner_batches="alternate": the k inner steps go support, query, support, … (Adam keeps one state across
    them), then the same outer update; test-time adaptation still uses the support set only."""
    model, batch = setup(4)
    expected = expected_update(model, batch, phi_fn, EPS, alternate=True)
    learner = Reptile(model, F.mse_loss, inner_lr=INNER_LR, inner_steps=STEPS, inner_optimizer=optimizer,
                      inner_batches="alternate", path=path)
    learner.meta_step(batch, learner.make_optimizer(EPS))
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n], rtol=1e-10, atol=1e-12)
    learner.eval()
    theta = {n: p.detach() for n, p in model.named_parameters()}
    adapted = learner.adapt(theta, batch.task(0)[0], steps=STEPS)
    only_support = phi_fn(model, theta, batch.task(0)[0])
    for n in theta:
        torch.testing.assert_close(adapted[n], only_support[n], rtol=1e-10, atol=1e-12)
