"""metaloop.core.inner and core.params: the shared inner loop and the 'adapt' parameter selection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metaloop.core.inner import clip_by_global_norm, gradient_descent, gradient_descent_steps
from metaloop.core.params import head_names, select_names
from metaloop.errors import MetaloopError
from metaloop.models.mlp import MLP

TARGET = {"a": torch.tensor([1.0, -2.0], dtype=torch.float64), "b": torch.tensor(3.0, dtype=torch.float64)}


def quadratic(p):
    return sum(((p[n] - TARGET[n]) ** 2).sum() for n in TARGET)


def start():
    return {"a": torch.zeros(2, dtype=torch.float64), "b": torch.zeros((), dtype=torch.float64)}


def test_gradient_descent_yields_steps_plus_one():
    """The inner loop yields θ_0 … θ_k with θ_{t+1} = θ_t − α∇L(θ_t) (Finn et al. 2017, eq. 1)."""
    params = start()
    trajectory = list(gradient_descent_steps(quadratic, params, ["a", "b"], lr=0.1, steps=3))
    assert len(trajectory) == 4
    assert all(trajectory[0][n] is params[n] for n in params)
    for t, p in enumerate(trajectory):  # ∇ = 2(θ − target): θ_t − target = 0.8^t (θ_0 − target)
        for n in params:
            torch.testing.assert_close(p[n], TARGET[n] + 0.8**t * (params[n] - TARGET[n]))
    final = gradient_descent(quadratic, params, ["a", "b"], lr=0.1, steps=3)
    for n in params:
        torch.testing.assert_close(final[n], trajectory[-1][n])


def test_only_named_params_move():
    """Parameters outside `names` keep their values (and identity) through the inner loop."""
    params = start()
    final = gradient_descent(quadratic, params, ["a"], lr=0.1, steps=2)
    assert final["b"] is params["b"]
    assert not torch.equal(final["a"], params["a"])


def test_clip_by_global_norm():
    """Clipping scales all gradients by min(1, c/‖g‖) with the global norm over every tensor."""
    grads = {"a": torch.tensor([3.0, 0.0], dtype=torch.float64), "b": torch.tensor(4.0, dtype=torch.float64)}
    clipped = clip_by_global_norm(grads, 1.0)
    norm = torch.sqrt(sum((g * g).sum() for g in clipped.values()))
    torch.testing.assert_close(norm, torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(clipped["a"], grads["a"] / 5)
    torch.testing.assert_close(clipped["b"], grads["b"] / 5)
    kept = clip_by_global_norm(grads, 10.0)
    for n in grads:
        torch.testing.assert_close(kept[n], grads[n])


def test_clip_norm_in_inner_step():
    """With clip_norm=c the inner step has length α·c when ‖g‖ > c."""
    params = start()
    after = gradient_descent(quadratic, params, ["a", "b"], lr=0.5, steps=1, clip_norm=0.1)
    step = torch.sqrt(sum(((after[n] - params[n]) ** 2).sum() for n in params))
    torch.testing.assert_close(step, torch.tensor(0.05, dtype=torch.float64))


def test_adam_requires_first_order():
    """The Adam inner optimizer (Reptile's code) is first-order only."""
    with pytest.raises(MetaloopError, match="adam"):
        gradient_descent(quadratic, start(), ["a"], lr=0.1, steps=1, optimizer="adam", first_order=False)
    gradient_descent(quadratic, start(), ["a"], lr=0.1, steps=1, optimizer="adam", first_order=True)


def test_unknown_optimizer():
    """An unknown inner optimizer is a user error naming the option."""
    with pytest.raises(MetaloopError, match="inner_optimizer"):
        gradient_descent(quadratic, start(), ["a"], lr=0.1, steps=1, optimizer="rmsprop")


def test_select_names():
    """adapt='all', 'head' (ANIL, Raghu et al. 2020) and comma-separated globs."""
    model = MLP(1, [4, 4], 1)
    every = [n for n, _ in model.named_parameters()]
    assert select_names(model, "all") == every
    assert select_names(model, "head") == ["4.weight", "4.bias"] == head_names(model)
    assert select_names(model, "*.bias") == ["0.bias", "2.bias", "4.bias"]
    assert select_names(model, "0.*, 4.weight") == ["0.weight", "0.bias", "4.weight"]


def test_select_names_skips_frozen_params():
    """Frozen parameters (requires_grad=False) are never adapted."""
    model = MLP(1, [4], 1)
    model[0].weight.requires_grad_(False)
    assert select_names(model, "all") == ["0.bias", "2.weight", "2.bias"]


def test_select_names_no_match():
    """A glob that matches nothing is a user error naming the 'adapt' option."""
    with pytest.raises(MetaloopError, match="'adapt'"):
        select_names(nn.Sequential(nn.Linear(2, 2)), "classifier.*")
