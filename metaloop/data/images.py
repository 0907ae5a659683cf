"""Labelled image tensors and image decoding, shared by the image sources.

Images are kept as ``uint8`` tensors ``[n, channels, height, width]`` (a quarter of the memory of
``float32``: Omniglot's 82,240 training images take 64 MB) and become ``float32`` in ``[0, 1]`` when an
episode is drawn (:func:`~metaloop.data.labelled.to_float`). Decoding and resizing use Pillow; downsampling uses the LANCZOS
filter on 8-bit images, the filter of the resizing scripts of MAML (``data/omniglot_resized/
resize_images.py`` in cbfinn/maml) and of Ravi & Larochelle's mini-ImageNet.

The decoded tensors are cached by :mod:`metaloop.data.cache`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from metaloop.data.labelled import LabelledExamples
from metaloop.errors import MetaloopError

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
    """Images with integer class labels (:class:`~metaloop.data.labelled.LabelledExamples` whose examples are
    ``uint8 [n, channels, height, width]``). ``dataset[i]`` is image ``i`` as ``float32 [channels, height, width]``
    in ``[0, 1]``."""

    noun = "images"

    def __init__(self, images: Tensor, labels: Tensor, classes: Sequence[str]) -> None:
        if images.ndim != 4:
            raise MetaloopError(f"images must be [n, channels, height, width] and labels [n], got "
                                f"{tuple(images.shape)} and {tuple(labels.shape)}")
        super().__init__(images, labels, classes)
