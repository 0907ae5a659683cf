"""The user's own images as a benchmark: ``--benchmark images:PATH``.

``PATH`` is either

- a folder with ``train/`` and ``test/`` subfolders, each holding one folder per class (the classes of
  the two splits should differ: meta-testing is on new classes); or
- a CSV file with a header and the columns ``path``, ``label`` and ``split`` (``train`` or ``test``;
  rows of other splits are ignored), paths relative to the CSV's folder. The column names are options.

Episodes are N-way K-shot as in the other image benchmarks (``ways``, ``shots``, ``train_ways``,
``train_shots``, ``queries``, ``eval_queries``), on a Conv-4 (or ResNet-12) backbone, with MAML's
mini-ImageNet presets for the gradient-based family. LEO works on features, as in its paper: the backbone
is first pretrained to classify all training classes (``feature_epochs``), then frozen; the features are
cached under a digest of the images, so changed files are embedded anew.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from torch import nn

from metaloop.benchmarks.base import Benchmark, presets
from metaloop.benchmarks.fewshot_images import (
    COMMON_OPTIONS,
    SplitView,
    _check_ways,
    _sources,
    classification_benchmark,
    headless,
    image_encoder,
    on_features,
    pixels_key,
    warn_repeated_inputs,
    warn_shared_splits,
)
from metaloop.config import Option
from metaloop.data import file_stamp
from metaloop.data.folder import ImageCSVDataset, ImageFolderDataset, read_csv_columns
from metaloop.data.images import LabelledImages
from metaloop.errors import MetaloopError
from metaloop.features import feature_splits
from metaloop.models.conv import Conv4
from metaloop.models.resnet12 import ResNet12

PREFIX = "images:"


def _split(path: str, split: str, size: int, channels: int, columns: tuple[str, str, str]) -> LabelledImages:
    """The images of ``split`` (``paths`` holds each one's file); loading the test split warns when an image
    appears more than once in a class (see :func:`~metaloop.benchmarks.fewshot_images.warn_repeated_inputs`).
    Kept in memory until a file under ``path`` changes (:func:`~metaloop.data.file_stamp`)."""
    return _split_cached(path, split, size, channels, columns, file_stamp(path))


@lru_cache(maxsize=4)
def _split_cached(path: str, split: str, size: int, channels: int, columns: tuple[str, str, str],
                  stamp: tuple[int, ...] | None) -> LabelledImages:
    root = Path(path).expanduser()
    if root.is_dir():
        folder = root / split
        if not folder.is_dir():
            raise MetaloopError(f"benchmark 'images:{path}': expected a folder {folder} of class folders")
        data: LabelledImages = ImageFolderDataset(folder, size, channels)
    else:
        if not root.is_file():
            raise MetaloopError(f"benchmark 'images:{path}': no such folder or CSV file")
        path_col, label_col, split_col = columns
        splits = [s for (s,) in read_csv_columns(root, (split_col,))]
        keep = [i for i, s in enumerate(splits) if s == split]
        if not keep:
            raise MetaloopError(f"{root}: no row has {split_col}={split!r}")
        full = ImageCSVDataset(root, size, channels, path_column=path_col, label_column=label_col)
        data = LabelledImages(full.images[keep], full.labels[keep], full.classes)
        data.paths = [full.paths[i] for i in keep]  # type: ignore[attr-defined]
    if split == "test":
        warn_repeated_inputs(f"{PREFIX}{path}", "image", _view(data, _where(path, split, columns)), "identical pixels")
    return data


def _where(path: str, split: str, columns: tuple[str, str, str]) -> str:
    """Where a split of ``images:PATH`` is, for messages: its folder, or the rows of the CSV file."""
    root = Path(path).expanduser()
    return str(root / split) if root.is_dir() else f"the {columns[2]}={split} rows of {root}"


def _view(data: Any, where: str) -> SplitView:
    classes = [data.classes[i] for i in data.labels.tolist()]
    return SplitView(where, classes, [pixels_key(image) for image in data.images], [str(p) for p in data.paths])


def _check_splits(cfg: dict[str, Any]) -> None:
    """Warn when test classes are training classes (by name) or test images are training images (by pixels)."""
    path = cfg["benchmark"].removeprefix(PREFIX)
    columns = (cfg["path_column"], cfg["label_column"], cfg["split_column"])
    train, test = (_view(_split(path, s, cfg["image_size"], cfg["channels"], columns), _where(path, s, columns))
                   for s in ("train", "test"))
    warn_shared_splits(cfg["benchmark"], "image", train, test)


def _data(cfg: dict[str, Any], split: str) -> Any:
    path = cfg["benchmark"].removeprefix(PREFIX)
    columns = (cfg["path_column"], cfg["label_column"], cfg["split_column"])
    load = lambda s: _split(path, s, cfg["image_size"], cfg["channels"], columns)  # noqa: E731
    if not on_features(cfg):
        return load(split)

    content = hashlib.sha256()
    for data in (load("train"), load("test")):
        content.update(data.images.numpy().tobytes())
        content.update(data.labels.numpy().tobytes())
    return feature_splits(
        "images", load, lambda: (_backbone(cfg, None), _feature_dim(cfg)),
        data_key=f"{content.hexdigest()}|{cfg['backbone']}-{cfg['filters']}", epochs=cfg["feature_epochs"],
        seed=cfg["seed"],
    )[split]


def _backbone(cfg: dict[str, Any], ways: int | None) -> nn.Module:
    if cfg["backbone"] == "resnet12":
        return ResNet12(cfg["channels"], ways, image_size=cfg["image_size"])
    return Conv4(cfg["channels"], ways, hidden=cfg["filters"], image_size=cfg["image_size"])


def _feature_dim(cfg: dict[str, Any]) -> int:
    size = cfg["image_size"] // 16  # both backbones halve the image four times
    width = 640 if cfg["backbone"] == "resnet12" else cfg["filters"]
    if size < 1:
        raise MetaloopError(f"option 'image_size': {cfg['image_size']} is too small for four poolings (≥ 16)")
    return width * size * size


def _model(cfg: dict[str, Any]) -> nn.Module:
    _check_ways(cfg)
    if cfg["image_size"] < 16:
        raise MetaloopError(f"option 'image_size': {cfg['image_size']} is too small for the backbone's four 2× "
                            "poolings (at least 16)")
    return _backbone(cfg, None if headless(cfg) else cfg["ways"])


def user_image_benchmark(name: str) -> Benchmark:
    """The benchmark for ``images:PATH`` (nothing is read until tasks are drawn)."""
    if not name.removeprefix(PREFIX).strip():
        raise MetaloopError("benchmark 'images:': give a folder or CSV file after 'images:'")
    return classification_benchmark(
        name=name,
        description="your own images: images:FOLDER (train/, test/) or images:FILE.csv (path,label,split)",
        input_column="path",
        encode_inputs=image_encoder(None, None),
        make_model=_model,
        **_sources(_data),
        options=(
            *COMMON_OPTIONS,
            Option("image_size", int, 84, "images are resized to this square size (84: mini-ImageNet's; 28 for "
                   "small digits or characters)", positive=True, maximum=1024,
                   why_maximum="every image is held in memory at this size"),
            Option("channels", int, 3, "1 (grayscale) or 3 (RGB): images are converted", positive=True, maximum=3),
            Option("filters", int, 64, "Conv-4 filters per layer", positive=True),
            Option("backbone", str, "conv4", "feature extractor", choices=("conv4", "resnet12")),
            Option("path_column", str, "path", "CSV: the column of image paths"),
            Option("label_column", str, "label", "CSV: the column of labels"),
            Option("split_column", str, "split", "CSV: the column of splits (train, test)"),
        ),
        **presets("images", "images:"),
        feature_dim=_feature_dim,
        size_options=("filters", "backbone", "image_size"),
        check_splits=_check_splits,
    )
