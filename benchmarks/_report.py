"""Helpers shared by the benchmark scripts: the machine summary and block replacement in a docs page."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch

HEADER = "# Results\n\nEvery number on this page is written by a script in `benchmarks/`; none is typed in by hand.\n"


def machine_summary() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    used = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pinned = "" if used == os.cpu_count() else f", run pinned to {used} of them"
    return (f"Machine: {cpu}, {os.cpu_count()} cores{pinned}, no GPU, torch using {torch.get_num_threads()} "
            f"thread(s); Python {platform.python_version()}, torch {torch.__version__}; "
            f"{datetime.date.today().isoformat()}.")


def replace_block(page: Path, name: str, text: str, header: str = HEADER) -> None:
    """Put ``text`` between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` in ``page``."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    old = page.read_text() if page.exists() else header
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    page.parent.mkdir(parents=True, exist_ok=True)
    tmp = page.with_suffix(".tmp")
    tmp.write_text(new)
    tmp.replace(page)
