"""LEO (Rusu et al. 2019): encoder and relation net, the latent and fine-tuning steps by hand, the
meta-gradient against finite differences, the regularizers' closed forms, seeded sampling, ways, and
end-to-end training on synthetic features."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from metaloop.algorithms import LEO
from metaloop.algorithms.leo import kl_standard_normal, orthogonality_penalty
from metaloop.errors import MetaloopError
from metaloop.tasks.base import TaskBatch

D, L = 6, 3  # feature and latent dimensions of the small cases



def learner(**kwargs) -> LEO:
    return LEO(kwargs.pop("feature_dim", D), **{"latent_dim": L, "inner_lr": 0.1, **kwargs}).double()


def clusters(
    tasks: int, ways: int, shots: int, queries: int, d: int, seed: int, sep: float = 1.0
) -> TaskBatch:
    """Gaussian class clusters of features of norm about ``sep`` (shuffled support labels)."""
    gen = torch.Generator().manual_seed(seed)
    means = sep * torch.randn(tasks, ways, d, generator=gen, dtype=torch.float64) / d**0.5
    sy = torch.stack([torch.arange(ways).repeat_interleave(shots)[torch.randperm(ways * shots, generator=gen)]
                      for _ in range(tasks)])
    qy = torch.arange(ways).repeat_interleave(queries).expand(tasks, -1).clone()
    rows = torch.arange(tasks).unsqueeze(-1)
    noise = lambda n: 0.5 / d**0.5 * torch.randn(tasks, n, d, generator=gen, dtype=torch.float64)
    return TaskBatch(means[rows, sy] + noise(sy.shape[1]), sy, means[rows, qy] + noise(qy.shape[1]), qy)


def one_task(ways: int = 3, shots: int = 2, queries: int = 2, seed: int = 0):
    return clusters(1, ways, shots, queries, D, seed).task(0)


def support_grad(w: torch.Tensor, present: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂/∂w of Σ_i CE(x_i wᵀ, y_i) in closed form: (softmax − onehot)ᵀ x, absent columns masked."""
    logits = (x @ w.T).masked_fill(~present, float("-inf"))
    residual = torch.softmax(logits, -1) - F.one_hot(y, w.shape[0]).double()
    return residual.T @ x


def test_shapes_parameters_and_paths():
    """Class slots = support size; absent slots get -inf logits; the learner owns every parameter
    (state_dict covers them); only the loop path runs."""
    leo = learner()
    names = {k: tuple(v.shape) for k, v in leo.params().items()}
    assert names == {
        "encoder.weight": (L, D), "relation.0.weight": (2 * L, 2 * L), "relation.2.weight": (2 * L, 2 * L),
        "relation.4.weight": (2 * L, 2 * L), "decoder.weight": (2 * D, L),
        "inner_lr": (L,), "finetune_lr": (D,),
    }
    assert {"model." + k for k in names} <= set(leo.state_dict())
    assert leo.path == "loop" and learner(path="loop").path == "loop"
    with pytest.raises(MetaloopError, match="path=loop"):
        learner(path="vmap")
    (sx, sy), (qx, _) = one_task(ways=3, shots=2, queries=2)
    for training in (True, False):
        leo.train(training)
        state = leo.adapt(leo.params(), (sx, sy))
        assert state.weights.shape == (6, D) and state.latents.shape == (6, L)
        assert state.present.tolist() == [True] * 3 + [False] * 3
        logits = leo.predict(state, qx)
        assert logits.shape == (6, 6)
        assert torch.isinf(logits[:, 3:]).all() and torch.isfinite(logits[:, :3]).all()
        assert all(t.dim() == 0 and torch.isfinite(t) for t in (state.kl, state.encoder_penalty,
                                                                state.orthogonality, state.l2))
    # a state_dict round trip reproduces the learner
    other = learner(seed=5)
    other.load_state_dict(leo.state_dict())
    leo.eval(), other.eval()
    torch.testing.assert_close(other.adapt(other.params(), (sx, sy)).weights,
                               leo.adapt(leo.params(), (sx, sy)).weights, rtol=0, atol=0)


