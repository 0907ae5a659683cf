"""A tiny byte-level GPT-2, built from a config (nothing is downloaded), for meta-training from scratch.

The architecture is GPT-2's (Radford, Wu, Child, Luan, Amodei and Sutskever, "Language Models are
Unsupervised Multitask Learners", 2019): a decoder-only transformer with learned positions, pre-norm
blocks and causal self-attention, taken from Hugging Face ``transformers`` (``GPT2LMHeadModel``) at a
few hundred thousand parameters. Tokens are bytes (vocabulary 256); byte 0 never occurs in text and
is the padding id.

Choices that matter for meta-learning:

* ``attn_implementation="eager"``: PyTorch has no double backward for its fused CPU attention kernel,
  so second-order MAML needs the plain matmul-softmax attention.
* no dropout: the inner loop and the finite-difference checks need a deterministic forward.
* untied input and output embeddings: a checkpoint (safetensors) cannot hold two names for one
  tensor, and the inner loop then adapts each of them as one ordinary parameter.
* no attention mask: sequences are right-padded and attention is causal, so a real token never
  attends to padding; the targets at padded positions are ignored by the loss.

``lora_rank > 0`` adds LoRA adapters (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language
Models") to every attention projection ``c_attn`` with ``peft``; their parameters are named
``….c_attn.lora_A.default.weight`` and ``….lora_B.default.weight``, which ``adapt="*lora_*"`` selects.
peft freezes the base weights when it injects the adapters; here they stay trainable (meta-learned)
unless ``freeze_base=True``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

VOCAB = 256
PAD = 0


class TinyGPT(nn.Module):
    """``forward(x: LongTensor [n, T]) -> logits [n, T, vocab]`` of a GPT-2 built from a config.

    Args:
        n_layer, n_embd, n_head, n_positions: GPT-2's sizes (``n_positions`` bounds the sequence length).
        vocab_size: the number of token ids (256 bytes by default).
        lora_rank: rank of the LoRA adapters on ``c_attn`` (0: none).
        lora_alpha: LoRA's scale numerator (the update is ``(alpha / rank) · B A``).
        freeze_base: with LoRA, exclude the base weights from meta-learning (``requires_grad=False``).
    """

    def __init__(
        self,
        *,
        n_layer: int = 2,
        n_embd: int = 128,
        n_head: int = 4,
        n_positions: int = 128,
        vocab_size: int = VOCAB,
        lora_rank: int = 0,
        lora_alpha: float | None = None,
        freeze_base: bool = False,
    ) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False, use_cache=False,
            pad_token_id=None, bos_token_id=ord("\n"), eos_token_id=ord("\n"), attn_implementation="eager",
        )
        self.n_positions = n_positions
        self.gpt = GPT2LMHeadModel(config)
        self.lora_rank = lora_rank
        if lora_rank > 0:
            from peft import LoraConfig, inject_adapter_in_model

            lora = LoraConfig(r=lora_rank, lora_alpha=lora_alpha or lora_rank, lora_dropout=0.0,
                              target_modules=["c_attn"], fan_in_fan_out=True, bias="none")
            inject_adapter_in_model(lora, self.gpt)
            for name, p in self.gpt.named_parameters():  # peft froze the base: meta-learn it unless asked
                p.requires_grad_("lora_" in name or not freeze_base)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] > self.n_positions:
            raise ValueError(f"sequence length {x.shape[-1]} exceeds n_positions={self.n_positions}")
        return self.gpt(input_ids=x, use_cache=False).logits

    def lora_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters() if "lora_" in n]


@torch.no_grad()
def greedy_decode(model: nn.Module, prompt: Tensor, steps: int) -> Tensor:
    """``steps`` tokens generated greedily (arg-max, first index on ties) after the 1-D ``prompt``."""
    seq = prompt.clone()
    for _ in range(steps):
        logits = model(seq[None])[0, -1]
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)])
    return seq[prompt.numel():]
