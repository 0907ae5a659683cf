"""Few-shot text classification data: four public benchmarks with class splits, and the user's own files.

Every loader returns a :class:`LabelledTexts` (``texts``, ``labels`` as ``int64 [n]`` with class ids
``0 … C − 1``, and ``classes``, the name of each id). The classes of the ``train``, ``val`` and ``test``
splits of a benchmark are disjoint, as few-shot episodes need: a model is meta-trained on some classes
and tested on classes it has never seen. Class ids are local to a split (each split starts at 0).

Benchmarks (files under the data root, see ``shared/data/README.md``; the root is found by
:func:`metaloop.data.data_root`):

- **CLINC150** (Larson et al. 2019, "An Evaluation Dataset for Intent Classification and
  Out-of-Scope Prediction", EMNLP), ``clinc150/data_full.json`` and ``clinc150/domains.json``:
  150 intents in 10 domains of 15 intents. The official train, val and test examples are pooled
  (150 per intent) and the out-of-scope examples (intent ``oos``) are dropped; the *classes* are
  split by domain, as listed in ``metaloop/tasks/splits/clinc150.json``:

  - train, 6 domains, 90 intents: auto_and_commute, banking, home, meta, small_talk, utility;
  - val, 1 domain, 15 intents: kitchen_and_dining;
  - test, 3 domains, 45 intents: credit_cards, travel, work.

- **HWU64** (Liu et al. 2019, "Benchmarking Natural Language Understanding Services for Building
  Conversational Agents", IWSDS), ``hwu64/hwu64.csv``: 11,036 utterances of 64 intents (the
  ``label`` column, ``scenario_intent``) in 18 scenarios, 38 to 194 per intent. All ten folds are
  pooled; the classes are split by scenario, as listed in ``metaloop/tasks/splits/hwu64.json``:

  - train, 11 scenarios, 42 intents: alarm, calendar, cooking, email, general, iot, lists, music,
    news, transport, weather;
  - val, 2 scenarios, 8 intents: audio, play;
  - test, 5 scenarios, 14 intents: datetime, qa, recommendation, social, takeaway.

- **HuffPost** headlines (Misra 2018, as prepared by Bao et al. 2020, "Few-shot Text Classification
  with Distributional Signatures", ICLR), ``huffpost/huffpost.json`` (JSON lines ``{"raw", "label"}``):
  41 news categories × 900 headlines, with Bao et al.'s class split: train labels 0–19, val 20–24,
  test 25–40. Class names come from ``huffpost/label_names.json`` when it is there (else the label id).

- **FewRel 1.0** (Han et al. 2018, "FewRel: A Large-Scale Supervised Few-Shot Relation Classification
  Dataset with State-of-the-Art Evaluation", EMNLP), ``fewrel/val_wiki.json``: 16 Wikidata relations ×
  700 sentences. Only the validation file is public in this data, so FewRel serves meta-testing only:
  ``test`` (and ``val``, the same data) are all 16 relations, and ``train`` is an error. A text is the
  tokens joined by spaces, with the head entity wrapped in ``[E1] … [/E1]`` and the tail entity in
  ``[E2] … [/E2]`` (``mark_entities=False`` leaves them out). Class names are the relation names from
  ``fewrel/pid2name.json`` when it is there (else the property id, ``P177``).

:func:`text_file` reads the user's own CSV or JSON-lines file; :func:`mixed` joins several datasets
into one (class names prefixed ``"source/"``) for meta-training on a mix of sources.

Within a split, class ids follow the sorted class names (CLINC150, HWU64), the label ids (HuffPost) or
the sorted property ids (FewRel); examples keep the order of the file. Parsed files are cached in
memory (per split and resolved data root); each call returns a new :class:`LabelledTexts`.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from metaloop.data import data_root
from metaloop.errors import MetaloopError
from metaloop.tables import Table, label_order, read_table

SPLITS = ("train", "val", "test")

HUFFPOST_CLASSES = {"train": range(0, 20), "val": range(20, 25), "test": range(25, 41)}
"""Bao et al. (2020)'s HuffPost class split (``_get_huffpost_classes`` in their loader)."""

# One split's data as the caches hold it (immutable): texts, class id of each text, class names.
_Parsed = tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]


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


def _labelled(parsed: _Parsed) -> LabelledTexts:
    texts, labels, classes = parsed
    return LabelledTexts(list(texts), torch.tensor(labels, dtype=torch.int64), list(classes))