def test_encoder_is_the_papers_relation_network():
    """(μ_c, u_c) = mean over class-c support points i of mean_j g_r([g_e(x_i), g_e(x_j)]) (eq. 4, no
    dropout in evaluation mode); σ = max(exp(u) − 1, 1e-10) as in the code."""
    leo = learner().eval()
    (sx, sy), _ = one_task(ways=3, shots=2)
    p = {k: v.detach() for k, v in leo.params().items()}
    h = sx @ p["encoder.weight"].T

    def g_r(a, b):
        r = torch.relu(torch.cat([a, b]) @ p["relation.0.weight"].T)
        r = torch.relu(r @ p["relation.2.weight"].T)
        return r @ p["relation.4.weight"].T

    per_example = torch.stack([torch.stack([g_r(h[i], h[j]) for j in range(6)]).mean(0) for i in range(6)])
    q = leo.encode(leo.params(), sx, sy)
    for c in range(3):
        expected = per_example[sy == c].mean(0)
        torch.testing.assert_close(q.mean[c], expected[:L], rtol=1e-12, atol=1e-12)
        std = (expected[L:].exp() - 1).clamp(min=1e-10)
        torch.testing.assert_close(q.std[c], std, rtol=1e-12, atol=1e-12)
    assert q.present.tolist() == [True] * 3 + [False] * 3
    assert torch.all(q.mean[3:] == 0)


def test_latent_inner_step_by_hand():
    """z ← z − α ⊙ ∇_z L_tr(decode(z)) with L_tr the summed support cross-entropy, ∇_z = (∂L/∂w) D_μ
    for the decoder's mean half D_μ; per-dimension α; adapt_steps reports every count."""
    leo = learner(finetune_steps=0).eval()
    with torch.no_grad():
        leo.model.inner_lr.copy_(torch.tensor([0.3, 0.05, 0.2]))
    (sx, sy), _ = one_task(ways=3, shots=2)
    states = leo.adapt_steps(leo.params(), (sx, sy), [0, 1, 2])
    alpha = leo.model.inner_lr.detach()
    D_mu = leo.model.decoder.weight.detach()[:D]  # [d, L]: μ_w = D_μ z
    present = states[0].present
    z = states[0].latents
    for s in (1, 2):
        w = z @ D_mu.T
        z = z - alpha * (support_grad(w, present, sx, sy) @ D_mu)
        torch.testing.assert_close(states[s].latents, z, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(states[s].weights, z @ D_mu.T, rtol=1e-12, atol=1e-12)  # no fine-tuning
        torch.testing.assert_close(states[s].initial_latents, states[0].latents, rtol=0, atol=0)
    for s, state in zip([0, 1, 2], states):
        alone = leo.adapt(leo.params(), (sx, sy), steps=s)
        torch.testing.assert_close(alone.weights, state.weights, rtol=0, atol=0)
    # the default step count in evaluation mode is test_inner_steps
    zero = learner(test_inner_steps=0, finetune_steps=0).eval()
    assert torch.equal(zero.adapt(leo.params(), (sx, sy)).weights, states[0].weights)


def test_inner_clipping():
    """inner_clip = c: each latent and fine-tuning gradient is scaled by min(1, c/‖g‖) before its step, and
    the meta-gradient (through the clipping factor) still matches central differences."""
    (sx, sy), (qx, qy) = one_task(ways=3, shots=2, queries=2, seed=2)
    free = learner(finetune_steps=0).eval()
    clipped = learner(finetune_steps=0, inner_clip=1e-3).eval()
    alpha = float(free.model.inner_lr.detach()[0])
    D_mu = free.model.decoder.weight.detach()[:D]
    z0 = free.adapt(free.params(), (sx, sy), steps=0).latents.detach()
    g = support_grad(z0 @ D_mu.T, free.adapt(free.params(), (sx, sy), steps=0).present, sx, sy) @ D_mu
    assert float(g.norm()) > 1e-3
    one = clipped.adapt(clipped.params(), (sx, sy), steps=1).latents
    torch.testing.assert_close(one, z0 - alpha * g * (1e-3 / g.norm()), rtol=1e-9, atol=1e-12)
    unclipped = learner(finetune_steps=0, inner_clip=1e6).eval()  # a loose bound changes nothing
    torch.testing.assert_close(unclipped.adapt(unclipped.params(), (sx, sy), steps=2).latents,
                               free.adapt(free.params(), (sx, sy), steps=2).latents, rtol=1e-12, atol=1e-14)

    # the encoder penalty's stop-gradient is checked above; here only the clipped steps are differentiated
    leo = learner(inner_steps=2, finetune_steps=2, dropout=0.0, inner_clip=0.05, finetune_lr_init=0.05, seed=3,
                  encoder_penalty_weight=0.0)
    params = leo.params()

    def loss_at(p):
        leo.reseed(7)
        return leo.loss(leo.adapt(p, (sx, sy)), (qx, qy))

    same = learner(inner_steps=2, finetune_steps=2, dropout=0.0, finetune_lr_init=0.05, seed=3)
    same.reseed(7)
    assert not torch.allclose(same.adapt(params, (sx, sy)).weights, leo.adapt(params, (sx, sy)).weights)
    grads = torch.autograd.grad(loss_at(params), list(params.values()))
    gen = torch.Generator().manual_seed(1)
    eps = 1e-6
    with torch.no_grad():
        for _ in range(3):
            v = {k: torch.randn(t.shape, generator=gen, dtype=t.dtype) for k, t in params.items()}
            analytic = sum(float((gk * v[k]).sum()) for k, gk in zip(params, grads))
            numeric = (float(loss_at({k: t + eps * v[k] for k, t in params.items()}))
                       - float(loss_at({k: t - eps * v[k] for k, t in params.items()}))) / (2 * eps)
            assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), (analytic, numeric)


