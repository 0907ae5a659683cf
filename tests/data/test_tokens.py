"""Token ids and frozen-encoder embeddings of texts, cached on disk: a hit reads the file, another key or an
unreadable file computes again."""

from __future__ import annotations

import pytest
import torch

from metaloop.data import tokens
from metaloop.data.tokens import text_features, tokens_for


def test_tokens_cache_hit(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path))
    texts = ["book a flight", "cancel my card", "play music"]
    first = tokens_for(texts, str(tiny_bert), 16)
    files = list((tmp_path / "tokens").glob("*.safetensors"))
    assert len(files) == 1 and first.shape == (3, 2, 16) and first.dtype == torch.int64

    def fail(*args, **kwargs):
        raise AssertionError("tokenized again: the cache was not read")

    monkeypatch.setattr(tokens, "tokenize", fail)
    assert torch.equal(tokens_for(texts, str(tiny_bert), 16), first)
    for other in [(texts[:2], 16), (texts, 8)]:  # other texts or another length: another key
        with pytest.raises(AssertionError, match="tokenized again"):
            tokens_for(other[0], str(tiny_bert), other[1])
    files[0].write_bytes(b"not safetensors")  # an unreadable cache file is rebuilt
    monkeypatch.undo()
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path))
    assert torch.equal(tokens_for(texts, str(tiny_bert), 16), first)
    assert files[0].stat().st_size > 100


def test_text_features_cache_hit(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path))
    ids = tokens_for(["book a flight", "cancel my card", "play music"], str(tiny_bert), 16)
    first = text_features(ids, str(tiny_bert))
    assert first.shape[0] == 3 and torch.allclose(first.norm(dim=-1), torch.ones(3), atol=1e-5)

    def fail(*args, **kwargs):
        raise AssertionError("encoded again: the cache was not read")

    monkeypatch.setattr(tokens, "TextEncoder", fail)
    assert torch.equal(text_features(ids, str(tiny_bert)), first)
    with pytest.raises(AssertionError, match="encoded again"):  # other tokens: another key
        text_features(ids[:2], str(tiny_bert))
