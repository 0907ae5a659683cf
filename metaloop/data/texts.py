"""Labelled texts, and what the text sources share: their split files and checks, the user's own files, mixes.

Every text loader returns a :class:`LabelledTexts` (``texts``, ``labels`` as ``int64 [n]`` with class ids
``0 … C − 1``, and ``classes``, the name of each id). The classes of the ``train``, ``val`` and ``test``
splits of a source are disjoint, as few-shot episodes need: a model is meta-trained on some classes
and tested on classes it has never seen. Class ids are local to a split (each split starts at 0).

The public sources, one file each (files under the data root, see ``shared/data/README.md``; the root is found
by :func:`metaloop.data.root.data_root`): :mod:`~metaloop.data.clinc150`, :mod:`~metaloop.data.hwu64`,
:mod:`~metaloop.data.huffpost`, :mod:`~metaloop.data.fewrel`; by name in :data:`metaloop.data.TEXT_SOURCES`.
Their class splits by group (domain, scenario) are packaged in ``metaloop/data/splits/``.

:func:`text_file` reads the user's own CSV or JSON-lines file; :func:`mixed` joins several datasets
into one (class names prefixed ``"source/"``) for meta-training on a mix of sources.

Parsed files are cached in memory (per split and resolved data root); each call returns a new
:class:`LabelledTexts`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from metaloop.data.download import how_to_get
from metaloop.data.root import data_root
from metaloop.data.tables import Table, label_order, read_table
from metaloop.errors import MetaloopError

SPLITS = ("train", "val", "test")

# One split's data as the caches hold it (immutable): texts, class id of each text, class names.
Parsed = tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]


class LabelledTexts(Dataset):
    """Texts with integer class labels.

    Attributes:
        texts: the texts (``list[str]``).
        labels: ``int64 [n]``, class ids ``0 … len(classes) − 1``.
        classes: the name of each class id.

    ``dataset[i]`` is ``(texts[i], labels[i])`` with the label as an ``int``.
    """

    def __init__(self, texts: Sequence[str], labels: Sequence[int] | Tensor, classes: Sequence[str]):
        texts = list(texts)
        classes = [str(c) for c in classes]
        if not isinstance(labels, Tensor):
            labels = torch.as_tensor(list(labels), dtype=torch.int64)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise MetaloopError(f"LabelledTexts: labels must be integer class ids, got dtype {labels.dtype}")
        labels = labels.to(torch.int64)
        if labels.ndim != 1 or labels.shape[0] != len(texts):
            raise MetaloopError(
                f"LabelledTexts: labels must be [n] for {len(texts)} texts, got shape {tuple(labels.shape)}"
            )
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise MetaloopError(f"LabelledTexts: text {bad} is a {type(texts[bad]).__name__}, not a string")
        if len(set(classes)) != len(classes):
            twice = sorted({c for c in classes if classes.count(c) > 1})
            raise MetaloopError(f"LabelledTexts: class names must be unique, repeated: {', '.join(twice)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise MetaloopError(
                f"LabelledTexts: labels must lie in 0 … {len(classes) - 1} for {len(classes)} classes, "
                f"got {int(labels.min())} … {int(labels.max())}"
            )
        self.texts, self.labels, self.classes = texts, labels, classes

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> tuple[str, int]:
        return self.texts[index], int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} texts, {self.num_classes} classes)"


def to_labelled(parsed: Parsed) -> LabelledTexts:
    texts, labels, classes = parsed
    return LabelledTexts(list(texts), torch.tensor(labels, dtype=torch.int64), list(classes))


def check_split(dataset: str, split: str) -> None:
    if split not in SPLITS:
        raise MetaloopError(f"{dataset}: unknown split {split!r} (expected one of {', '.join(SPLITS)})")


def resolved_root(root: Any) -> Path:
    return data_root(root).resolve()


def source_file(root: Path, relative: str, dataset: str) -> Path:
    path = root / relative
    if not path.is_file():
        raise MetaloopError(f"{dataset}: expected the file {relative} under the data root {root}, not found "
                            f"({how_to_get(dataset)})")
    return path


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise MetaloopError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise MetaloopError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


@lru_cache(maxsize=None)
def split_file(name: str) -> dict[str, tuple[str, ...]]:
    """A packaged split file ``metaloop/data/splits/<name>.json``: three disjoint lists of groups."""
    where = f"metaloop/data/splits/{name}.json"
    try:
        data = json.loads(
            resources.files("metaloop.data").joinpath("splits", f"{name}.json").read_text("utf-8")
        )
    except (OSError, json.JSONDecodeError) as e:
        raise MetaloopError(f"{where}: cannot read the split file ({e})") from None
    if not isinstance(data, dict) or sorted(data) != sorted(SPLITS):
        raise MetaloopError(f"{where}: expected an object with the keys {', '.join(SPLITS)}")
    seen: dict[str, str] = {}
    for split in SPLITS:
        groups = data[split]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise MetaloopError(f"{where}: {split!r} must be a list of strings")
        for group in groups:
            if group in seen:
                raise MetaloopError(f"{where}: {group!r} is in both {seen[group]!r} and {split!r}")
            seen[group] = split
    return {split: tuple(data[split]) for split in SPLITS}


def split_groups(name: str, split: str, available: set[str], what: str, source: str) -> tuple[str, ...]:
    """The groups (domains, scenarios) of ``split``, after checking that the split file covers exactly
    the groups the data has."""
    groups = split_file(name)
    listed = {g for gs in groups.values() for g in gs}
    where = f"metaloop/data/splits/{name}.json"
    unknown = sorted(listed - available)
    if unknown:
        raise MetaloopError(f"{where} lists the {what} {', '.join(unknown)}, which {source} does not have")
    missing = sorted(available - listed)
    if missing:
        raise MetaloopError(f"{where}: the {what} {', '.join(missing)} of {source} is in no split")
    return groups[split]


def select_classes(pairs: Sequence[tuple[str, str]], classes: Sequence[str]) -> Parsed:
    """The (text, class name) pairs whose class is in ``classes``, with ids by position in ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    texts, labels = [], []
    for text, name in pairs:
        i = index.get(name)
        if i is not None:
            texts.append(text)
            labels.append(i)
    return tuple(texts), tuple(labels), tuple(classes)



