"""Trust-region pieces (metaloop/core/trpo.py): conjugate gradient against a direct solve, the KL of diagonal
Gaussians against torch.distributions, and the step that meets the KL bound on its quadratic model."""

from __future__ import annotations

import torch
from torch.distributions import Independent, Normal, kl_divergence

from metaloop.core.trpo import conjugate_gradient, gaussian_kl, trust_region_step


def spd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return a @ a.T + n * torch.eye(n, dtype=torch.float64)


def test_conjugate_gradient_solves_a_positive_definite_system():
    a = spd(8, 0)
    b = torch.randn(8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=8)  # exact in n iterations, up to rounding
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-9, atol=1e-12)
    few = conjugate_gradient(lambda v: a @ v, b, iters=2)
    assert (a @ few - b).norm() < b.norm()  # each iteration reduces the residual's A-norm error


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(2)
    mp, mq = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    sp, sq = 0.3 * torch.randn(3, generator=g), 0.3 * torch.randn(3, generator=g)
    expected = kl_divergence(Independent(Normal(mp, sp.exp()), 1), Independent(Normal(mq, sq.exp()), 1))
    torch.testing.assert_close(gaussian_kl(mp, sp, mq, sq), expected)
    assert torch.allclose(gaussian_kl(mp, sp, mp, sp), torch.zeros(5), atol=1e-7)


def test_the_step_meets_the_kl_bound_on_the_quadratic_model():
    a = spd(4, 3)
    s = torch.randn(4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    step = trust_region_step(s, a @ s, 0.01)
    assert torch.isclose(0.5 * step @ a @ step, torch.tensor(0.01, dtype=torch.float64))
    assert torch.allclose(step / step.norm(), s / s.norm())