def test_finetuning_step_by_hand():
    """After the latent loop, w ← w − η ⊙ ∇_w L_tr(w), with per-feature η."""
    leo = learner(finetune_steps=2).eval()
    with torch.no_grad():
        leo.model.finetune_lr.copy_(torch.linspace(0.05, 0.4, D))
    (sx, sy), _ = one_task(ways=3, shots=2)
    state = leo.adapt(leo.params(), (sx, sy), steps=1)
    eta = leo.model.finetune_lr.detach()
    w = state.latents @ leo.model.decoder.weight.detach()[:D].T
    for _ in range(2):
        w = w - eta * support_grad(w, state.present, sx, sy)
    torch.testing.assert_close(state.weights, w, rtol=1e-12, atol=1e-12)


def test_meta_gradient_matches_finite_differences():
    """The second-order meta-gradient of the full outer loss (query CE + β·KL + γ·encoder penalty +
    λ₂·orthogonality + λ₁·L2), with sampling and dropout on and the noise fixed by reseeding, against
    central differences along random directions and along α and η alone; 3-way in 6 class slots.
    The encoder penalty's stop-gradient makes the meta-gradient that of the loss with z' held at its
    value, so the reference differentiates γ·mean(z(θ) − z'(θ₀))² in place of the γ-term."""
    leo = learner(inner_steps=2, finetune_steps=2, dropout=0.3, kl_weight=0.5, encoder_penalty_weight=0.5,
                  orthogonality_weight=0.5, l2_weight=0.1, finetune_lr_init=0.05, seed=3)
    (sx, sy), (qx, qy) = one_task(ways=3, shots=2, queries=3, seed=1)
    params = leo.params()

    def loss_at(p, frozen=None):
        leo.reseed(7)
        state = leo.adapt(p, (sx, sy))
        loss = leo.loss(state, (qx, qy))
        if frozen is not None:
            gamma = leo.encoder_penalty_weight
            held = (state.initial_latents[:3] - frozen).pow(2).mean()
            loss = loss - gamma * state.encoder_penalty + gamma * held
        return loss, state

    loss, state = loss_at(params)
    frozen = state.latents[:3].detach()
    assert float(state.encoder_penalty.detach()) > 1e-4 and float(state.kl.detach()) > 0
    grads = torch.autograd.grad(loss, list(params.values()))
    assert all(torch.isfinite(g).all() for g in grads)
    assert float(grads[list(params).index("inner_lr")].abs().sum()) > 0
    # the engine's meta_gradient (what meta_step uses) accumulates the same gradient
    leo.zero_grad()
    leo.reseed(7)
    leo.meta_gradient(TaskBatch(sx[None], sy[None], qx[None], qy[None]))
    for (k, p), g in zip(params.items(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-12, atol=1e-14, msg=k)
    gen = torch.Generator().manual_seed(0)
    directions = [{k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()}
                  for _ in range(3)]
    for name in ("inner_lr", "finetune_lr"):
        directions.append({k: torch.randn(v.shape, generator=gen, dtype=v.dtype) * (k == name)
                           for k, v in params.items()})
    eps = 1e-6
    with torch.no_grad():
        for v in directions:
            analytic = sum(float((g * v[k]).sum()) for k, g in zip(params, grads))
            plus = float(loss_at({k: p + eps * v[k] for k, p in params.items()}, frozen)[0])
            minus = float(loss_at({k: p - eps * v[k] for k, p in params.items()}, frozen)[0])
            numeric = (plus - minus) / (2 * eps)
            assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), (analytic, numeric)


