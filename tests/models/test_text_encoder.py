"""TextEncoder (metaloop.models.text): the sentence embedding of sentence-transformers, which weights
train under each ``train_encoder`` mode, and exact MAML meta-gradients through LoRA adapters."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metaloop.algorithms import MAML
from metaloop.core.context import vectorized
from metaloop.errors import MetaloopError
from metaloop.models.text import TextEncoder, add_lora, encoder_path, load_encoder, load_tokenizer, tokenize
from metaloop.tasks.base import TaskBatch

TEXTS = ["Book a flight to Rome tomorrow.", "cancel my card please", "what is the weather today",
         "set an alarm", "play a song", "x"]


def one_line_error(excinfo, needle: str) -> None:
    message = str(excinfo.value)
    assert needle in message, message
    assert "\n" not in message, message


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


# ------------------------------------------------------------------------------------------ the embedding


def test_minilm_matches_sentence_transformers():
    """Mean pooling over the mask + L2 normalization = all-MiniLM-L6-v2's sentence-transformers pipeline."""
    st = pytest.importorskip("sentence_transformers")
    try:
        path = encoder_path()
    except MetaloopError as e:
        pytest.skip(str(e))
    reference = st.SentenceTransformer(str(path), device="cpu").encode(
        TEXTS, convert_to_tensor=True, normalize_embeddings=False)
    model = TextEncoder(load_encoder(), None, train_encoder="frozen", scale=1.0).eval()
    with torch.no_grad():
        ours = model(tokenize(TEXTS, load_tokenizer(), 64))
    assert ours.shape == (len(TEXTS), 384)
    torch.testing.assert_close(ours, reference.cpu(), rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(len(TEXTS)))


def test_padding_trimming_does_not_change_outputs(tiny_bert):
    """Dropping the all-padding columns (loop path) gives the embedding of the full padded input (the
    vmap path keeps them), whatever max_length pads to."""
    tokenizer = load_tokenizer(str(tiny_bert))
    model = TextEncoder(load_encoder(str(tiny_bert)), 3, lora_rank=2, zero_head=False, scale=3.0).eval()
    short, long = tokenize(TEXTS, tokenizer, 40), tokenize(TEXTS, tokenizer, 64)
    assert short.shape == (len(TEXTS), 2, 40) and short.dtype == torch.int64
    assert int(short[:, 1].sum(-1).max()) < 40  # there is padding to trim
    with torch.no_grad():
        trimmed = model(short)
        with vectorized():
            full = model(long)
        embedding = model.embed(long)
    torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(embedding.norm(dim=-1), torch.full((len(TEXTS),), 3.0))
    assert trimmed.shape == (len(TEXTS), 3)


def test_left_padding_is_not_trimmed_away(tiny_bert):
    """A tokenizer that pads on the left keeps every real token through the trimming."""
    model = TextEncoder(load_encoder(str(tiny_bert)), None, train_encoder="frozen").eval()
    right = tokenize(TEXTS, load_tokenizer(str(tiny_bert)), 32)
    lengths = right[:, 1].sum(-1)
    left = torch.stack([row.roll(int(32 - n), dims=-1) for row, n in zip(right, lengths)])
    assert left[:, 1, -1].all() and not left[:, 1, 0].any()
    with torch.no_grad():
        trimmed = model(left)
        with vectorized():
            full = model(left)
    torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-6)


def test_zero_head_starts_uniform(tiny_bert):
    x = tokenize(TEXTS[:2], load_tokenizer(str(tiny_bert)), 16)
    model = TextEncoder(load_encoder(str(tiny_bert)), 4, lora_rank=2)
    assert torch.equal(model(x), torch.zeros(2, 4))
    assert TextEncoder(load_encoder(str(tiny_bert)), None, lora_rank=2)(x).shape == (2, 16)


# ------------------------------------------------------------------------------------- train_encoder modes


def test_train_encoder_modes_set_requires_grad(tiny_bert):
    lora = TextEncoder(load_encoder(str(tiny_bert)), 5, lora_rank=2, train_encoder="lora")
    adapters = {n for n, _ in lora.named_parameters() if "lora_" in n}
    # peft's adapters on the query, key and value projections of the (one) layer: A and B each
    assert len(adapters) == 6 and all(".attention.self." in n for n in adapters)
    assert trainable(lora) == adapters | {"scale", "head.weight", "head.bias"}

    frozen = TextEncoder(load_encoder(str(tiny_bert)), 5, train_encoder="frozen")
    assert trainable(frozen) == {"scale", "head.weight", "head.bias"}
    frozen_lora = TextEncoder(load_encoder(str(tiny_bert)), None, lora_rank=2, train_encoder="frozen")
    assert trainable(frozen_lora) == {"scale"}

    full = TextEncoder(load_encoder(str(tiny_bert)), 5, train_encoder="full")
    assert trainable(full) == {n for n, _ in full.named_parameters()}
    assert len(trainable(full)) > 20 and not any("lora_" in n for n in trainable(full))
    full_lora = TextEncoder(load_encoder(str(tiny_bert)), 5, lora_rank=2, train_encoder="full")
    assert trainable(full_lora) == {n for n, _ in full_lora.named_parameters()} > adapters


# ------------------------------------------------------------------------------- MAML through LoRA, exact


