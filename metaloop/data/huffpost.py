"""**HuffPost** headlines (Misra 2018, as prepared by Bao et al. 2020, "Few-shot Text Classification
with Distributional Signatures", ICLR), ``huffpost/huffpost.json`` (JSON lines ``{"raw", "label"}``):
41 news categories × 900 headlines, with Bao et al.'s class split: train labels 0–19, val 20–24,
test 25–40. Class names come from ``huffpost/label_names.json`` when it is there (else the label id).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from metaloop.data.texts import (
    LabelledTexts,
    Parsed,
    check_split,
    read_json,
    resolved_root,
    source_file,
    to_labelled,
)
from metaloop.errors import MetaloopError

CLASSES = {"train": range(0, 20), "val": range(20, 25), "test": range(25, 41)}
"""Bao et al. (2020)'s HuffPost class split (``_get_huffpost_classes`` in their loader)."""


@lru_cache(maxsize=2)
def _huffpost_all(root: Path) -> tuple[tuple[tuple[str, int], ...], dict[int, str]]:
    """All (headline, label id) pairs of ``huffpost.json`` and the label names (possibly none)."""
    path = source_file(root, "huffpost/huffpost.json", "huffpost")
    pairs = []
    total = CLASSES["test"].stop
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MetaloopError(f"{path}:{number}: invalid JSON ({e.msg})") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("raw"), str):
                    raise MetaloopError(f"{path}:{number}: expected an object with a string field 'raw'")
                label = obj.get("label")
                if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < total:
                    raise MetaloopError(f"{path}:{number}: 'label' must be an integer 0 … {total - 1}")
                pairs.append((obj["raw"], label))
    except UnicodeDecodeError as e:
        raise MetaloopError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    names: dict[int, str] = {}
    names_path = root / "huffpost" / "label_names.json"
    if names_path.is_file():
        raw = read_json(names_path)
        if not isinstance(raw, dict):
            raise MetaloopError(f"{names_path}: expected an object mapping label ids to names")
        names = {int(k): str(v) for k, v in raw.items() if re.fullmatch(r"\d+", str(k))}
    return tuple(pairs), names


@lru_cache(maxsize=8)
def _huffpost(split: str, root: Path) -> Parsed:
    pairs, names = _huffpost_all(root)
    ids = CLASSES[split]
    index = {label: i for i, label in enumerate(ids)}
    texts, labels = [], []
    for text, label in pairs:
        if label in index:
            texts.append(text)
            labels.append(index[label])
    absent = sorted(set(ids) - {label for _, label in pairs})
    if absent:
        where = root / "huffpost" / "huffpost.json"
        raise MetaloopError(f"{where}: no headlines of the {split} labels {', '.join(map(str, absent))}")
    classes = [names.get(label, str(label)) for label in ids]
    if len(set(classes)) != len(classes):  # names that collide keep their id
        classes = [f"{c} ({label})" for c, label in zip(classes, ids)]
    return tuple(texts), tuple(labels), tuple(classes)


def huffpost_split(split: str, root: Any = None) -> LabelledTexts:
    """HuffPost headlines of one of Bao et al. (2020)'s class splits: 20, 5 and 16 categories × 900.

    Raises:
        MetaloopError: an unknown split, or a missing or malformed file (naming it and the line).
    """
    check_split("huffpost", split)
    return to_labelled(_huffpost(split, resolved_root(root)))
