"""The user's own labelled images, as datasets for :class:`~metaloop.tasks.episodes.EpisodicTasks`.

Two layouts, the two that image-classification tools commonly read (torchvision's ``ImageFolder``
convention, and a table of file paths and labels):

- :class:`ImageFolderDataset`: ``root/<class name>/<image>`` (nested folders inside a class folder
  are included);
- :class:`ImageCSVDataset`: a CSV file with a header, one row per image, giving the image's path
  (relative to the CSV's folder, or absolute) and its label (any string).

Images are decoded once with Pillow, converted to grayscale (``channels=1``) or RGB (``channels=3``),
resized to ``image_size`` with the LANCZOS filter (aspect ratio not kept), and held in memory as a
``uint8`` tensor; episodes turn them into ``float32`` in ``[0, 1]``. Class ids follow the sorted class
names (numerically when every name is an integer), and :attr:`classes` maps ids back to names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from metaloop.data.images import (
    IMAGE_EXTENSIONS,
    LabelledImages,
    check_channels,
    image_size_pair,
    load_images,
)
from metaloop.data.tables import label_order, read_table
from metaloop.errors import MetaloopError


def read_csv_columns(path: str | os.PathLike[str], columns: Sequence[str]) -> list[tuple[str, ...]]:
    """The values of ``columns`` in each row of a CSV file with a header row.

    Raises:
        MetaloopError: the file is missing or empty, a column is absent (naming it, the file and the
            columns it has), or a row lacks a value.
    """
    table = read_table(path, what="CSV file")
    return list(zip(*(table.column(c, strip=True) for c in columns)))


def _labelled(
    paths: list[Path], names: list[str], image_size: int | Sequence[int], channels: int, where: str
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    size = image_size_pair(image_size)
    check_channels(channels)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise MetaloopError(
            f"{where}: {len(missing)} of {len(paths)} image files are missing, e.g. {missing[0]}"
        )
    classes = label_order(names)
    ids = {name: i for i, name in enumerate(classes)}
    labels = torch.tensor([ids[n] for n in names], dtype=torch.int64)
    return load_images(paths, size, channels, desc=f"decoding {where}"), labels, classes


class ImageFolderDataset(LabelledImages):
    """Images in one subfolder per class: ``root/<class>/**/<image>``.

    Args:
        root: the folder of class folders.
        image_size: ``int`` or ``(height, width)``.
        channels: 1 (grayscale) or 3 (RGB).
        extensions: the file name endings taken as images (case-insensitive); hidden files are skipped.

    Attributes: ``images uint8 [n, channels, h, w]``, ``labels int64 [n]``, ``classes`` (the folder name of each
    class id: sorted, numerically when every name is an integer), ``paths`` (the file of each image).

    Raises:
        MetaloopError: ``root`` is not a folder, has no class folders, a class folder has no images,
            or an image cannot be read (the message names the file).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        image_size: int | Sequence[int],
        channels: int = 3,
        *,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise MetaloopError(f"image folder {root} does not exist")
        folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        rank = {name: i for i, name in enumerate(label_order(f.name for f in folders))}
        folders.sort(key=lambda f: rank[f.name])  # class-id order: numeric names as numbers ("2" before "10")
        if not folders:
            raise MetaloopError(
                f"image folder {root} has no class subfolders (expected {root}/<class>/<image>)"
            )
        ends = tuple(e.lower() for e in extensions)
        paths: list[Path] = []
        names: list[str] = []
        for folder in folders:
            files = sorted(
                p
                for p in folder.rglob("*")
                if p.is_file()
                and p.suffix.lower() in ends
                and not any(part.startswith(".") for part in p.relative_to(root).parts)
            )
            if not files:
                raise MetaloopError(f"class folder {folder} holds no images ({', '.join(ends)})")
            paths += files
            names += [folder.name] * len(files)
        images, labels, classes = _labelled(paths, names, image_size, channels, str(root))
        super().__init__(images, labels, classes)
        self.root, self.paths = root, paths


class ImageCSVDataset(LabelledImages):
    """Images listed in a CSV file: one row per image with its path and its label.

    Args:
        csv_path: the CSV file (with a header row).
        image_size: ``int`` or ``(height, width)``.
        channels: 1 (grayscale) or 3 (RGB).
        path_column: the column of image paths, relative to the CSV's folder or absolute.
        label_column: the column of labels (any strings: class names or numbers).

    Attributes: ``images uint8 [n, channels, h, w]``, ``labels int64 [n]``, ``classes`` (the label
    strings, sorted), ``paths``.

    Raises:
        MetaloopError: a missing column (naming it and the file), missing image files (how many, and
            one of them), or an unreadable image (naming it).
    """

    def __init__(
        self,
        csv_path: str | os.PathLike[str],
        image_size: int | Sequence[int],
        channels: int = 3,
        *,
        path_column: str = "path",
        label_column: str = "label",
    ):
        csv_path = Path(csv_path).expanduser()
        rows = read_csv_columns(csv_path, (path_column, label_column))
        base = csv_path.parent
        paths = [base / Path(p).expanduser() for p, _ in rows]  # an absolute path replaces base
        names = [label for _, label in rows]
        images, labels, classes = _labelled(paths, names, image_size, channels, str(csv_path))
        super().__init__(images, labels, classes)
        self.csv_path, self.paths = csv_path, paths
