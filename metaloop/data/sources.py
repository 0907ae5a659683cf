"""The built-in text sources by name, and the ``train_sources``/``test_sources`` options that list them.

An option names one source or several, comma-separated (``"clinc150,hwu64,huffpost"``); several are one mix
(:func:`~metaloop.data.texts.mixed`) whose classes are the union, prefixed by their source.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from metaloop.data.clinc150 import clinc150_split
from metaloop.data.fewrel import fewrel_split
from metaloop.data.huffpost import huffpost_split
from metaloop.data.hwu64 import hwu64_split
from metaloop.data.texts import LabelledTexts, mixed
from metaloop.errors import MetaloopError

TEXT_SOURCES: dict[str, Callable[..., LabelledTexts]] = {
    "clinc150": clinc150_split,
    "hwu64": hwu64_split,
    "huffpost": huffpost_split,
    "fewrel": fewrel_split,
}
"""The text sources by name, each called as ``loader(split, root=None)``."""

Root = str | os.PathLike[str] | None


def source_names(text: str, option: str) -> list[str]:
    """The source names of an option's value, each checked (the error names ``option``)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise MetaloopError(f"option '{option}': give at least one source")
    for name in names:
        if name not in TEXT_SOURCES:
            raise MetaloopError(f"option '{option}': unknown source {name!r} (known: {', '.join(TEXT_SOURCES)})")
    return names


def text_sources(text: str, split: str, root: Root, option: str) -> LabelledTexts:
    """One split of the sources an option names: the source itself if it names one, else their mix."""
    names = source_names(text, option)
    if len(names) == 1:
        return TEXT_SOURCES[names[0]](split, root)
    return mixed([TEXT_SOURCES[n](split, root) for n in names], names)


__all__ = ["TEXT_SOURCES", "source_names", "text_sources"]
