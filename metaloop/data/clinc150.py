"""**CLINC150** (Larson et al. 2019, "An Evaluation Dataset for Intent Classification and
Out-of-Scope Prediction", EMNLP), ``clinc150/data_full.json`` and ``clinc150/domains.json``:
150 intents in 10 domains of 15 intents. The official train, val and test examples are pooled
(150 per intent) and the out-of-scope examples (intent ``oos``) are dropped; the *classes* are
split by domain, as listed in ``metaloop/data/splits/clinc150.json``:

- train, 6 domains, 90 intents: auto_and_commute, banking, home, meta, small_talk, utility;
- val, 1 domain, 15 intents: kitchen_and_dining;
- test, 3 domains, 45 intents: credit_cards, travel, work.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from metaloop.data.texts import (
    SPLITS,
    LabelledTexts,
    Parsed,
    check_split,
    read_json,
    resolved_root,
    select_classes,
    source_file,
    split_groups,
    to_labelled,
)
from metaloop.errors import MetaloopError


@lru_cache(maxsize=2)
def _clinc150_all(root: Path) -> tuple[tuple[tuple[str, str], ...], dict[str, tuple[str, ...]]]:
    """All in-scope (text, intent) pairs of ``data_full.json`` (train, val and test) and the domains."""
    path = source_file(root, "clinc150/data_full.json", "clinc150")
    domains_path = source_file(root, "clinc150/domains.json", "clinc150")
    data, domains = read_json(path), read_json(domains_path)
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
def _clinc150(split: str, root: Path) -> Parsed:
    pairs, domains = _clinc150_all(root)
    chosen = split_groups("clinc150", split, set(domains), "domain", "clinc150/domains.json")
    return select_classes(pairs, sorted({i for d in chosen for i in domains[d]}))


def clinc150_split(split: str, root: Any = None) -> LabelledTexts:
    """CLINC150's intents of one domain split (see the module docstring), 150 examples per intent.

    Raises:
        MetaloopError: an unknown split, or a missing or malformed file (naming it).
    """
    check_split("clinc150", split)
    return to_labelled(_clinc150(split, resolved_root(root)))
