"""MetaICL and the gradient-based family over LoRA on a tiny Llama built from a config: MetaICL's loss is the
LM loss of the right answers after the demonstrations, meta-training lowers it, and MAML's meta-gradient
through a LoRA inner loop matches finite differences."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from metaloop.algorithms import MAML, MetaICL
from metaloop.errors import MetaloopError
from metaloop.models.llm import PromptScorer, Template, add_lora, answer_nll, load_lm, load_lm_tokenizer
from metaloop.models.mlp import MLP
from metaloop.tasks.prompts import PromptTask, PromptTasks

WORDS = "book flight rome paris cancel card bank money weather rain alarm music pizza dinner email mom".split()


def scorer(folder, mode: str = "direct", seed: int = 0) -> PromptScorer:
    lm = load_lm(str(folder), attention="eager").double()
    add_lora(lm, 2)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=gen)
    return PromptScorer(lm, Template(load_lm_tokenizer(str(folder))), mode=mode)


def stream(folder, *, shots: int = 3, queries: int = 2, seed: int = 0) -> PromptTasks:
    g = torch.Generator().manual_seed(seed)
    pool = []
    for t, options in enumerate([("travel", "banking"), ("music", "weather", "food")]):
        inputs, labels = [], []
        for i in range(24):
            c = i % len(options)
            picks = torch.randint(len(WORDS), (3,), generator=g).tolist()
            inputs.append(" ".join([options[c], *(WORDS[p] for p in picks)]))
            labels.append(c)
        pool.append(PromptTask(f"t{t}", tuple(inputs), tuple(labels), options))
    template = Template(load_lm_tokenizer(str(folder)))
    return PromptTasks(pool, template.fields, ways=3, shots=shots, queries=queries, seed=seed)


def assert_matches_finite_differences(objective, theta: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> None:
    """Along 2 seeded random directions d, the analytic ⟨grads, d⟩ equals the central difference of
    ``objective`` at ``theta`` (h = 1e-3; relative 2e-3, for eager attention's float32 softmax)."""
    gen = torch.Generator().manual_seed(7)
    h = 1e-3
    for _ in range(2):
        d = {n: torch.randn(v.shape, generator=gen, dtype=v.dtype) for n, v in theta.items()}
        fd = (objective({n: theta[n] + h * d[n] for n in theta}) - objective({n: theta[n] - h * d[n] for n in theta})) / (2 * h)
        analytic = float(sum((grads[n] * d[n]).sum() for n in theta))
        assert abs(fd - analytic) <= 2e-3 * max(abs(fd), 1e-2), (fd, analytic)


@pytest.mark.parametrize("mode", ["direct", "channel"])
def test_metaicl_loss_is_the_answer_nll_after_the_demonstrations(tiny_llama, mode):
    """loss(adapt(θ, support), query) = mean over queries of −log P(right answer | K demonstrations, query),
    and adapt is the same whatever the step count (no inner loop)."""
    model = scorer(tiny_llama, mode)
    learner = MetaICL(model)
    (sx, sy), (qx, qy) = stream(tiny_llama).batch(0, 1).task(0)
    params = learner.params()
    state = learner.adapt(params, (sx, sy))
    want = answer_nll(model(qx, model.demonstrations(sx, sy)), qy)
    assert torch.allclose(learner.loss(state, (qx, qy)), want)
    assert torch.allclose(learner.predict(state, qx), model(qx, model.demonstrations(sx, sy)))
    zero_shot = learner.adapt(params, (sx[:0], sy[:0]))
    assert zero_shot.context is None
    assert all(torch.equal(s.context, state.context) for s in learner.adapt_steps(params, (sx, sy), [0, 1, 5]))


def test_metaicl_meta_training_lowers_the_loss(tiny_llama):
    """Meta-steps on the same episodes lower their mean loss (nats per answer, summed over its tokens), and
    only the LoRA weights move."""
    lm = load_lm(str(tiny_llama), attention="eager")
    add_lora(lm, 8)
    learner = MetaICL(PromptScorer(lm, Template(load_lm_tokenizer(str(tiny_llama)))))
    frozen = {n: p.detach().clone() for n, p in learner.named_parameters() if "lora_" not in n}
    batch = stream(tiny_llama).batch(0, 4)
    optimizer = learner.make_optimizer(0.02)
    losses = [learner.meta_step(batch, optimizer) for _ in range(15)]
    assert losses[-1] < losses[0] - 0.5 and losses[-1] < min(losses[:5]), losses
    assert all(torch.equal(p, frozen[n]) for n, p in learner.named_parameters() if n in frozen)


def test_metaicl_needs_a_prompt_scorer():
    with pytest.raises(MetaloopError, match="language-model benchmark"):
        MetaICL(MLP(1, [4], 1))


def test_maml_over_lora_matches_finite_differences(tiny_llama):
    """Second-order MAML whose inner loop adapts only the LoRA weights on the K examples (each scored 0-shot):
    the meta-gradient of mean_i L_q(θ − α ∇_lora L_s(θ)) along random directions of the LoRA weights equals
    central differences of that objective, computed by hand with functional_call (float64, eager attention;
    its softmax runs in float32, hence the tolerance)."""
    model = scorer(tiny_llama, seed=1)
    lr = 0.5
    learner = MAML(model, answer_nll, inner_lr=lr, inner_steps=1, first_order=False, adapt="*lora_*", path="loop")
    batch = stream(tiny_llama, shots=3, queries=2, seed=3).batch(0, 2)
    learner.zero_grad(set_to_none=True)
    learner.meta_gradient(batch)
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    grads = {n: p.grad.detach().clone() for n, p in lora.items()}

    def objective(theta: dict[str, torch.Tensor]) -> float:
        total = 0.0
        for i in range(len(batch)):
            (sx, sy), (qx, qy) = batch.task(i)
            leaves = {n: v.clone().requires_grad_(True) for n, v in theta.items()}
            inner = answer_nll(functional_call(model, leaves, (sx,)), sy)
            g = torch.autograd.grad(inner, list(leaves.values()))
            phi = {n: v.detach() - lr * gi for (n, v), gi in zip(leaves.items(), g)}
            with torch.no_grad():
                total += float(answer_nll(functional_call(model, phi, (qx,)), qy))
        return total / len(batch)

    assert_matches_finite_differences(objective, {n: p.detach().clone() for n, p in lora.items()}, grads)
