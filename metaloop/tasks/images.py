"""Labelled image tensors, image decoding and the on-disk cache shared by the image loaders.

Images are kept as ``uint8`` tensors ``[n, channels, height, width]`` (a quarter of the memory of
``float32``: Omniglot's 82,240 training images take 64 MB) and become ``float32`` in ``[0, 1]`` when an
episode is drawn (:func:`to_float`). Decoding and resizing use Pillow; downsampling uses the LANCZOS
filter on 8-bit images, the filter of the resizing scripts of MAML (``data/omniglot_resized/
resize_images.py`` in cbfinn/maml) and of Ravi & Larochelle's mini-ImageNet.

Caches are safetensors files (no pickle, so reading a cache runs no code), written to a temporary
file and renamed into place, so an interrupted build never leaves a truncated cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from metaloop.errors import MetaloopError
from metaloop.tasks.labelled import LabelledExamples, to_float  # noqa: F401 (to_float: its former home)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
RESAMPLE = Image.Resampling.LANCZOS
_MODES = {1: "L", 3: "RGB"}


def image_size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``28`` or ``(28, 28)`` as ``(height, width)``; a MetaloopError for anything else."""
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and s > 0 for s in pair):
        raise MetaloopError(f"image_size must be a positive int or (height, width), got {size!r}")
    return int(pair[0]), int(pair[1])


def check_channels(channels: int) -> str:
    """The Pillow mode for ``channels`` (1: ``L``, 3: ``RGB``)."""
    if channels not in _MODES:
        raise MetaloopError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    return _MODES[channels]


def pil_to_tensor(image: Image.Image, size: tuple[int, int], channels: int) -> Tensor:
    """A Pillow image as ``uint8 [channels, height, width]``, converted and resized (LANCZOS)."""
    image = image.convert(check_channels(channels))
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), resample=RESAMPLE)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def load_image(path: str | os.PathLike[str], size: tuple[int, int], channels: int) -> Tensor:
    """Decode one image file into ``uint8 [channels, *size]``.

    Raises:
        MetaloopError: the file is missing or is not an image Pillow can read (the message names it).
    """
    check_channels(channels)
    try:
        with Image.open(path) as image:
            return pil_to_tensor(image, size, channels)
    except FileNotFoundError as e:
        raise MetaloopError(f"image file {path} does not exist") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise MetaloopError(f"cannot read image {path}: {e}") from e


def load_images(
    paths: Sequence[str | os.PathLike[str]], size: tuple[int, int], channels: int, desc: str | None = None
) -> Tensor:
    """Decode many files into ``uint8 [n, channels, *size]``, in a thread pool (Pillow releases the GIL).

    ``desc`` shows a progress bar (on a terminal only).
    """
    out = torch.empty(len(paths), channels, *size, dtype=torch.uint8)

    def one(i: int) -> None:
        out[i] = load_image(paths[i], size, channels)

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(one, range(len(paths)))
        if desc is not None and len(paths) > 1000:
            from tqdm import tqdm

            results = tqdm(results, total=len(paths), desc=desc, unit="img", disable=None, leave=False)
        for _ in results:  # re-raises the first MetaloopError in order
            pass
    return out


class LabelledImages(LabelledExamples):
    """Images with integer class labels (:class:`~metaloop.tasks.labelled.LabelledExamples` whose examples are
    ``uint8 [n, channels, height, width]``). ``dataset[i]`` is image ``i`` as ``float32 [channels, height, width]``
    in ``[0, 1]``."""

    noun = "images"

    def __init__(self, images: Tensor, labels: Tensor, classes: Sequence[str]) -> None:
        if images.ndim != 4:
            raise MetaloopError(f"images must be [n, channels, height, width] and labels [n], got "
                                f"{tuple(images.shape)} and {tuple(labels.shape)}")
        super().__init__(images, labels, classes)


def digest(*parts: Any, length: int = 16) -> str:
    """A short hex key for a cache file name."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:length]


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes (for small files such as split CSVs)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
