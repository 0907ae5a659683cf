"""The one-step lower bound for ANIL on the sinusoid: its premise, its risk formula and its solver."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import nnls

from metaloop.algorithms import ANIL
from metaloop.benchmarks.sinusoid_bound import (
    best_kernel,
    grid,
    head_step_kernel,
    moments,
    one_step_bound,
    smoother_risk,
)
from metaloop.models.mlp import MLP
from metaloop.tasks.sinusoid import SinusoidTasks


def test_anil_one_step_is_a_nonnegative_linear_smoother():
    """The premise: ANIL's adapted prediction is f(x) + Σ_k g(x, x_k)(y_k − f(x_k)), g = 2α/K (φ·φ' + 1) ≥ 0."""
    torch.manual_seed(0)
    model = MLP(1, [40, 40], 1).double()
    lr, shots = 0.01, 5
    learner = ANIL(model, F.mse_loss, inner_lr=lr, inner_steps=1, path="loop")
    (sx, sy), (qx, _) = SinusoidTasks(shots, 50, seed=3).batch(0, 1).to("cpu", torch.float64).task(0)
    params = learner.params()
    adapted = learner.predict(learner.adapt(params, (sx, sy)), qx).detach()
    with torch.no_grad():
        body = model[:-1]
        phi_q, phi_s = body(qx), body(sx)
        assert (phi_q >= 0).all() and (phi_s >= 0).all()
        kernel = 2 * lr / shots * (phi_q @ phi_s.T + 1)
        assert torch.equal(head_step_kernel(phi_q, lr, shots), 2 * lr / shots * (phi_q @ phi_q.T + 1))
        expected = model(qx) + kernel @ (sy - model(sx))
    torch.testing.assert_close(adapted, expected, rtol=1e-10, atol=1e-12)


def test_moments_match_sampled_tasks():
    x = grid(7)
    g = torch.Generator().manual_seed(0)
    n = 400_000
    amp = 0.1 + 4.9 * torch.rand(n, generator=g, dtype=torch.float64)
    phase = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    y = amp[:, None] * torch.sin(x[None, :] - phase[:, None])
    m, cov = moments(x)
    torch.testing.assert_close(y.mean(0), m, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(y.T), cov, atol=0.05, rtol=0)


def test_smoother_risk_matches_monte_carlo():
    """The closed-form risk of a kernel smoother equals its simulated query MSE on random tasks and designs."""
    shots, beta = 5, 0.05
    kern = lambda a, b: beta * (1 + torch.cos(a - b))  # a nonnegative kernel
    x = grid(201)
    formula = smoother_risk(kern(x[:, None], x[None, :]), shots)

    g = torch.Generator().manual_seed(1)
    n = 400_000
    amp = 0.1 + 4.9 * torch.rand(n, 1, generator=g, dtype=torch.float64)
    phase = math.pi * torch.rand(n, 1, generator=g, dtype=torch.float64)
    xs = -5 + 10 * torch.rand(n, shots, generator=g, dtype=torch.float64)
    xq = -5 + 10 * torch.rand(n, 1, generator=g, dtype=torch.float64)
    mean = lambda v: -2 * 2.55 / math.pi * torch.cos(v)
    ys, yq = amp * torch.sin(xs - phase), amp * torch.sin(xq - phase)
    pred = mean(xq) + (kern(xq, xs) * (ys - mean(xs))).sum(1, keepdim=True)
    err = (pred - yq) ** 2
    simulated, half_width = err.mean().item(), 3 * err.std().item() / math.sqrt(n)
    assert abs(formula - simulated) < half_width + 1e-3, (formula, simulated, half_width)


def test_best_nonnegative_kernel_matches_scipy_nnls():
    shots, points = 5, 41
    kernel = best_kernel(shots, points=points)
    cov = moments(grid(points))[1].numpy()
    w = 1.0 / points
    M = shots * (shots - 1) * w**2 * cov + shots * w * np.diag(np.diag(cov))
    L = np.linalg.cholesky(M)
    for i in (0, 7, 20, 33):
        b = shots * w * cov[:, i]
        reference, _ = nnls(L.T, np.linalg.solve(L, b))  # min ||Lᵀg − L⁻¹b||² = gᵀMg − 2bᵀg + const
        np.testing.assert_allclose(kernel[i].numpy(), reference, atol=1e-6 * np.abs(reference).max())


def test_the_bound_is_below_every_feasible_kernel_and_shrinks_with_shots():
    shots, points = 5, 101
    x = grid(points)
    bound = one_step_bound(shots, points=points)
    free = one_step_bound(shots, points=points, nonnegative=False)
    assert free < bound
    # any nonnegative kernel, e.g. random ReLU features (an untrained ANIL body) at many step sizes
    torch.manual_seed(0)
    phi = MLP(1, [40, 40], 1).double()[:-1]
    with torch.no_grad():
        features = phi(x[:, None])
    for scale in (1e-4, 1e-3, 1e-2, 1e-1):
        assert smoother_risk(head_step_kernel(features, scale, shots), shots) > bound
    prior = torch.diagonal(moments(x)[1]).mean().item()  # no step: the prior mean's error
    assert math.isclose(smoother_risk(torch.zeros(points, points), shots), prior, rel_tol=1e-12)
    assert one_step_bound(10, points=points) < bound
