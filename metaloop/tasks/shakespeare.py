"""TinyShakespeare speakers as language-modelling tasks: a task is one speaker's lines.

The speakers, their lines and the frozen train/test speaker split are read by :mod:`metaloop.data.shakespeare`.
A task draws a speaker uniformly from its split, then ``shots + queries`` distinct lines of theirs
(support first), from its own generator seeded by ``(seed, split, index)``. A line becomes the bytes
``"\\n" + line + "\\n"``: ``x`` is all of them but the last, right-padded with 0 to :data:`SEQ_LEN`,
and ``y`` the next byte at every position, ``-100`` at padding. Every byte of the line and the final
newline is scored (the leading newline is the context of the first character).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metaloop.data.shakespeare import MAX_CHARS, MIN_LINES, SPLIT_FILE, frozen_split, load_speakers
from metaloop.errors import MetaloopError
from metaloop.tasks.base import TaskBatch, TaskStream

IGNORE = -100
PAD = 0
#: ``x``'s width: the longest kept line plus the leading newline.
SEQ_LEN = MAX_CHARS + 1


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
