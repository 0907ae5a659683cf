"""The user's tables: a CSV file with a header row, or JSON lines (one object per line).

Every file a user hands metaloop row by row goes through :func:`read_table`: texts for ``text:FILE``
benchmarks, the support and query files of ``metaloop adapt``, image CSVs and mini-ImageNet's split
CSVs. So every such file is read the same way (UTF-8, a spreadsheet's byte-order mark ignored, blank
lines skipped), and every mistake in one is reported the same way: one line that names the file, the
line (``file:line: …``, as compilers do) and the column.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaloop.errors import MetaloopError

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
SUFFIXES = (".csv", *JSON_SUFFIXES)


@dataclass(frozen=True)
class Table:
    """The rows of one file, each with the line it starts on.

    Attributes:
        path: the file.
        is_json: JSON lines (fields may differ from row to row) rather than CSV.
        fields: the CSV header, or every JSON key in the order first seen.
        rows: ``(line number, row)`` pairs; a CSV row maps each header column to its text.
    """

    path: Path
    is_json: bool
    fields: tuple[str, ...]
    rows: tuple[tuple[int, dict[str, Any]], ...]

    def has(self, name: str) -> bool:
        """Whether some row has the column (or JSON field) ``name``."""
        return name in self.fields

    def column(self, name: str, *, kind: str = "value", what: str | None = None, integers: bool = False,
               strip: bool = False) -> list[str]:
        """The non-empty values of column ``name``, as strings.

        Args:
            name: the column (CSV) or field (JSON).
            kind: what a value is, for the error on an empty one ("text", "label", …).
            what: what the column is for, added to the error on a missing column.
            integers: JSON values may also be integers (labels: ``3`` and ``"3"`` are the same).
            strip: strip white space off the values (labels, paths), else keep them as written (texts).

        Raises:
            MetaloopError: no row has the column (listing the columns there are), a JSON row lacks it or
                holds another type, a value is empty (naming the line), or the file has no rows.
        """
        unit = "field" if self.is_json else "column"
        if name not in self.fields:
            have = ", ".join(self.fields) if self.fields else "none: the file is empty"
            purpose = f"{what}; " if what else ""
            raise MetaloopError(f"{self.path}: no {unit} {name!r} ({purpose}{unit}s: {have})")
        if not self.rows:
            raise MetaloopError(f"{self.path}: no rows" + ("" if self.is_json else " after the header"))
        values = []
        for number, row in self.rows:
            where = f"{self.path}:{number}"
            if name not in row:
                raise MetaloopError(f"{where}: no field {name!r} (fields: {', '.join(row) or 'none'})")
            value = row[name]
            if integers and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                allowed = "a string or an integer" if integers else "a string"
                raise MetaloopError(f"{where}: {unit} {name!r} must be {allowed}, not {type(value).__name__}")
            if not value.strip():
                raise MetaloopError(f"{where}: empty {kind} in {unit} {name!r}")
            values.append(value.strip() if strip else value)
        return values


def read_table(path: str | os.PathLike[str], *, what: str = "file") -> Table:
    """Read a ``.csv`` file (with a header row) or JSON lines (``.jsonl``, ``.json``, ``.ndjson``).

    Args:
        path: the file.
        what: what the file is, for the error when it does not exist ("text file", "CSV file", …).

    Raises:
        MetaloopError: the file is missing, of another type or not UTF-8; a CSV row has more fields than
            the header; a JSON line is not a JSON object. Each names the file (and line).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MetaloopError(f"{what} {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise MetaloopError(f"{path}: unknown file type {suffix or '(no suffix)'!r}; expected .csv (with a header "
                            "row) or JSON lines (.jsonl, .json, .ndjson)")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a spreadsheet's byte-order mark is not a column
    except UnicodeDecodeError as e:
        raise MetaloopError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    rows: list[tuple[int, dict[str, Any]]] = []
    if suffix in JSON_SUFFIXES:
        fields: dict[str, None] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MetaloopError(f"{path}:{number}: invalid JSON ({e.msg}, column {e.colno}); expected one "
                                    "JSON object per line") from None
            if not isinstance(row, dict):
                raise MetaloopError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            fields.update(dict.fromkeys(row))
            rows.append((number, row))
        return Table(path, True, tuple(fields), tuple(rows))
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise MetaloopError(f"{path}:{line}: contains a NUL byte (a binary file, or UTF-16 text?); expected UTF-8 text")
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD))  # a long text is a text, not an error
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = tuple(reader.fieldnames or ())
        twice = sorted({c for c in header if header.count(c) > 1})
        if twice:
            raise MetaloopError(f"{path}:1: column {twice[0]!r} appears twice in the header")
        for row in reader:  # DictReader skips blank lines
            if None in row:
                raise MetaloopError(f"{path}:{reader.line_num}: more fields than the header has columns "
                                    "(quote a text that contains commas)")
            rows.append((reader.line_num, {k: v if v is not None else "" for k, v in row.items()}))
    except csv.Error as e:
        raise MetaloopError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    return Table(path, False, header, tuple(rows))


#: The longest CSV field read (Python's csv module stops at 131,072 characters by default).
MAX_FIELD = 2**30


def label_order(names: Iterable[str]) -> list[str]:
    """The distinct labels in class-id order: numerically when every label is an integer ("2" before
    "10"), else sorted as strings."""
    unique = set(names)
    if all(re.fullmatch(r"-?\d+", n) for n in unique):
        return sorted(unique, key=lambda n: (int(n), n))
    return sorted(unique)
