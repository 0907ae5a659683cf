"""metaloop.core.norms: decomposed norms equal PyTorch's, and NormOverride's transductive BatchNorm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaloop.core.norms import NormOverride, batch_norm, group_norm, has_batch_norm, has_norms, layer_norm


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(6, 4), (5, 4, 3), (3, 4, 5, 5)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_equals_native(shape, training, affine):
    """Decomposed BatchNorm = F.batch_norm (batch statistics in training, running statistics in eval)."""
    x = rand(*shape)
    c = shape[1]
    mean, var = rand(c, seed=1), rand(c, seed=2).abs() + 0.5
    w, b = (rand(c, seed=3), rand(c, seed=4)) if affine else (None, None)
    expected = F.batch_norm(x, mean.clone(), var.clone(), w, b, training, 0.1, 1e-5)
    out = batch_norm(x, mean, var, w, b, training, 0.1, 1e-5)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    # the decomposed version never updates the running buffers
    assert torch.equal(mean, rand(c, seed=1))


@pytest.mark.parametrize("normalized", [(5,), (4, 5)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_equals_native(normalized, affine):
    """Decomposed LayerNorm = F.layer_norm over the trailing dimensions."""
    x = rand(3, 4, 5)
    w, b = (rand(*normalized, seed=1), rand(*normalized, seed=2)) if affine else (None, None)
    expected = F.layer_norm(x, normalized, w, b, 1e-5)
    torch.testing.assert_close(layer_norm(x, normalized, w, b, 1e-5), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 5), (2, 6, 3, 3)])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_equals_native(shape, affine):
    """Decomposed GroupNorm = F.group_norm."""
    x = rand(*shape)
    c = shape[1]
    groups = 2
    w, b = (rand(c, seed=1), rand(c, seed=2)) if affine else (None, None)
    expected = F.group_norm(x, groups, w, b, 1e-5)
    torch.testing.assert_close(group_norm(x, groups, w, b, 1e-5), expected, rtol=1e-12, atol=1e-12)


def test_decomposed_norms_have_native_second_order_gradients():
    """The decomposition is exact for the Hessian-vector products MAML needs, not only the forward."""
    x = rand(4, 3, 2, 2).requires_grad_(True)
    w = (rand(3, seed=1) + 2).requires_grad_(True)
    b = rand(3, seed=2).requires_grad_(True)
    cases = [
        (lambda: batch_norm(x, None, None, w, b, True), lambda: F.batch_norm(x, None, None, w, b, True)),
        (lambda: group_norm(x, 3, w, b), lambda: F.group_norm(x, 3, w, b)),
    ]
    for ours, native in cases:
        results = []
        for fn in (ours, native):
            out = fn()
            gx, gw = torch.autograd.grad((out.sin()).sum(), [x, w], create_graph=True)
            hvp = torch.autograd.grad((gx * gx).sum() + (gw * gw).sum(), [x, w, b])
            results.append((gx, gw) + hvp)
        for a, c in zip(*results):
            torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)


def test_force_batch_stats_in_eval_mode():
    """NormOverride(force_batch_stats=True): eval-mode BatchNorm uses batch stats; buffers untouched."""
    bn = nn.BatchNorm2d(3).double().eval()
    with torch.no_grad():
        bn.running_mean.fill_(2.0)
        bn.running_var.fill_(4.0)
        bn.weight.copy_(rand(3, seed=1))
        bn.bias.copy_(rand(3, seed=2))
    before = {n: b.clone() for n, b in bn.named_buffers()}
    x = rand(4, 3, 5, 5)
    with NormOverride(force_batch_stats=True, decompose=False):
        out = bn(x)
    expected = F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(out, bn(x))  # outside the override, eval mode uses the buffers
    for n, b in bn.named_buffers():
        assert torch.equal(b, before[n]), n


def test_decompose_override_matches_native_modules():
    """NormOverride(decompose=True) reroutes unmodified norm modules to the elementary-op versions."""
    x = rand(4, 4, 3, 3)
    for module in (nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.LayerNorm([3, 3])):
        module = module.double().train()
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
            module.running_var.fill_(2.0)
        expected = module(x)
        with NormOverride(force_batch_stats=False, decompose=True):
            out = module(x)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_has_norms():
    """Norm detection walks submodules."""
    assert has_norms(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)))
    assert not has_batch_norm(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)))
    assert has_batch_norm(nn.Sequential(nn.Sequential(nn.BatchNorm1d(2))))
    assert not has_norms(nn.Linear(2, 2))
