"""TinyGPT: a byte-level GPT-2 built from a config, with optional LoRA adapters; MAML through LoRA."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

pytest.importorskip("transformers")
pytest.importorskip("peft")

from metaloop.algorithms import MAML  # noqa: E402
from metaloop.benchmarks.lm import lm_loss  # noqa: E402
from metaloop.models.gpt import TinyGPT  # noqa: E402
from metaloop.tasks.base import TaskBatch  # noqa: E402

TINY = dict(n_layer=1, n_embd=8, n_head=2, n_positions=16, vocab_size=32)


def tiny(seed: int = 0, **kwargs) -> TinyGPT:
    torch.manual_seed(seed)
    return TinyGPT(**{**TINY, **kwargs})


def test_default_size_and_shapes():
    """The default model is GPT-2 with 2 blocks of width 128 over 256 bytes: under a million parameters."""
    model = TinyGPT()
    n = sum(p.numel() for p in model.parameters())
    assert 400_000 < n < 1_000_000
    assert model.gpt.config.vocab_size == 256 and model.gpt.config._attn_implementation == "eager"
    x = torch.randint(1, 256, (3, 19))
    assert model(x).shape == (3, 19, 256)
    assert not any("lora_" in name for name, _ in model.named_parameters())


def test_causal_and_right_padding():
    """Logits at a position depend only on the tokens up to it: right padding changes nothing before it,
    and the forward is deterministic (no dropout)."""
    model = tiny()
    x = torch.randint(1, 32, (2, 12))
    padded = x.clone()
    padded[:, 7:] = 0
    out, out_padded = model(x), model(padded)
    torch.testing.assert_close(out[:, :7], out_padded[:, :7])
    assert torch.equal(model(x), out)
    with pytest.raises(ValueError, match="n_positions"):
        model(torch.ones(1, 17, dtype=torch.long))


def test_lora_adapters():
    """lora_rank > 0 puts LoRA on every c_attn; at initialization (B = 0) the output is the base model's;
    the base weights stay meta-learnable unless freeze_base."""
    base, lora = tiny(0, n_layer=2), tiny(0, n_layer=2, lora_rank=2)
    names = lora.lora_names()
    assert len(names) == 4 and all(".attn.c_attn.lora_" in n for n in names)
    x = torch.randint(1, 32, (2, 10))
    torch.testing.assert_close(base(x), lora(x))
    assert all(p.requires_grad for p in lora.parameters())
    frozen = tiny(0, lora_rank=2, freeze_base=True)
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable == set(frozen.lora_names())


def lora_batch(tasks: int = 2, n: int = 3, length: int = 8) -> TaskBatch:
    gen = torch.Generator().manual_seed(1)

    def part():
        x = torch.randint(1, 32, (tasks, n, length), generator=gen)
        y = torch.randint(1, 32, (tasks, n, length), generator=gen)
        y[:, :, :3] = -100  # unscored prompt
        y[:, 0, -2:] = -100
        return x, y

    (sx, sy), (qx, qy) = part(), part()
    return TaskBatch(sx, sy, qx, qy)


INNER_LR = 0.5


def _objective(model, params, batch, names) -> float:
    """Mean query loss after one plain SGD step on the LoRA parameters only (independent code)."""
    total = 0.0
    for i in range(len(batch)):
        (sx, sy), (qx, qy) = batch.task(i)
        leaves = {n: params[n].detach().clone().requires_grad_(True) for n in names}
        loss = lm_loss(functional_call(model, {**params, **leaves}, (sx,)), sy)
        grads = torch.autograd.grad(loss, list(leaves.values()))
        phi = {**params, **{n: leaves[n].detach() - INNER_LR * g for n, g in zip(names, grads)}}
        total += float(lm_loss(functional_call(model, phi, (qx,)), qy))
    return total / len(batch)


def test_maml_through_lora_matches_finite_differences():
    """MAML with adapt='*lora_*' (one inner step on the adapters only): the meta-gradient of every
    parameter, base weights included, matches central differences of the meta-objective in float64."""
    model = tiny(3, lora_rank=2).double()
    with torch.no_grad():  # B = 0 at initialization would make the A-gradients vanish: perturb it
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(4))
    batch = lora_batch()
    learner = MAML(model, lm_loss, inner_lr=INNER_LR, inner_steps=1, adapt="*lora_*", path="loop")
    names = learner.adapted_names
    assert names == model.lora_names()
    learner.zero_grad(set_to_none=True)
    learner.meta_gradient(batch)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    assert all(float(grads[n].abs().sum()) > 0 for n in names)
    assert float(grads["gpt.transformer.h.0.mlp.c_fc.weight"].abs().sum()) > 0  # base weights are meta-learned
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen, h = torch.Generator().manual_seed(5), 1e-6  # truncation error ∝ h²: 1e-8 relative here
    for _ in range(3):
        d = {n: torch.randn(v.shape, generator=gen, dtype=v.dtype) for n, v in theta.items()}
        plus = _objective(model, {n: theta[n] + h * d[n] for n in theta}, batch, names)
        minus = _objective(model, {n: theta[n] - h * d[n] for n in theta}, batch, names)
        fd = (plus - minus) / (2 * h)
        analytic = float(sum((grads[n] * d[n]).sum() for n in theta))
        assert abs(fd - analytic) <= 1e-6 * max(abs(fd), 1e-3), (fd, analytic)
    # along the adapters alone too (their gradient is second order through the inner step)
    d = {n: torch.randn(theta[n].shape, generator=gen, dtype=torch.float64) if n in names else
         torch.zeros_like(theta[n]) for n in theta}
    plus = _objective(model, {n: theta[n] + h * d[n] for n in theta}, batch, names)
    minus = _objective(model, {n: theta[n] - h * d[n] for n in theta}, batch, names)
    analytic = float(sum((grads[n] * d[n]).sum() for n in names))
    assert abs((plus - minus) / (2 * h) - analytic) <= 1e-6 * max(abs(analytic), 1e-3)
