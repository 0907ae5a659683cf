"""**FewRel 1.0** (Han et al. 2018, "FewRel: A Large-Scale Supervised Few-Shot Relation Classification
Dataset with State-of-the-Art Evaluation", EMNLP), ``fewrel/val_wiki.json``: 16 Wikidata relations ×
700 sentences. Only the validation file is public in this data, so FewRel serves meta-testing only:
``test`` (and ``val``, the same data) are all 16 relations, and ``train`` is an error. A text is the
tokens joined by spaces, with the head entity wrapped in ``[E1] … [/E1]`` and the tail entity in
``[E2] … [/E2]`` (``mark_entities=False`` leaves them out). Class names are the relation names from
``fewrel/pid2name.json`` when it is there (else the property id, ``P177``).
"""

from __future__ import annotations

from collections.abc import Sequence
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


def mark_entities_in(tokens: Sequence[str], head: Sequence[int], tail: Sequence[int]) -> str:
    """``tokens`` joined by spaces, the head entity wrapped in ``[E1] … [/E1]`` and the tail in
    ``[E2] … [/E2]``. An entity spans its smallest to its largest token index. Nested spans nest
    properly (the outer one opens first and closes last); spans that overlap without nesting get
    crossing marks rather than an error."""
    spans = [(min(head), max(head), "E1"), (min(tail), max(tail), "E2")]
    opening = sorted(spans, key=lambda s: (s[0], -s[1]))  # stable: E1 first for the same span
    before: list[list[str]] = [[] for _ in tokens]
    after: list[list[str]] = [[] for _ in tokens]
    for start, _, tag in opening:
        before[start].append(f"[{tag}]")
    for rank, (_, end, tag) in sorted(enumerate(opening), key=lambda r: (r[1][1], -r[0])):
        after[end].append(f"[/{tag}]")
    return " ".join(" ".join([*b, token, *a]) for b, token, a in zip(before, tokens, after))


def _entity_positions(entity: Any, n: int, where: str, which: str) -> list[int]:
    try:
        positions = entity[2][0]
    except (TypeError, IndexError, KeyError):
        raise MetaloopError(
            f"{where}: {which!r} lacks its token positions [name, id, [[positions], …]]"
        ) from None
    if (
        not isinstance(positions, list)
        or not positions
        or not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p < n for p in positions)
    ):
        raise MetaloopError(f"{where}: {which!r} positions {positions!r} are not token indices 0 … {n - 1}")
    return positions


@lru_cache(maxsize=4)
def _fewrel(root: Path, mark_entities: bool) -> Parsed:
    path = source_file(root, "fewrel/val_wiki.json", "fewrel")
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise MetaloopError(f"{path}: expected an object mapping each relation id to a list of instances")
    names: dict[str, str] = {}
    names_path = root / "fewrel" / "pid2name.json"
    if names_path.is_file():
        raw = read_json(names_path)
        if not isinstance(raw, dict):
            raise MetaloopError(
                f"{names_path}: expected an object mapping relation ids to [name, description]"
            )
        for pid, value in raw.items():
            if isinstance(value, list) and value and isinstance(value[0], str):
                names[pid] = value[0]
            elif isinstance(value, str):
                names[pid] = value
    pids = sorted(data)
    texts, labels = [], []
    for label, pid in enumerate(pids):
        for j, instance in enumerate(data[pid]):
            where = f"{path}: {pid}[{j}]"
            tokens = instance.get("tokens") if isinstance(instance, dict) else None
            if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
                raise MetaloopError(f"{where}: no list of string 'tokens'")
            if mark_entities:
                head = _entity_positions(instance.get("h"), len(tokens), where, "h")
                tail = _entity_positions(instance.get("t"), len(tokens), where, "t")
                texts.append(mark_entities_in(tokens, head, tail))
            else:
                texts.append(" ".join(tokens))
            labels.append(label)
    classes = [names.get(pid, pid) for pid in pids]
    if len(set(classes)) != len(classes):  # names that collide keep their id
        classes = [f"{c} ({pid})" if c != pid else c for c, pid in zip(classes, pids)]
    return tuple(texts), tuple(labels), tuple(classes)


def fewrel_split(split: str, root: Any = None, *, mark_entities: bool = True) -> LabelledTexts:
    """FewRel 1.0's 16 validation relations × 700 sentences, for meta-testing (``"test"`` or ``"val"``).

    Raises:
        MetaloopError: ``split="train"`` (FewRel's training file is not in the data), an unknown
            split, or a missing or malformed file (naming it and the instance).
    """
    check_split("fewrel", split)
    if split == "train":
        raise MetaloopError(
            "fewrel: no 'train' split: FewRel's training file (train_wiki.json) is not available, and "
            "val_wiki.json is for meta-testing only; use split 'test' (or 'val', the same data)"
        )
    return to_labelled(_fewrel(resolved_root(root), bool(mark_entities)))
