"""The on-disk tensor cache of decoded data (images, tokens, features).

Caches are safetensors files (no pickle, so reading a cache runs no code) with JSON metadata, written to a
temporary file and renamed into place, so an interrupted build never leaves a truncated cache behind; a cache
that cannot be read is rebuilt. Cache keys are short digests of whatever the cached tensors depend on.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor


def digest(*parts: Any, length: int = 16) -> str:
    """A short hex key for a cache file name."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:length]


def save_cache(path: Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> None:
    """Write tensors and JSON-able metadata to a safetensors file, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(
            {k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={"json": json.dumps(metadata)}
        )
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_cache(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """The tensors and metadata of a cache file, or None if it is absent or unreadable (then rebuild it)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = json.loads((f.metadata() or {})["json"])
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, KeyError, ValueError):
        return None


__all__ = ["digest", "load_cache", "save_cache"]