def _task_batch(tokenizer, tasks: int = 2) -> TaskBatch:
    """Tasks of 3 classes: 1 support and 2 query texts per class, as packed tokens."""
    pool = [["book a flight to rome", "fly me to paris tomorrow", "a flight to paris"],
            ["cancel my card", "transfer money to my bank", "what is my balance"],
            ["play music", "play a song please", "set the volume"],
            ["set an alarm", "wake me at 7", "set a timer"]]
    sx, sy, qx, qy = [], [], [], []
    for t in range(tasks):
        classes = pool[t:t + 3]
        sx.append(tokenize([c[0] for c in classes], tokenizer, 12))
        sy.append(torch.arange(3))
        qx.append(tokenize([q for c in classes for q in c[1:]], tokenizer, 12))
        qy.append(torch.arange(3).repeat_interleave(2))
    return TaskBatch(torch.stack(sx), torch.stack(sy), torch.stack(qx), torch.stack(qy))


def test_maml_lora_meta_gradient_matches_finite_differences(tiny_bert):
    """Second-order MAML adapting head + LoRA (adapt="head.*,*lora_*"): ⟨∇, d⟩ equals central
    differences of the hand-written meta-objective, in float64, for the LoRA, head and scale."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(tiny_bert), attn_implementation="eager", hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = TextEncoder(encoder, 3, lora_rank=2, zero_head=False, scale=2.0).double()
    with torch.no_grad():  # peft starts B at 0, where ∂/∂A vanishes: move off it
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    batch = _task_batch(load_tokenizer(str(tiny_bert)))
    lr = 0.5
    learner = MAML(model, F.cross_entropy, inner_lr=lr, inner_steps=1, adapt="head.*,*lora_*", path="loop")
    adapted = learner.adapted_names
    assert set(adapted) == {n for n in trainable(model) if n != "scale"}
    learner.zero_grad(set_to_none=True)
    learner.meta_gradient(batch)
    meta = sorted(trainable(model))
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if n in meta}
    assert set(grads) == set(meta)
    assert all(p.grad is None for n, p in model.named_parameters() if n not in meta)
    assert all(float(grads[n].abs().max()) > 0 for n in meta)

    base = {n: p.detach().clone() for n, p in model.named_parameters()}

    def objective(theta) -> float:
        total = 0.0
        for i in range(len(batch)):
            (sx, sy), (qx, qy) = batch.task(i)
            leaves = {n: theta[n].clone().requires_grad_(True) for n in adapted}
            loss = F.cross_entropy(functional_call(model, {**theta, **leaves}, (sx,)), sy)
            step = torch.autograd.grad(loss, [leaves[n] for n in adapted])
            phi = {**theta, **{n: theta[n] - lr * g for n, g in zip(adapted, step)}}
            total += float(F.cross_entropy(functional_call(model, phi, (qx,)), qy))
        return total / len(batch)

    gen = torch.Generator().manual_seed(1)
    h = 1e-5
    for _ in range(3):
        d = {n: torch.randn(base[n].shape, generator=gen, dtype=torch.float64) for n in meta}
        plus = objective({**base, **{n: base[n] + h * d[n] for n in meta}})
        minus = objective({**base, **{n: base[n] - h * d[n] for n in meta}})
        fd = (plus - minus) / (2 * h)
        analytic = float(sum((grads[n] * d[n]).sum() for n in meta))
        assert abs(fd - analytic) <= 1e-6 * max(abs(fd), 1e-3), (fd, analytic)
    # the LoRA part alone (the second-order path through the adapters), along a LoRA-only direction
    lora = [n for n in meta if "lora_" in n]
    d = {n: torch.randn(base[n].shape, generator=gen, dtype=torch.float64) for n in lora}
    fd = (objective({**base, **{n: base[n] + h * d[n] for n in lora}})
          - objective({**base, **{n: base[n] - h * d[n] for n in lora}})) / (2 * h)
    analytic = float(sum((grads[n] * d[n]).sum() for n in lora))
    assert abs(fd - analytic) <= 1e-6 * max(abs(fd), 1e-3), (fd, analytic)


# ------------------------------------------------------------------------------------------------ errors


def test_errors_are_one_line(tiny_bert, tmp_path):
    with pytest.raises(MetaloopError) as e:
        TextEncoder(load_encoder(str(tiny_bert)), 5, lora_rank=2, train_encoder="partial")
    one_line_error(e, "option 'train_encoder': 'partial' is not one of lora, full, frozen")
    with pytest.raises(MetaloopError) as e:
        TextEncoder(load_encoder(str(tiny_bert)), 5, lora_rank=0, train_encoder="lora")
    one_line_error(e, "'lora' needs lora_rank")
    model = TextEncoder(load_encoder(str(tiny_bert)), 5, lora_rank=2)
    for bad in (torch.zeros(3, 8, dtype=torch.long), torch.zeros(3, 3, 8, dtype=torch.long)):
        with pytest.raises(MetaloopError) as e:
            model(bad)
        one_line_error(e, f"expected packed tokens [n, 2, length], got shape {tuple(bad.shape)}")
    with pytest.raises(MetaloopError) as e:
        add_lora(load_encoder(str(tiny_bert)), 2, targets=("q_lin", "v_lin"))
    one_line_error(e, "LoRA goes on the attention projections q_lin, v_lin, which this encoder lacks")
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    for load in (encoder_path, load_encoder, load_tokenizer):
        with pytest.raises(MetaloopError) as e:
            load(str(tmp_path))
        one_line_error(e, f"option 'encoder': {str(tmp_path)!r} is not 'minilm' nor a Hugging Face model folder")