def test_kl_is_the_diagonal_gaussian_closed_form():
    """KL(N(μ, σ²) ‖ N(0, 1)) = ½(μ² + σ² − 1) − log σ, elementwise; the state's KL is its mean over
    the present classes' dimensions, and the code's one-sample estimate log q(z) − log p(z) has it
    as expectation."""
    mu = torch.tensor([0.3, -1.2, 0.0], dtype=torch.float64)
    sigma = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    reference = kl_divergence(Normal(mu, sigma), Normal(0.0, 1.0))
    torch.testing.assert_close(kl_standard_normal(mu, sigma), reference, rtol=1e-14, atol=1e-14)
    gen = torch.Generator().manual_seed(0)
    z = mu + sigma * torch.randn(200_000, 3, generator=gen, dtype=torch.float64)
    estimate = (Normal(mu, sigma).log_prob(z) - Normal(0.0, 1.0).log_prob(z)).mean(0)
    torch.testing.assert_close(estimate, reference, rtol=0, atol=0.02)

    leo = learner()
    (sx, sy), _ = one_task(ways=3, shots=2)
    for training in (True, False):
        leo.train(training)
        leo.reseed(0)
        state = leo.adapt(leo.params(), (sx, sy))
        leo.reseed(0)  # the same dropout mask on the encoder's input
        q = leo.encode(leo.params(), sx, sy)
        expected = kl_divergence(Normal(q.mean[:3], q.std[:3]), Normal(0.0, 1.0)).mean()
        torch.testing.assert_close(state.kl, expected, rtol=1e-12, atol=1e-12)


def test_orthogonality_penalty():
    """mean((C − I)²), C the correlation of the decoder's latent directions (columns of the torch
    weight): zero for orthogonal columns of any norms, the hand value otherwise, and in the state."""
    gen = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(2 * D, L, generator=gen, dtype=torch.float64))
    assert float(orthogonality_penalty(Q)) < 1e-30
    assert float(orthogonality_penalty(Q * torch.tensor([0.1, 3.0, 7.0], dtype=torch.float64))) < 1e-30
    W = torch.randn(2 * D, L, generator=gen, dtype=torch.float64)
    C = F.cosine_similarity(W.T.unsqueeze(1), W.T.unsqueeze(0), dim=-1)
    expected = (C - torch.eye(L, dtype=torch.float64)).pow(2).mean()
    torch.testing.assert_close(orthogonality_penalty(W), expected, rtol=1e-12, atol=1e-14)
    leo = learner()
    (sx, sy), _ = one_task()
    with torch.no_grad():
        leo.model.decoder.weight.copy_(Q)
    assert float(leo.adapt(leo.params(), (sx, sy)).orthogonality.detach()) < 1e-30


def test_encoder_penalty_stops_the_gradient_at_the_adapted_code():
    """γ-term = mean over present elements of (z − stopgrad(z'))²: its gradient reaches the encoder
    side only (z), never the decoder or α, which z' depends on."""
    leo = learner(dropout=0.2)
    (sx, sy), _ = one_task(ways=3, shots=2)
    params = leo.params()
    leo.reseed(0)
    state = leo.adapt(params, (sx, sy))
    z, z_adapted = state.initial_latents, state.latents
    assert not torch.allclose(z, z_adapted)
    torch.testing.assert_close(state.encoder_penalty, (z[:3] - z_adapted[:3]).pow(2).mean().detach(),
                               rtol=1e-13, atol=0)
    names = list(params)
    grads = torch.autograd.grad(state.encoder_penalty, list(params.values()), allow_unused=True,
                                retain_graph=True)
    by_name = dict(zip(names, grads))
    assert all(by_name[k] is None for k in ("decoder.weight", "inner_lr", "finetune_lr"))
    held = (z[:3] - z_adapted[:3].detach()).pow(2).mean()
    expected = torch.autograd.grad(held, [params["encoder.weight"]])[0]
    torch.testing.assert_close(by_name["encoder.weight"], expected, rtol=1e-13, atol=1e-15)
    # without the stop-gradient, z' would send gradient into the decoder
    no_stop = torch.autograd.grad((z[:3] - z_adapted[:3]).pow(2).mean(), [params["decoder.weight"]])[0]
    assert float(no_stop.abs().sum()) > 0


