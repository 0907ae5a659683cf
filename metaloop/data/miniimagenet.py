"""mini-ImageNet (Vinyals et al. 2016, "Matching Networks for One Shot Learning") with the class split
of Ravi & Larochelle 2017 ("Optimization as a Model for Few-Shot Learning"): 100 ImageNet classes,
600 images each, 64 for training, 16 for validation and 20 for testing, as listed by their
``{train,val,test}.csv`` files (header ``filename,label``; a file name is the wnid and an 8-digit
index, ``n0153282900000005.jpg``; the label is the wnid). The same CSVs are used by MAML and
Prototypical Networks.

The images come from ImageNet and are not distributed with metaloop: the user gives the folder that
holds them, in the standard layout ``<images_dir>/<filename>`` (the ``images/`` folder of the usual
archive) or one folder per class, ``<images_dir>/<label>/<filename>``. Each is converted to RGB and
resized to 84×84 (Pillow, LANCZOS, as in Ravi & Larochelle's preprocessing script; images already
84×84 are taken as they are).

A split is decoded once and cached as ``uint8 [n, 3, 84, 84]`` (a safetensors file, 813 MB for the
38,400 training images) in ``cache_dir()/miniimagenet/``, keyed by the image folder's path, the split,
the CSV's contents and the image size, so that later loads, and resampling episodes, are fast. Pass
``rebuild=True`` after changing the images in place.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from metaloop.data.cache import digest, load_cache, save_cache
from metaloop.data.download import how_to_get
from metaloop.data.folder import read_csv_columns
from metaloop.data.images import LabelledImages, load_images
from metaloop.data.root import cache_dir, data_root, file_digest
from metaloop.errors import MetaloopError

SPLITS = ("train", "val", "test")
SIZE = 84
CLASS_COUNTS = {"train": 64, "val": 16, "test": 20}
IMAGES_PER_CLASS = 600


def split_csv(split: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Ravi & Larochelle's CSV of ``split``: ``data_root(root)/miniimagenet-splits/<split>.csv`` (an error saying
    how to get it when it is missing)."""
    if split not in SPLITS:
        raise MetaloopError(f"mini-ImageNet split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = data_root(root) / "miniimagenet-splits" / f"{split}.csv"
    if not path.is_file():
        raise MetaloopError(f"mini-ImageNet: the split file {path} does not exist "
                            f"({how_to_get('miniimagenet-splits')})")
    return path


def read_split(
    split: str = "train",
    *,
    csv_path: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> list[tuple[str, str]]:
    """The ``(filename, label)`` rows of a split CSV (``csv_path``, else :func:`split_csv`)."""
    path = Path(csv_path) if csv_path is not None else split_csv(split, root)
    return [(f, label) for f, label in read_csv_columns(path, ("filename", "label"))]


class MiniImageNetSplit(LabelledImages):
    """One split of mini-ImageNet: ``images uint8 [n, 3, 84, 84]``, ``labels int64 [n]`` and
    ``classes`` (the wnids, sorted)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str], split: str):
        super().__init__(images, labels, classes)
        self.split = split


def _locate(images_dir: Path, rows: list[tuple[str, str]], csv_path: Path, split: str) -> list[Path]:
    """The file of each row, flat layout first, then per-class folders; an error if any is missing."""
    paths: list[Path] = []
    missing = 0
    if images_dir.is_dir():
        for filename, label in rows:
            flat = images_dir / filename
            if flat.is_file():
                paths.append(flat)
            elif (images_dir / label / filename).is_file():
                paths.append(images_dir / label / filename)
            else:
                missing += 1
    else:
        missing = len(rows)
    if missing:
        filename, label = rows[0]
        state = "" if images_dir.is_dir() else " (the folder does not exist)"
        raise MetaloopError(
            f"mini-ImageNet {split}: {missing} of the {len(rows)} images listed in {csv_path} are missing "
            f"from {images_dir}{state}; expected <images_dir>/<filename> such as {images_dir / filename} "
            f"(or {images_dir / label / filename})"
        )
    return paths


def miniimagenet_split(
    split: str = "train",
    images_dir: str | os.PathLike[str] | None = None,
    *,
    csv_path: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    image_size: int = SIZE,
    rebuild: bool = False,
) -> MiniImageNetSplit:
    """One split of mini-ImageNet, decoded (first call) or read from the cache.

    Args:
        split: ``train``, ``val`` or ``test``.
        images_dir: the folder of images (see the module docstring); default
            ``data_root(root)/miniimagenet/images``.
        csv_path: a split CSV (header ``filename,label``) instead of Ravi's, for example a subset.
        root: the data root, for the split CSVs and the default ``images_dir``.
        image_size: the side of the square images (84 in the papers).
        rebuild: decode again even if a cache exists.

    Raises:
        MetaloopError: images are missing (the message says which folder was searched, gives an
            example of the expected path and how many of the CSV's files are missing), or unreadable.
    """
    if split not in SPLITS:
        raise MetaloopError(f"mini-ImageNet split must be one of {', '.join(SPLITS)}, got {split!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise MetaloopError(f"mini-ImageNet image_size must be a positive int, got {image_size!r}")
    csv_file = Path(csv_path).expanduser() if csv_path is not None else split_csv(split, root)
    rows = read_split(split, csv_path=csv_file)
    folder = (
        Path(images_dir).expanduser()
        if images_dir is not None
        else data_root(root) / "miniimagenet" / "images"
    )
    key = digest(folder.resolve(), split, file_digest(csv_file), image_size)
    cache_file = cache_dir() / "miniimagenet" / f"{split}-{image_size}px-{key}.safetensors"
    cached = None if rebuild else load_cache(cache_file)
    if cached is not None:
        tensors, meta = cached
        return MiniImageNetSplit(tensors["images"], tensors["labels"], list(meta["classes"]), split)
    paths = _locate(folder, rows, csv_file, split)
    classes = sorted({label for _, label in rows})
    ids = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([ids[label] for _, label in rows], dtype=torch.int64)
    images = load_images(paths, (image_size, image_size), 3, desc=f"mini-ImageNet {split}: decoding")
    save_cache(
        cache_file, {"images": images, "labels": labels}, {"classes": classes, "images_dir": str(folder)}
    )
    return MiniImageNetSplit(images, labels, classes, split)
