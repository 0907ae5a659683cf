"""PPO's clipped surrogate (metaloop/core/ppo.py): its value, and a zero gradient where the ratio has moved past the
band in the direction the advantage favours."""

from __future__ import annotations

import torch

from metaloop.core.ppo import clipped_surrogate


def test_the_gradient_stops_past_the_band_in_the_favoured_direction():
    ratio = torch.tensor([0.5, 1.0, 1.5, 0.5, 1.0, 1.5], requires_grad=True)
    adv = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    value = clipped_surrogate(ratio, adv, torch.ones(6), clip=0.2)
    expected = torch.tensor([0.5, 1.0, 1.2, -0.8, -1.0, -1.5]).mean()
    torch.testing.assert_close(value, expected)
    (grad,) = torch.autograd.grad(value, ratio)
    # A > 0: a ratio below the band still gets the gradient (moving up helps), above it none; A < 0 the mirror.
    torch.testing.assert_close(grad * 6, torch.tensor([1.0, 1.0, 0.0, 0.0, -1.0, -1.0]))


def test_masked_steps_do_not_count():
    ratio, adv = torch.ones(4), torch.tensor([1.0, 2.0, 3.0, 100.0])
    assert clipped_surrogate(ratio, adv, torch.tensor([1.0, 1.0, 1.0, 0.0]), clip=0.2) == 2.0