def test_sampling_is_seeded_and_leaves_the_global_rng_alone():
    """Same seed and iteration → the same sampled loss, bit for bit; another iteration → other noise;
    construction, sampling, meta_step and evaluation never touch the global RNG."""
    rng = torch.get_rng_state()
    batch = clusters(2, 3, 2, 2, D, seed=4)
    a, b = learner(seed=11, dropout=0.3), learner(seed=11, dropout=0.3)
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), k
    assert not torch.equal(learner(seed=12).model.encoder.weight, a.model.encoder.weight)
    support, query = batch.task(0)

    def sampled(leo, iteration):
        leo.before_step(None, iteration, 10)
        return leo.outer_loss(leo.params(), support, query).detach()

    assert torch.equal(sampled(a, 3), sampled(b, 3))
    assert torch.equal(sampled(a, 3), sampled(a, 3))  # reseeding replays the iteration (resume)
    assert not torch.equal(sampled(a, 3), sampled(a, 4))
    a.eval()  # evaluation mode: means, no dropout, no randomness at all
    assert torch.equal(a.outer_loss(a.params(), support, query), a.outer_loss(a.params(), support, query))
    a.train()
    opt = a.make_optimizer(1e-3)
    a.before_step(opt, 0, 1)
    a.meta_step(batch, opt)
    a.evaluate_batch(batch, [0, 1], F.cross_entropy)
    assert torch.equal(torch.get_rng_state(), rng)


def test_train_5_way_test_3_way():
    """Meta-train on 5-way 2-shot episodes (10 slots, 5 absent), evaluate 3-way 2-shot with the same
    learner through evaluate_batch: finite metrics, finite meta-gradients, no NaN from absent slots."""
    leo = learner(feature_dim=8, dropout=0.2)
    opt = leo.make_optimizer(1e-3)
    for i in range(2):
        leo.before_step(opt, i, 2)
        loss = leo.meta_step(clusters(2, 5, 2, 2, 8, seed=i), opt)
        assert math.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in leo.parameters())
    test = clusters(4, 3, 2, 3, 8, seed=9)
    accuracy = lambda logits, y: (logits.argmax(-1) == y).double().mean()
    acc = leo.evaluate_batch(test, [0, 1, 5], accuracy)
    ce = leo.evaluate_batch(test, [0, 1, 5], F.cross_entropy)
    assert acc.shape == ce.shape == (4, 3) and leo.training
    assert torch.all((acc >= 0) & (acc <= 1)) and torch.isfinite(ce).all()


def test_options_and_inputs_are_checked():
    for kwargs in ({"inner_steps": 0}, {"finetune_steps": -1}, {"test_inner_steps": -1}, {"dropout": 1.0},
                   {"inner_lr": 0.0}, {"kl_weight": -1.0}, {"latent_dim": 0}, {"outer_clip_norm": 0.0}):
        with pytest.raises(MetaloopError):
            learner(**kwargs)
    leo = learner()
    (sx, sy), _ = one_task(ways=3, shots=2)
    with pytest.raises(MetaloopError, match="features of dimension 6"):
        leo.adapt(leo.params(), (sx[:, :4], sy))
    with pytest.raises(MetaloopError, match="0..N-1"):
        leo.adapt(leo.params(), (sx, sy + 5))


def test_outer_clipping_follows_the_code():
    """outer_clip_value then outer_clip_norm bound the meta-gradient that the optimizer sees."""
    leo = learner(outer_clip_value=1e-3, outer_clip_norm=2e-3)
    opt = torch.optim.SGD(leo.parameters(), lr=0.0)
    leo.meta_step(clusters(2, 3, 2, 2, D, seed=2), opt)
    grads = [p.grad for p in leo.parameters()]
    assert max(float(g.abs().max()) for g in grads) <= 1e-3 + 1e-15
    assert float(torch.sqrt(sum(g.pow(2).sum() for g in grads))) <= 2e-3 * (1 + 1e-9)


def test_training_lowers_the_query_loss():
    """30 meta-steps on 5-way 1-shot Gaussian clusters of 16-d features lower the held-out query loss
    (evaluation mode, 5 latent steps) and raise the accuracy."""
    leo = LEO(16, latent_dim=8, inner_lr=0.1, dropout=0.0, seed=0).double()
    opt = leo.make_optimizer(1e-2)
    test = clusters(20, 5, 1, 5, 16, seed=999)
    accuracy = lambda logits, y: (logits.argmax(-1) == y).double().mean()
    before = float(leo.evaluate_batch(test, [5], F.cross_entropy).mean())
    acc_before = float(leo.evaluate_batch(test, [5], accuracy).mean())
    for i in range(30):
        leo.before_step(opt, i, 30)
        leo.meta_step(clusters(4, 5, 1, 5, 16, seed=i), opt)
    after = float(leo.evaluate_batch(test, [5], F.cross_entropy).mean())
    acc_after = float(leo.evaluate_batch(test, [5], accuracy).mean())
    assert after < 0.6 * before, (before, after)
    assert acc_after > acc_before + 0.1, (acc_before, acc_after)
