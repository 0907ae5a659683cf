"""TinyShakespeare speaker tasks: parsing, the frozen speaker split, determinism and the targets."""

from __future__ import annotations

import pytest
import torch

from metaloop.data import data_root
from metaloop.data.shakespeare import (
    FILE,
    MIN_LINES,
    frozen_split,
    is_test_speaker,
    load_speakers,
    parse_speakers,
    speaker_split,
)
from metaloop.errors import MetaloopError
from metaloop.tasks.shakespeare import IGNORE, SEQ_LEN, ShakespeareTasks, encode_lines


def _has_data() -> bool:
    try:
        return (data_root() / FILE).exists()
    except MetaloopError:
        return False


needs_data = pytest.mark.skipif(not _has_data(), reason="tinyshakespeare/input.txt not found under the data root")


def test_parse_speakers():
    """Blocks ``NAME:\\nlines`` separated by blank lines; a speaker's blocks are pooled in order."""
    text = "First Citizen:\nBefore we proceed,\nhear me speak.\n\nAll:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved?\n"
    assert parse_speakers(text) == {"First Citizen": ["Before we proceed,", "hear me speak.", "You are all resolved?"],
                                    "All": ["Speak, speak."]}


def test_frozen_split_is_disjoint_and_follows_the_rule():
    split = frozen_split()
    assert split["train"] and split["test"]
    assert not set(split["train"]) & set(split["test"])
    assert all(is_test_speaker(n) for n in split["test"]) and not any(is_test_speaker(n) for n in split["train"])
    assert split["train"] == sorted(split["train"]) and split["test"] == sorted(split["test"])


@needs_data
def test_frozen_split_matches_the_data():
    """splits/shakespeare.json is what the rule gives on the data; every listed speaker has enough lines."""
    text = (data_root() / FILE).read_text()
    assert speaker_split(parse_speakers(text)) == frozen_split()
    lines = load_speakers()
    assert len(lines) == 123
    assert all(len(lines[n]) >= MIN_LINES for n in lines)


@needs_data
def test_tasks_are_deterministic_and_stay_in_their_split():
    torch.manual_seed(0)
    a = ShakespeareTasks(4, 3, seed=2).batch(5, 3)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    b = ShakespeareTasks(4, 3, seed=2).batch(5, 3)
    assert torch.equal(torch.get_rng_state(), state)
    for x, y in zip(a.tensors(), b.tensors()):
        assert torch.equal(x, y)
    assert a.support_x.shape == (3, 4, SEQ_LEN) and a.query_y.shape == (3, 3, SEQ_LEN)
    item = ShakespeareTasks(4, 3, seed=2)[6]
    assert torch.equal(item.query_x, a.query_x[1])
    train, test = ShakespeareTasks(4, 3, split="train"), ShakespeareTasks(4, 3, split="test")
    lines = load_speakers()
    test_names = set(frozen_split()["test"])
    for i in range(30):
        name, rows = train.examples(i)
        assert name not in test_names and len(set(rows)) == 7 and set(rows) <= set(lines[name])
        name, rows = test.examples(i)
        assert name in test_names and set(rows) <= set(lines[name])


@needs_data
def test_too_many_lines_per_task_is_an_error():
    with pytest.raises(MetaloopError, match="shots \\+ queries"):
        ShakespeareTasks(MIN_LINES, 1)


def test_targets_are_next_bytes():
    """x = "\\n" + line (0-padded); y = the next byte at every position, -100 at padding."""
    x, y = encode_lines(["To be.", "Ay"], length=10)
    assert x[0].tolist() == list(b"\nTo be.") + [0] * 3
    assert y[0].tolist() == list(b"To be.\n") + [IGNORE] * 3
    assert x[1, :3].tolist() == list(b"\nAy") and y[1, :3].tolist() == list(b"Ay\n")
    assert (y[1, 3:] == IGNORE).all() and (x[1, 3:] == 0).all()
    with pytest.raises(ValueError):
        encode_lines(["x" * 10], length=10)
