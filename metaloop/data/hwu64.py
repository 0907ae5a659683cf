"""**HWU64** (Liu et al. 2019, "Benchmarking Natural Language Understanding Services for Building
Conversational Agents", IWSDS), ``hwu64/hwu64.csv``: 11,036 utterances of 64 intents (the
``label`` column, ``scenario_intent``) in 18 scenarios, 38 to 194 per intent. All ten folds are
pooled; the classes are split by scenario, as listed in ``metaloop/data/splits/hwu64.json``:

- train, 11 scenarios, 42 intents: alarm, calendar, cooking, email, general, iot, lists, music,
  news, transport, weather;
- val, 2 scenarios, 8 intents: audio, play;
- test, 5 scenarios, 14 intents: datetime, qa, recommendation, social, takeaway.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path
from typing import Any

from metaloop.data.texts import (
    LabelledTexts,
    Parsed,
    check_split,
    resolved_root,
    select_classes,
    source_file,
    split_groups,
    to_labelled,
)
from metaloop.errors import MetaloopError


@lru_cache(maxsize=2)
def _hwu64_all(root: Path) -> tuple[tuple[tuple[str, str], ...], dict[str, str]]:
    """All (text, label) pairs of ``hwu64.csv`` and the scenario of each label."""
    path = source_file(root, "hwu64/hwu64.csv", "hwu64")
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
def _hwu64(split: str, root: Path) -> Parsed:
    pairs, scenario_of = _hwu64_all(root)
    chosen = set(split_groups("hwu64", split, set(scenario_of.values()), "scenario", "hwu64/hwu64.csv"))
    return select_classes(pairs, sorted(label for label, s in scenario_of.items() if s in chosen))


def hwu64_split(split: str, root: Any = None) -> LabelledTexts:
    """HWU64's intents (``label`` column) of one scenario split (see the module docstring).

    Raises:
        MetaloopError: an unknown split, or a missing or malformed file (naming it).
    """
    check_split("hwu64", split)
    return to_labelled(_hwu64(split, resolved_root(root)))
