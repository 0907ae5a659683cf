"""Texts as the packed token ids of a sentence encoder's tokenizer, and as its frozen embeddings: each computed
once and cached on disk.

Token ids go to ``cache_dir()/tokens/<key>.safetensors``, keyed on the encoder's folder, its vocabulary size,
``max_length`` and every text; embeddings to ``cache_dir()/features/<key>.safetensors``, keyed on the encoder's
folder and the token ids (:mod:`metaloop.data.cache`). A changed text or tokenizer is a new file.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metaloop.data.cache import digest, load_cache, save_cache
from metaloop.data.root import cache_dir
from metaloop.models.text import TextEncoder, encoder_path, load_encoder, load_tokenizer, tokenize


def tokens_for(texts: list[str], encoder: str | None, max_length: int) -> Tensor:
    """Packed tokens of ``texts`` (see :func:`~metaloop.models.text.tokenize`), cached on disk."""
    tokenizer = load_tokenizer(encoder)
    key = digest(encoder_path(encoder).resolve(), len(tokenizer), max_length, digest(*texts, length=64))
    path = cache_dir() / "tokens" / f"{key}.safetensors"
    cached = load_cache(path)
    if cached is not None and cached[0]["tokens"].shape[0] == len(texts):
        return cached[0]["tokens"]
    out = torch.cat([tokenize(texts[i:i + 4096], tokenizer, max_length) for i in range(0, len(texts), 4096)])
    save_cache(path, {"tokens": out}, {"encoder": str(encoder), "max_length": max_length, "texts": len(texts)})
    return out


def text_features(tokens: Tensor, encoder: str | None) -> Tensor:
    """The frozen encoder's pooled, unit-norm embeddings ``[n, d]`` of packed tokens ``[n, 2, L]``, cached on disk."""
    key = digest("text-features", encoder_path(encoder).resolve(), digest(tokens.numpy().tobytes(), length=64))
    path = cache_dir() / "features" / f"{key}.safetensors"
    cached = load_cache(path)
    if cached is not None:
        return cached[0]["features"]
    model = TextEncoder(load_encoder(encoder), None, train_encoder="frozen", scale=1.0).eval()
    with torch.no_grad():
        features = torch.cat([model(tokens[i:i + 256]) for i in range(0, len(tokens), 256)])
    save_cache(path, {"features": features}, {"encoder": str(encoder)})
    return features


__all__ = ["text_features", "tokens_for"]
