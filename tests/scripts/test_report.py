"""scripts/_report.py: the helpers every benchmark script shares."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from _report import choose_lr, last_line  # noqa: E402


def test_last_line_is_the_error_without_the_cli_prefix():
    assert last_line("Traceback\n\nmetaloop: error: option 'x': bad\n\n") == "option 'x': bad"
    assert last_line("") == "no message"


TINY = ["n_layer=1", "n_embd=16", "n_head=2", "shots=2", "queries=2", "inner_lr=0.01"]


def test_choose_lr_answers_from_a_subprocess():
    """Both factors scored on the validation tasks and the lower loss chosen; an error comes back as one line."""
    chosen = choose_lr("lm-strings", None, [1.0, 10.0], TINY, episodes=2)
    losses = {float(lr): loss for lr, loss in chosen["validation"].items()}
    assert sorted(losses) == pytest.approx([0.01, 0.1])
    assert chosen["test_inner_lr"] == pytest.approx(min(losses, key=losses.get))
    failed = choose_lr("lm-strings", None, [0.0], TINY)
    assert failed == {"failed": "test step size: test step-size factors must be positive, got [0.0]"}
