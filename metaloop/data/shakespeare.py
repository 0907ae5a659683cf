"""TinyShakespeare (Karpathy 2015): 40,000 lines of plays, read as speakers and their lines.

The file is ``tinyshakespeare/input.txt`` under the data root (:func:`metaloop.data.data_root`), blocks
``NAME:\nline\nline…`` separated by blank lines. Every text line of a block is one line of its speaker. A speaker
is kept if they have at least :data:`MIN_LINES` lines of :data:`MIN_CHARS` to :data:`MAX_CHARS` characters (123
speakers); lines outside that range are dropped.

**Speaker split.** A speaker is held out for testing when the first 32 bits of the SHA-256 of their
name, mod 100, fall below :data:`TEST_PERCENT` (20): 37 test speakers, 86 training speakers. The
lists are frozen in ``metaloop/data/splits/shakespeare.json`` (:func:`frozen_split`; :func:`speaker_split`
recomputes them and the tests check the two agree), so a test speaker's lines are never seen in meta-training.
A speaker is a name as the text writes it: one character may speak under two names (GLOUCESTER becomes KING
RICHARD III), and those two may fall on different sides.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from metaloop.data.download import how_to_get
from metaloop.data.root import data_root
from metaloop.errors import MetaloopError

FILE = Path("tinyshakespeare") / "input.txt"
SPLIT_FILE = Path(__file__).resolve().parent / "splits" / "shakespeare.json"
MIN_CHARS, MAX_CHARS = 10, 63
MIN_LINES = 32
TEST_PERCENT = 20


def parse_speakers(text: str) -> dict[str, list[str]]:
    """Every speaker's lines, in order of appearance: blocks ``NAME:\\nline…`` separated by blank lines."""
    lines: dict[str, list[str]] = {}
    for block in text.split("\n\n"):
        rows = block.strip("\n").split("\n")
        if len(rows) < 2 or not rows[0].endswith(":"):
            continue
        lines.setdefault(rows[0][:-1].strip(), []).extend(rows[1:])
    return lines


def eligible_speakers(speakers: dict[str, list[str]]) -> dict[str, list[str]]:
    """Speakers with at least :data:`MIN_LINES` lines of :data:`MIN_CHARS`–:data:`MAX_CHARS` characters
    (those lines only)."""
    kept = {name: [s for s in rows if MIN_CHARS <= len(s) <= MAX_CHARS] for name, rows in speakers.items()}
    return {name: rows for name, rows in kept.items() if len(rows) >= MIN_LINES}


def is_test_speaker(name: str) -> bool:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 100 < TEST_PERCENT


def speaker_split(speakers: dict[str, list[str]]) -> dict[str, list[str]]:
    """``{"train": [...], "test": [...]}``: the eligible speakers, sorted, split by :func:`is_test_speaker`."""
    names = sorted(eligible_speakers(speakers))
    return {"train": [n for n in names if not is_test_speaker(n)], "test": [n for n in names if is_test_speaker(n)]}


def frozen_split() -> dict[str, list[str]]:
    """The speaker lists of ``splits/shakespeare.json``."""
    data = json.loads(SPLIT_FILE.read_text())
    return {"train": list(data["train"]), "test": list(data["test"])}


@lru_cache(maxsize=4)
def load_speakers(root: str | None = None) -> dict[str, tuple[str, ...]]:
    """The eligible speakers' lines from ``<data root>/tinyshakespeare/input.txt``."""
    path = data_root(root) / FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        hint = f"; {how_to_get('tinyshakespeare')}" if not path.exists() else ""
        raise MetaloopError(f"TinyShakespeare: cannot read {path} ({exc.strerror or exc}{hint})") from None
    return {name: tuple(rows) for name, rows in eligible_speakers(parse_speakers(text)).items()}
