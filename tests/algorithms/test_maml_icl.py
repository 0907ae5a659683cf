"""MAML-en-LLM (MAML over LoRA on in-context prompts) on a tiny Llama built from a config: its inner loss scores
each fold of the support set after the other fold's demonstrations, its queries are scored after all K, and its
second-order meta-gradient matches finite differences of that objective computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from metaloop.algorithms import MAMLICL, algorithm
from metaloop.errors import MetaloopError
from metaloop.models.llm import answer_nll
from metaloop.models.mlp import MLP

from test_metaicl import assert_matches_finite_differences, scorer, stream  # same folder: pytest puts it on sys.path (rootdir-relative, no packages)


def test_maml_icl_is_registered_as_a_prompt_method():
    assert algorithm("maml-icl") is MAMLICL and MAMLICL.role == "prompts" and MAMLICL.has_inner_loop


def test_maml_icl_at_zero_steps_is_in_context_learning(tiny_llama):
    """With no inner step the state is the meta-learned weights and all K demonstrations: queries are scored as
    in-context learning (MetaICL's test), and the loss is the right answers' NLL after them."""
    model = scorer(tiny_llama)
    learner = MAMLICL(model, inner_lr=0.5, adapt="*lora_*")
    learner.eval()
    (sx, sy), (qx, qy) = stream(tiny_llama, shots=4).batch(0, 1).task(0)
    params = learner.params()
    state = learner.adapt_steps(params, (sx, sy), [0])[0]
    context = model.demonstrations(sx, sy)
    assert torch.equal(state.context, context)
    assert torch.allclose(learner.predict(state, qx), model(qx, context))
    assert torch.allclose(learner.loss(state, (qx, qy)), answer_nll(model(qx, context), qy))


def test_maml_icl_inner_loss_scores_each_fold_after_the_other(tiny_llama):
    model = scorer(tiny_llama)
    learner = MAMLICL(model, inner_lr=0.5, adapt="*lora_*")
    (sx, sy), _ = stream(tiny_llama, shots=5).batch(0, 1).task(0)
    even, odd = (sx[0::2], sy[0::2]), (sx[1::2], sy[1::2])
    want = 0.5 * (answer_nll(model(odd[0], model.demonstrations(*even), odd[1]), odd[1])
                  + answer_nll(model(even[0], model.demonstrations(*odd), even[1]), even[1]))
    got = learner.data_loss(learner.params(), (sx, sy))(learner.params())
    assert torch.allclose(got, want)
    with pytest.raises(MetaloopError, match="at least 2 support examples"):
        learner.data_loss(learner.params(), (sx[:1], sy[:1]))


def test_maml_icl_meta_gradient_matches_finite_differences(tiny_llama):
    """mean_i ℓ(Q_i | S_i; θ − α ∇_lora L_s(θ)) with L_s the two-fold in-context loss: the second-order
    meta-gradient along random LoRA directions equals central differences of the objective computed by hand
    (float64; eager attention's softmax runs in float32, hence the tolerance)."""
    model = scorer(tiny_llama, seed=1)
    lr = 0.5
    learner = MAMLICL(model, inner_lr=lr, inner_steps=1, adapt="*lora_*")
    batch = stream(tiny_llama, shots=4, queries=2, seed=3).batch(0, 2)
    learner.zero_grad(set_to_none=True)
    learner.meta_gradient(batch)
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    grads = {n: p.grad.detach().clone() for n, p in lora.items()}

    def nll(theta, x, y, context):
        return answer_nll(functional_call(model, theta, (x, context, y)), y)

    def objective(theta: dict[str, torch.Tensor]) -> float:
        total = 0.0
        for i in range(len(batch)):
            (sx, sy), (qx, qy) = batch.task(i)
            even, odd = (sx[0::2], sy[0::2]), (sx[1::2], sy[1::2])
            leaves = {n: v.clone().requires_grad_(True) for n, v in theta.items()}
            inner = 0.5 * (nll(leaves, *odd, model.demonstrations(*even)) + nll(leaves, *even, model.demonstrations(*odd)))
            g = torch.autograd.grad(inner, list(leaves.values()))
            phi = {n: v.detach() - lr * gi for (n, v), gi in zip(leaves.items(), g)}
            with torch.no_grad():
                total += float(nll(phi, qx, qy, model.demonstrations(sx, sy)))
        return total / len(batch)

    assert_matches_finite_differences(objective, {n: p.detach().clone() for n, p in lora.items()}, grads)


def test_maml_icl_needs_a_prompt_scorer_and_the_loop_path(tiny_llama):
    with pytest.raises(MetaloopError, match="language-model benchmark"):
        MAMLICL(MLP(1, [4], 1))
    with pytest.raises(MetaloopError, match="path=loop only"):
        MAMLICL(scorer(tiny_llama), path="vmap")
