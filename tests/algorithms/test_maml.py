"""MAML / FOMAML meta-gradients against an independent, hand-written objective (float64)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from metaloop.algorithms import FOMAML, MAML
from metaloop.models.mlp import MLP
from metaloop.tasks.sinusoid import SinusoidTasks

LR = 0.05


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return MLP(1, [8, 8], 1).double()


def make_batch(count: int = 2):
    return SinusoidTasks(5, 7, seed=3).batch(0, count).to("cpu", torch.float64)


def hand_adapt(model, params, support, steps, *, names=None, clip=None):
    """Plain SGD on the support loss with ordinary (detached) gradients: φ = U^k(θ)."""
    names = list(params) if names is None else names
    x, y = support
    p = {n: v.detach() for n, v in params.items()}
    for _ in range(steps):
        leaves = {n: p[n].clone().requires_grad_(True) for n in names}
        loss = F.mse_loss(functional_call(model, {**p, **leaves}, (x,)), y)
        grads = torch.autograd.grad(loss, [leaves[n] for n in names])
        if clip is not None:
            norm = torch.sqrt(sum((g * g).sum() for g in grads))
            grads = [g * min(1.0, clip / float(norm)) for g in grads]
        p = {**p, **{n: p[n] - LR * g for n, g in zip(names, grads)}}
    return p


def objective(model, params, batch, steps, **kwargs) -> float:
    """The true meta-objective: mean over tasks of the query loss after adaptation."""
    total = 0.0
    for i in range(len(batch)):
        support, (qx, qy) = batch.task(i)
        phi = hand_adapt(model, params, support, steps, **kwargs)
        total += float(F.mse_loss(functional_call(model, phi, (qx,)), qy))
    return total / len(batch)


def check_against_fd(model, grads, batch, steps, *, directions=4, h=1e-5, **kwargs):
    """Central differences of the objective along random directions match ⟨∇, d⟩ to ~1e-6."""
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(123)
    for _ in range(directions):
        d = {n: torch.randn(v.shape, generator=gen, dtype=v.dtype) for n, v in theta.items()}
        plus = objective(model, {n: theta[n] + h * d[n] for n in theta}, batch, steps, **kwargs)
        minus = objective(model, {n: theta[n] - h * d[n] for n in theta}, batch, steps, **kwargs)
        fd = (plus - minus) / (2 * h)
        analytic = float(sum((grads[n] * d[n]).sum() for n in theta))
        assert abs(fd - analytic) <= 1e-6 * max(abs(fd), 1e-3), (fd, analytic)


def meta_grads(learner, batch) -> dict[str, torch.Tensor]:
    learner.zero_grad(set_to_none=True)
    learner.meta_gradient(batch)
    return {n: p.grad.detach().clone() for n, p in learner.model.named_parameters()}


def test_maml_one_step_matches_finite_differences():
    """MAML (Finn et al. 2017, Alg. 2): the meta-gradient of mean_i L_q(θ − α∇L_s(θ)) is exact."""
    model, batch = make_model(), make_batch()
    grads = meta_grads(MAML(model, F.mse_loss, inner_lr=LR, inner_steps=1, path="loop"), batch)
    check_against_fd(model, grads, batch, 1)


def test_maml_three_steps_matches_finite_differences():
    """MAML with k=3 inner steps differentiates through the whole inner trajectory."""
    model, batch = make_model(1), make_batch()
    grads = meta_grads(MAML(model, F.mse_loss, inner_lr=LR, inner_steps=3, path="loop"), batch)
    check_against_fd(model, grads, batch, 3)


def test_fomaml_is_query_gradient_at_adapted_params():
    """FOMAML (Finn et al. 2017, §5.2): the meta-gradient is mean_i ∇_{θ'} L_query(θ'_i)."""
    model, batch = make_model(2), make_batch()
    grads = meta_grads(FOMAML(model, F.mse_loss, inner_lr=LR, inner_steps=2, path="loop"), batch)
    theta = dict(model.named_parameters())
    expected = {n: torch.zeros_like(v) for n, v in theta.items()}
    for i in range(len(batch)):
        support, (qx, qy) = batch.task(i)
        phi = {n: v.requires_grad_(True) for n, v in hand_adapt(model, theta, support, 2).items()}
        loss = F.mse_loss(functional_call(model, phi, (qx,)), qy)
        for n, g in zip(phi, torch.autograd.grad(loss, list(phi.values()))):
            expected[n] += g / len(batch)
    for n in theta:
        torch.testing.assert_close(grads[n], expected[n], rtol=1e-10, atol=1e-12)


def test_second_and_first_order_differ():
    """The second-order terms of MAML are not negligible here, so the checks above are sensitive."""
    model, batch = make_model(3), make_batch()
    second = meta_grads(MAML(model, F.mse_loss, inner_lr=LR, inner_steps=2, path="loop"), batch)
    first = meta_grads(FOMAML(model, F.mse_loss, inner_lr=LR, inner_steps=2, path="loop"), batch)
    diff = torch.sqrt(sum(((second[n] - first[n]) ** 2).sum() for n in second))
    norm = torch.sqrt(sum((second[n] ** 2).sum() for n in second))
    assert diff / norm > 1e-3


def test_inner_clipping_matches_finite_differences():
    """clip_norm: the inner step θ − α·g·min(1, c/‖g‖) is differentiated through the clip factor."""
    model, batch = make_model(4), make_batch()
    learner = MAML(model, F.mse_loss, inner_lr=LR, inner_steps=2, inner_clip=0.5, path="loop")
    # the clip is active on these tasks (otherwise this would test nothing)
    support, _ = batch.task(0)
    x, y = support
    params = dict(model.named_parameters())
    g = torch.autograd.grad(F.mse_loss(model(x), y), list(params.values()))
    assert float(torch.sqrt(sum((t * t).sum() for t in g))) > 0.5
    grads = meta_grads(learner, batch)
    check_against_fd(model, grads, batch, 2, clip=0.5)
    unclipped = meta_grads(MAML(model, F.mse_loss, inner_lr=LR, inner_steps=2, path="loop"), batch)
    assert any(not torch.allclose(grads[n], unclipped[n]) for n in grads)


def test_adapt_filter_only_moves_selected_params_and_matches_fd():
    """adapt='0.*': the inner loop updates only the matched parameters; all are still meta-learned."""
    model, batch = make_model(5), make_batch()
    learner = MAML(model, F.mse_loss, inner_lr=LR, inner_steps=2, adapt="0.*", path="loop")
    assert learner.adapted_names == ["0.weight", "0.bias"]
    params = learner.params()
    phi = learner.adapt(params, batch.task(0)[0])
    for n, v in params.items():
        if n.startswith("0."):
            assert not torch.equal(phi[n], v)
        else:
            assert phi[n] is v
    grads = meta_grads(learner, batch)
    assert float(grads["4.weight"].abs().sum()) > 0
    check_against_fd(model, grads, batch, 2, names=["0.weight", "0.bias"])


def test_meta_gradient_never_writes_fast_weights_into_model():
    """The fast weights are a new dict at every step: the model's parameters are left as they were."""
    model, batch = make_model(6), make_batch()
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    learner = MAML(model, F.mse_loss, inner_lr=LR, inner_steps=3, path="loop")
    meta_grads(learner, batch)
    after = dict(model.named_parameters())
    for n, (obj, value) in before.items():
        assert after[n] is obj
        assert torch.equal(after[n].detach(), value)
