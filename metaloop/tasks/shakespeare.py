"""TinyShakespeare speakers as language-modelling tasks: a task is one speaker's lines.

TinyShakespeare (Karpathy 2015, ``tinyshakespeare/input.txt`` under the data root, found by
:func:`metaloop.data.data_root`) is 40,000 lines of plays in blocks ``NAME:\\nline\\nline…`` separated by
blank lines. Every text line of a block is one example of its speaker. A speaker is a task if they
have at least :data:`MIN_LINES` lines of :data:`MIN_CHARS` to :data:`MAX_CHARS` characters (123
speakers); lines outside that range are dropped.

**Speaker split.** A speaker is held out for testing when the first 32 bits of the SHA-256 of their
name, mod 100, fall below :data:`TEST_PERCENT` (20): 37 test speakers, 86 training speakers. The
lists are frozen in ``metaloop/data/splits/shakespeare.json`` (the tasks read them from there;
:func:`speaker_split` recomputes them and the tests check the two agree), so a test speaker's lines
are never seen in meta-training. A speaker is a name as the text writes it: one character may speak
under two names (GLOUCESTER becomes KING RICHARD III), and those two may fall on different sides.

A task draws a speaker uniformly from its split, then ``shots + queries`` distinct lines of theirs
(support first), from its own generator seeded by ``(seed, split, index)``. A line becomes the bytes
``"\\n" + line + "\\n"``: ``x`` is all of them but the last, right-padded with 0 to :data:`SEQ_LEN`,
and ``y`` the next byte at every position, ``-100`` at padding. Every byte of the line and the final
newline is scored (the leading newline is the context of the first character).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from metaloop.data import data_root, how_to_get
from metaloop.errors import MetaloopError
from metaloop.tasks.base import TaskBatch, TaskStream

FILE = Path("tinyshakespeare") / "input.txt"
SPLIT_FILE = Path(__file__).resolve().parent.parent / "data" / "splits" / "shakespeare.json"
MIN_CHARS, MAX_CHARS = 10, 63
MIN_LINES = 32
TEST_PERCENT = 20
IGNORE = -100
PAD = 0
#: ``x``'s width: the longest kept line plus the leading newline.
SEQ_LEN = MAX_CHARS + 1


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


def encode_lines(lines: list[str], length: int = SEQ_LEN) -> tuple[Tensor, Tensor]:
    """``(x, y)``, each ``[n, length]``: every byte of ``"\\n" + line + "\\n"`` is predicted from the ones before."""
    x = torch.full((len(lines), length), PAD, dtype=torch.long)
    y = torch.full((len(lines), length), IGNORE, dtype=torch.long)
    for i, line in enumerate(lines):
        ids = torch.tensor(list(("\n" + line + "\n").encode()), dtype=torch.long)
        if ids.numel() - 1 > length:
            raise ValueError(f"line {line!r} is longer than {length - 1} bytes")
        x[i, : ids.numel() - 1] = ids[:-1]
        y[i, : ids.numel() - 1] = ids[1:]
    return x, y


class ShakespeareTasks(TaskStream):
    """An indexable, seeded stream of speaker tasks (a ``torch.utils.data.Dataset`` of tasks).

    Args:
        shots: support lines per task (K).
        queries: query lines per task.
        seed: the stream's seed.
        split: ``"train"`` or ``"test"`` (the speakers of ``splits/shakespeare.json``).
        root: the data root (default: :func:`metaloop.data.data_root`'s look-up).
        length: the dataset's length (the stream itself is unbounded).

    ``info["speaker"]`` is the index of each task's speaker in :attr:`speakers`.
    """

    splits = ("train", "test")

    def __init__(self, shots: int, queries: int, *, seed: int = 0, split: str = "train", root: str | None = None,
                 length: int = 2**31 - 1):
        super().__init__(seed=seed, split=split, length=length)
        if shots + queries > MIN_LINES:
            raise MetaloopError(f"TinyShakespeare: shots + queries = {shots + queries} lines per task, but a "
                                f"speaker may have only {MIN_LINES}")
        self.shots, self.queries = shots, queries
        lines = load_speakers(None if root is None else str(root))
        self.speakers = frozen_split()[split]
        missing = [n for n in self.speakers if n not in lines]
        if missing:
            raise MetaloopError(f"TinyShakespeare: speakers {missing[:3]} of {SPLIT_FILE.name} are not in the data")
        self.lines = [lines[n] for n in self.speakers]

    def examples(self, index: int) -> tuple[str, list[str]]:
        """Task ``index``: its speaker and ``shots + queries`` distinct lines of theirs, support first."""
        g = self.generator(index)
        s = int(torch.randint(len(self.speakers), (), generator=g))
        pick = torch.randperm(len(self.lines[s]), generator=g)[: self.shots + self.queries]
        return self.speakers[s], [self.lines[s][j] for j in pick.tolist()]

    def batch(self, start: int, count: int) -> TaskBatch:
        """Tasks ``start … start + count − 1``: ``x``, ``y`` of shape ``[tasks, n, SEQ_LEN]``."""
        xs, ys, who = [], [], []
        for i in range(start, start + count):
            speaker, lines = self.examples(i)
            x, y = encode_lines(lines)
            xs.append(x)
            ys.append(y)
            who.append(self.speakers.index(speaker))
        x, y, k = torch.stack(xs), torch.stack(ys), self.shots
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:], info={"speaker": torch.tensor(who)})