def _check_split(dataset: str, split: str) -> None:
    if split not in SPLITS:
        raise MetaloopError(f"{dataset}: unknown split {split!r} (expected one of {', '.join(SPLITS)})")


def _root(root: Any) -> Path:
    return data_root(root).resolve()


def _data_file(root: Path, relative: str, dataset: str) -> Path:
    path = root / relative
    if not path.is_file():
        raise MetaloopError(f"{dataset}: expected the file {relative} under the data root {root}, not found "
                            f"(`metaloop data download {dataset}` gets it)")
    return path


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise MetaloopError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise MetaloopError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


@lru_cache(maxsize=None)
def _split_file(name: str) -> dict[str, tuple[str, ...]]:
    """A packaged split file ``metaloop/tasks/splits/<name>.json``: three disjoint lists of groups."""
    where = f"metaloop/tasks/splits/{name}.json"
    try:
        data = json.loads(
            resources.files("metaloop.tasks").joinpath("splits", f"{name}.json").read_text("utf-8")
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


def _split_groups(name: str, split: str, available: set[str], what: str, source: str) -> tuple[str, ...]:
    """The groups (domains, scenarios) of ``split``, after checking that the split file covers exactly
    the groups the data has."""
    groups = _split_file(name)
    listed = {g for gs in groups.values() for g in gs}
    where = f"metaloop/tasks/splits/{name}.json"
    unknown = sorted(listed - available)
    if unknown:
        raise MetaloopError(f"{where} lists the {what} {', '.join(unknown)}, which {source} does not have")
    missing = sorted(available - listed)
    if missing:
        raise MetaloopError(f"{where}: the {what} {', '.join(missing)} of {source} is in no split")
    return groups[split]


def _select(pairs: Sequence[tuple[str, str]], classes: Sequence[str]) -> _Parsed:
    """The (text, class name) pairs whose class is in ``classes``, with ids by position in ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    texts, labels = [], []
    for text, name in pairs:
        i = index.get(name)
        if i is not None:
            texts.append(text)
            labels.append(i)
    return tuple(texts), tuple(labels), tuple(classes)


# ------------------------------------------------------------------------------------------ CLINC150


@lru_cache(maxsize=2)
def _clinc150_all(root: Path) -> tuple[tuple[tuple[str, str], ...], dict[str, tuple[str, ...]]]:
    """All in-scope (text, intent) pairs of ``data_full.json`` (train, val and test) and the domains."""
    path = _data_file(root, "clinc150/data_full.json", "clinc150")
    domains_path = _data_file(root, "clinc150/domains.json", "clinc150")
    data, domains = _read_json(path), _read_json(domains_path)
    if not isinstance(domains, dict) or not all(
        isinstance(v, list) and all(isinstance(i, str) for i in v) for v in domains.values()
    ):
        raise MetaloopError(f"{domains_path}: expected an object mapping each domain to a list of intents")
    if not isinstance(data, dict):
        raise MetaloopError(f"{path}: expected an object of splits (train, val, test, …)")
    pairs = []
    for part in SPLITS:
        if not isinstance(data.get(part), list):
            raise MetaloopError(f"{path}: no list {part!r} of [text, intent] pairs")
        for j, pair in enumerate(data[part]):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                raise MetaloopError(f"{path}: {part}[{j}] is not a [text, intent] pair")
            if pair[1] != "oos":
                pairs.append((pair[0], pair[1]))
    known = {i for v in domains.values() for i in v}
    strays = sorted({intent for _, intent in pairs} - known)
    if strays:
        raise MetaloopError(f"{path}: intents in no domain of {domains_path.name}: {', '.join(strays)}")
    return tuple(pairs), {d: tuple(v) for d, v in domains.items()}


@lru_cache(maxsize=8)
def _clinc150(split: str, root: Path) -> _Parsed:
    pairs, domains = _clinc150_all(root)
    chosen = _split_groups("clinc150", split, set(domains), "domain", "clinc150/domains.json")
    return _select(pairs, sorted({i for d in chosen for i in domains[d]}))


def clinc150_split(split: str, root: Any = None) -> LabelledTexts:
    """CLINC150's intents of one domain split (see the module docstring), 150 examples per intent.

    Raises:
        MetaloopError: an unknown split, or a missing or malformed file (naming it).
    """
    _check_split("clinc150", split)
    return _labelled(_clinc150(split, _root(root)))


# --------------------------------------------------------------------------------------------- HWU64


@lru_cache(maxsize=2)
def _hwu64_all(root: Path) -> tuple[tuple[tuple[str, str], ...], dict[str, str]]:
    """All (text, label) pairs of ``hwu64.csv`` and the scenario of each label."""
    path = _data_file(root, "hwu64/hwu64.csv", "hwu64")
    pairs, scenario_of = [], {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            for column in ("scenario", "label", "text"):
                if column not in header:
                    raise MetaloopError(
                        f"{path}: no column {column!r} (columns: {', '.join(header) or 'none'})"
                    )
            for row in reader:
                scenario, label, text = (row.get(c) or "" for c in ("scenario", "label", "text"))
                for column, value in (("scenario", scenario), ("label", label), ("text", text)):
                    if not value.strip():
                        raise MetaloopError(f"{path}:{reader.line_num}: empty {column!r}")
                if scenario_of.setdefault(label, scenario) != scenario:
                    raise MetaloopError(
                        f"{path}:{reader.line_num}: label {label!r} has scenario {scenario!r} here "
                        f"but {scenario_of[label]!r} before"
                    )
                pairs.append((text, label))
    except UnicodeDecodeError as e:
        raise MetaloopError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return tuple(pairs), scenario_of


@lru_cache(maxsize=8)
def _hwu64(split: str, root: Path) -> _Parsed:
    pairs, scenario_of = _hwu64_all(root)
    chosen = set(_split_groups("hwu64", split, set(scenario_of.values()), "scenario", "hwu64/hwu64.csv"))
    return _select(pairs, sorted(label for label, s in scenario_of.items() if s in chosen))


def hwu64_split(split: str, root: Any = None) -> LabelledTexts:
    """HWU64's intents (``label`` column) of one scenario split (see the module docstring).

    Raises:
        MetaloopError: an unknown split, or a missing or malformed file (naming it).
    """
    _check_split("hwu64", split)
    return _labelled(_hwu64(split, _root(root)))


# ------------------------------------------------------------------------------------------ HuffPost


@lru_cache(maxsize=2)
def _huffpost_all(root: Path) -> tuple[tuple[tuple[str, int], ...], dict[int, str]]:
    """All (headline, label id) pairs of ``huffpost.json`` and the label names (possibly none)."""
    path = _data_file(root, "huffpost/huffpost.json", "huffpost")
    pairs = []
    total = HUFFPOST_CLASSES["test"].stop
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
        raw = _read_json(names_path)
        if not isinstance(raw, dict):
            raise MetaloopError(f"{names_path}: expected an object mapping label ids to names")
        names = {int(k): str(v) for k, v in raw.items() if re.fullmatch(r"\d+", str(k))}
    return tuple(pairs), names


@lru_cache(maxsize=8)
def _huffpost(split: str, root: Path) -> _Parsed:
    pairs, names = _huffpost_all(root)
    ids = HUFFPOST_CLASSES[split]
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
    _check_split("huffpost", split)
    return _labelled(_huffpost(split, _root(root)))


# -------------------------------------------------------------------------------------------- FewRel


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
def _fewrel(root: Path, mark_entities: bool) -> _Parsed:
    path = _data_file(root, "fewrel/val_wiki.json", "fewrel")
    data = _read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise MetaloopError(f"{path}: expected an object mapping each relation id to a list of instances")
    names: dict[str, str] = {}
    names_path = root / "fewrel" / "pid2name.json"
    if names_path.is_file():
        raw = _read_json(names_path)
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
    _check_split("fewrel", split)
    if split == "train":
        raise MetaloopError(
            "fewrel: no 'train' split: FewRel's training file (train_wiki.json) is not available, and "
            "val_wiki.json is for meta-testing only; use split 'test' (or 'val', the same data)"
        )
    return _labelled(_fewrel(_root(root), bool(mark_entities)))


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
    """The labelled texts of a :class:`~metaloop.tables.Table` (see :func:`text_file`)."""
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


TEXT_SOURCES: dict[str, Callable[..., LabelledTexts]] = {
    "clinc150": clinc150_split,
    "hwu64": hwu64_split,
    "huffpost": huffpost_split,
    "fewrel": fewrel_split,
}
"""The benchmark loaders by name, each called as ``loader(split, root=None)``."""
