"""Rerun a results block from scratch and, with --check, compare its numbers with the page's.

    python scripts/reproduce.py sinusoid                 # rerun the block's command into a fresh folder
    python scripts/reproduce.py sinusoid --check         # ... and compare each mean with the page's
    python scripts/reproduce.py lm --page docs/results.md --keep /tmp/lm-rerun

Every block of docs/results*.md records the command that wrote it (`Command: ...`). This script runs that
command again with fresh `--runs` and `--results` (a temporary folder, or `--keep DIR`), so nothing is reused
and the page is not touched, and prints the new block. With `--check` each `mean ± ci` of the new block is
compared, in order, with the page's: they agree when they differ by at most the sum of their two 95% half-widths
(their intervals overlap). The exit code is 1 when a number disagrees or the tables differ in shape. Blocks
written by a shell script, or on another machine (a GPU), say so and are not rerun.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The scripts folder's name before it was renamed (the commands of older blocks name it).
OLD_FOLDER = "benchmarks/"
CELL = re.compile(r"(-?\d+(?:\.\d+)?) ± (\d+(?:\.\d+)?)")


def find_block(name: str, pages: list[Path]) -> tuple[Path, str]:
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    for page in pages:
        text = page.read_text() if page.exists() else ""
        if begin in text and end in text:
            return page, text[text.index(begin) + len(begin): text.index(end)]
    known = sorted({m for p in pages if p.exists() for m in re.findall(r"<!-- BEGIN (\S+) -->", p.read_text())})
    raise SystemExit(f"reproduce: no block {name!r} (known: {', '.join(known)})")


def command_of(block: str) -> list[str]:
    match = re.search(r"Command: `([^`]+)`", block)
    if match is None:
        raise SystemExit("reproduce: the block records no `Command: ...`")
    argv = shlex.split(match.group(1))
    if argv[0] != "python":
        raise SystemExit(f"reproduce: the block was written by `{match.group(1)}`, not a Python benchmark script: "
                         "run that command (on the machine the block names)")
    if len(argv) > 1 and argv[1].startswith(OLD_FOLDER) and not (ROOT / argv[1]).exists():
        argv[1] = "scripts/" + argv[1][len(OLD_FOLDER):]  # recorded before the scripts folder was renamed
    return [sys.executable, *argv[1:]]


def cells(block: str) -> list[tuple[float, float]]:
    return [(float(m), float(c)) for m, c in CELL.findall(block)]


def compare(old: str, new: str) -> list[str]:
    """What disagrees between two blocks' ``mean ± ci`` cells (empty: all agree)."""
    a, b = cells(old), cells(new)
    if len(a) != len(b):
        return [f"the page has {len(a)} numbers with a CI, the rerun {len(b)}"]
    return [f"number {i + 1}: {x:g} ± {cx:g} on the page, {y:g} ± {cy:g} now" for i, ((x, cx), (y, cy))
            in enumerate(zip(a, b)) if abs(x - y) > cx + cy]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("block")
    parser.add_argument("--check", action="store_true", help="compare the new numbers with the page's")
    parser.add_argument("--page", type=Path, action="append", help="results page(s) (default docs/results*.md)")
    parser.add_argument("--keep", type=Path, help="folder for the new runs and block (default: a temporary one)")
    args = parser.parse_args()
    pages = args.page or sorted((ROOT / "docs").glob("results*.md"))
    page, block = find_block(args.block, pages)
    argv = command_of(block)
    folder = args.keep or Path(tempfile.mkdtemp(prefix=f"reproduce-{args.block}-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = folder / "results.md"
    argv += ["--runs", str(folder / "runs"), "--results", str(results)]
    print(f"reproduce: {page.name} block {args.block}: {shlex.join(argv[1:])}", flush=True)
    done = subprocess.run(argv, cwd=ROOT)
    if done.returncode != 0:
        print(f"reproduce: the command failed (exit {done.returncode})", file=sys.stderr)
        return done.returncode
    _, new = find_block(args.block, [results])
    print(new.strip())
    if not args.check:
        return 0
    problems = compare(block, new)
    for problem in problems:
        print(f"reproduce: disagrees: {problem}", file=sys.stderr)
    print(f"reproduce: {len(cells(block)) - len(problems)} of {len(cells(block))} numbers agree within their CIs")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