# ------------------------------------------------------------------------------------- user's files


def text_file(path: Any, *, text_field: str = "text", label_field: str = "label") -> LabelledTexts:
    """The user's labelled texts: a CSV file with a header row (``.csv``) or JSON lines, one object per
    line (``.jsonl``, ``.json``, ``.ndjson``). ``text_field`` and ``label_field`` name the column or
    field of the text and of its label; labels are strings or integers (``3`` and ``"3"`` are the same
    class). Class ids follow the sorted labels (numerically when every label is an integer). Blank
    lines are skipped; texts are kept as written.

    Raises:
        MetaloopError: the file is missing, of an unknown type or not UTF-8; a column or field is absent
            (listing those there are); a text or label is empty, or a line is not a JSON object (giving
            the line number); the file has no examples.
    """
    return table_texts(read_table(path, what="text file"), text_field, label_field)


def table_texts(table: Table, text_field: str = "text", label_field: str = "label") -> LabelledTexts:
    """The labelled texts of a :class:`~metaloop.data.tables.Table` (see :func:`text_file`)."""
    texts = table.column(text_field, kind="text")
    labels = table.column(label_field, kind="label", integers=True, strip=True)
    classes = label_order(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    return LabelledTexts(texts, torch.tensor([index[label] for label in labels]), classes)


# ---------------------------------------------------------------------------------------------- mix


def mixed(datasets: Sequence[LabelledTexts], names: Sequence[str]) -> LabelledTexts:
    """The union of several datasets' classes, for meta-training on a mix of sources: dataset ``k``'s
    class ``c`` becomes ``"<names[k]>/<c>"`` and class ids run on from one dataset to the next.

    Raises:
        MetaloopError: no datasets, a different number of names, repeated or empty names, or an item
            that is not a :class:`LabelledTexts`.
    """
    datasets, names = list(datasets), [str(n) for n in names]
    if not datasets:
        raise MetaloopError("mixed: no datasets given")
    if len(names) != len(datasets):
        raise MetaloopError(f"mixed: {len(datasets)} datasets but {len(names)} names")
    if any(not n for n in names) or len(set(names)) != len(names):
        raise MetaloopError(
            f"mixed: the names must be distinct and non-empty, got {', '.join(map(repr, names))}"
        )
    texts: list[str] = []
    labels: list[Tensor] = []
    classes: list[str] = []
    for dataset, name in zip(datasets, names):
        if not isinstance(dataset, LabelledTexts):
            raise MetaloopError(f"mixed: {name!r} is a {type(dataset).__name__}, not a LabelledTexts")
        texts.extend(dataset.texts)
        labels.append(dataset.labels + len(classes))
        classes.extend(f"{name}/{c}" for c in dataset.classes)
    return LabelledTexts(texts, torch.cat(labels), classes)
