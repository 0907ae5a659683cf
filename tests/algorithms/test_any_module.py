"""Any unmodified nn.Module works as MAML's model: MLPs, BatchNorm conv nets, Hugging Face transformers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metaloop.algorithms import MAML
from metaloop.models.mlp import MLP
from metaloop.tasks.base import TaskBatch
from metaloop.tasks.sinusoid import SinusoidTasks


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3),
    ).double()


def image_batch(tasks: int = 2, ways: int = 3, shots: int = 2) -> TaskBatch:
    gen = torch.Generator().manual_seed(1)
    sx = torch.randn(tasks, ways * shots, 1, 8, 8, generator=gen, dtype=torch.float64)
    qx = 1.5 + torch.randn(tasks, ways * shots, 1, 8, 8, generator=gen, dtype=torch.float64)
    y = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1).clone()
    return TaskBatch(sx, y, qx, y.clone())


def buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in model.named_buffers()}


def test_plain_mlp_is_used_unmodified():
    """MAML treats the model as f_θ only: no wrapping, no hooks, and predictions equal model(x)."""
    torch.manual_seed(0)
    model = MLP(1, [8, 8], 1).double()
    batch = SinusoidTasks(5, 5).batch(0, 2).to("cpu", torch.float64)
    learner = MAML(model, F.mse_loss, inner_lr=0.05, path="loop")
    loss = learner.meta_gradient(batch)
    assert loss > 0 and all(p.grad is not None for p in model.parameters())
    assert type(model) is nn.Sequential and not model._forward_hooks and not model._forward_pre_hooks
    x = batch.query_x[0]
    torch.testing.assert_close(learner.predict(learner.params(), x), model(x), rtol=0, atol=0)


def test_batchnorm_running_mode():
    """bn_mode='running': training forwards update the module's running buffers; eval mode uses them."""
    model = conv_net()
    bn = model[1]
    learner = MAML(model, F.cross_entropy, inner_lr=0.1, inner_steps=1, bn_mode="running", path="loop")
    before = buffers(model)
    learner.meta_gradient(image_batch())
    assert not torch.equal(bn.running_mean, before["1.running_mean"])
    assert not torch.equal(bn.running_var, before["1.running_var"])
    assert int(bn.num_batches_tracked) == 4  # 2 tasks × (1 support + 1 query) forwards

    learner.eval()
    x = image_batch().query_x[0]
    params = learner.params()
    out = learner.predict(params, x)
    model.eval()
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)  # the module's own eval forward
    torch.testing.assert_close(learner.predict(params, x[:1]), out[:1])  # per-example predictions
    after_train = buffers(model)
    learner.evaluate_batch(image_batch(), [0, 1], F.cross_entropy)
    for n, b in buffers(model).items():
        assert torch.equal(b, after_train[n]), n


def test_batchnorm_transductive_mode():
    """bn_mode='transductive' (MAML's convention): batch statistics always; the buffers never change."""
    model = conv_net()
    with torch.no_grad():  # buffers far from the data's statistics, so using them would show
        model[1].running_mean.fill_(3.0)
        model[1].running_var.fill_(9.0)
    before = buffers(model)
    learner = MAML(model, F.cross_entropy, inner_lr=0.1, inner_steps=2, bn_mode="transductive", path="loop")
    learner.meta_gradient(image_batch())
    learner.evaluate_batch(image_batch(), [0, 2], F.cross_entropy)
    for n, b in buffers(model).items():
        assert torch.equal(b, before[n]), n

    learner.eval()
    x = image_batch().query_x[0]
    out = learner.predict(learner.params(), x)
    model.train()
    with torch.no_grad():  # plain train-mode forward, on throwaway copies of the buffers
        batch_stats = functional_call(model, buffers(model), (x,))
    torch.testing.assert_close(out, batch_stats)  # eval mode still normalizes with the batch at hand
    model.eval()
    assert not torch.allclose(out, model(x))


# ---------------------------------------------------------------- a tiny Hugging Face model
INNER_LR = 0.1


def tiny_gpt2() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    # eager attention: torch's CPU SDPA kernel has no double backward (second-order MAML fails on
    # the loop path) and transformers' SDPA mask builder branches on tensor values (fails under vmap).
    config = transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=32, num_labels=3,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, attn_implementation="eager",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
    )
    torch.manual_seed(0)
    return transformers.GPT2ForSequenceClassification(config).double()


def text_batch(tasks: int = 2, n: int = 6, length: int = 6) -> TaskBatch:
    gen = torch.Generator().manual_seed(0)

    def inputs():
        ids = torch.randint(3, 50, (tasks, n, length), generator=gen)
        mask = torch.ones(tasks, n, length, dtype=torch.long)
        ids[:, ::2, -2:], mask[:, ::2, -2:] = 0, 0  # right padding on half the sequences
        return {"input_ids": ids, "attention_mask": mask}

    y = torch.arange(3).repeat(n // 3).expand(tasks, -1).clone()
    return TaskBatch(inputs(), y, inputs(), y.clone())


def logits_loss(output, y):
    return F.cross_entropy(output.logits, y)


def hf_objective(model, params, batch) -> float:
    """Mean query loss after one plain SGD step on the support set."""
    total = 0.0
    for i in range(len(batch)):
        (sx, sy), (qx, qy) = batch.task(i)
        leaves = {n: v.detach().clone().requires_grad_(True) for n, v in params.items()}
        loss = logits_loss(functional_call(model, leaves, (), sx), sy)
        grads = torch.autograd.grad(loss, list(leaves.values()))
        phi = {n: v.detach() - INNER_LR * g for (n, v), g in zip(leaves.items(), grads)}
        with torch.no_grad():
            total += float(logits_loss(functional_call(model, phi, (), qx), qy))
    return total / len(batch)


def test_huggingface_model_meta_gradient_matches_finite_differences():
    """Second-order MAML through a transformer with dict inputs (loop path) = central differences."""
    model, batch = tiny_gpt2(), text_batch()
    learner = MAML(model, logits_loss, inner_lr=INNER_LR, inner_steps=1, path="loop")
    learner.meta_gradient(batch)
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(3)
    h = 1e-5
    for _ in range(2):
        d = {n: torch.randn(v.shape, generator=gen, dtype=v.dtype) for n, v in theta.items()}
        plus = hf_objective(model, {n: theta[n] + h * d[n] for n in theta}, batch)
        minus = hf_objective(model, {n: theta[n] - h * d[n] for n in theta}, batch)
        fd = (plus - minus) / (2 * h)
        analytic = float(sum((grads[n] * d[n]).sum() for n in theta))
        assert abs(fd - analytic) <= 1e-6 * max(abs(fd), 1e-3), (fd, analytic)


def test_huggingface_model_loop_equals_vmap():
    """The vmap path also runs the transformer (eager attention) and agrees with the loop path."""
    model, batch = tiny_gpt2(), text_batch()
    grads = {}
    for path in ("loop", "vmap"):
        model.zero_grad(set_to_none=True)
        MAML(model, logits_loss, inner_lr=INNER_LR, inner_steps=1, path=path).meta_gradient(batch)
        grads[path] = torch.cat([p.grad.flatten() for p in model.parameters()])
    scale = grads["loop"].abs().max()
    assert float((grads["loop"] - grads["vmap"]).abs().max() / scale) < 1e-10
