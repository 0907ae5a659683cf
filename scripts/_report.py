"""Helpers shared by the benchmark scripts: their common options, the command line and machine summary
that every results block records, table cells, and block replacement in a docs page."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import json
import shlex
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
#: The scripts read the data beside this repository (and their runs inherit it) unless METALOOP_DATA says otherwise.
SHARED_DATA = ROOT.parent / "shared" / "data"
if SHARED_DATA.is_dir():
    os.environ.setdefault("METALOOP_DATA", str(SHARED_DATA))
#: A benchmark's subprocesses: one thread each (they run ``--jobs`` at a time), and never a model hub.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
HEADER = "# Results\n\nEvery number on this page is written by a script in `scripts/`; none is typed in by hand.\n"


def benchmark_parser(doc: str | None, *, runs: str, algos: list[str] | None = None, budget: str | None = None,
                     episodes: int | None = None, sets: bool = True) -> argparse.ArgumentParser:
    """The options every benchmark script shares: ``--runs`` (default ``runs/<runs>``) and ``--results``
    (default ``docs/results.md``), and where given ``--algos``, ``--budget``, ``--episodes`` and ``--set``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if algos is not None:
        parser.add_argument("--algos", nargs="+", default=algos)
    if budget is not None:
        parser.add_argument("--budget", default=budget, help="meta-training budget per run (compare --budget)")
    if episodes is not None:
        parser.add_argument("--episodes", type=int, default=episodes, help="test episodes per evaluation")
    if sets:
        parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                            help="extra config override for every run")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / runs, help="run directories (reused)")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md", help="page to write")
    return parser


def command_line() -> str:
    """The command that is running, as it can be pasted into a shell (arguments quoted where needed); a
    wrapper script that runs benchmark scripts sets ``METALOOP_BENCH_COMMAND`` to its own command line."""
    return os.environ.get("METALOOP_BENCH_COMMAND") or "python " + shlex.join(
        [f"scripts/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def extra_settings(sets: list[str]) -> str:
    """The sentence that records the ``--set`` overrides of a benchmark (empty without any)."""
    return f" Extra settings: `{' '.join(sets)}`." if sets else ""


def mean_ci(value: dict, digits: int = 2) -> str:
    """``mean ± ci95`` of an evaluation, or "diverged" when the mean is not finite."""
    if value["mean"] is None:
        return "diverged"
    return f"{value['mean']:.{digits}f} ± {value['ci95']:.{digits}f}"


def memory_cell(row: dict) -> str:
    """A compare row's peak memory: the process's peak RSS, and its peak CUDA memory where it used a GPU."""
    cell = f"{row['peak_rss_mb']:.0f} MB"
    if row.get("peak_cuda_mb") is not None:
        cell += f" (CUDA {row['peak_cuda_mb']:.0f} MB)"
    return cell


def machine_summary() -> str:
    """The machine sentence of a results block: CPU model and cores, the GPU if there is one, threads,
    Python and torch versions, and the date."""
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
    gpu = f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return (f"Machine: {cpu}, {os.cpu_count()} cores{pinned}, {gpu}, torch using {torch.get_num_threads()} "
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


def last_line(text: str) -> str:
    """The last non-empty line of a subprocess's stderr, without the CLI's prefix."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("metaloop: error: ") if lines else "no message"


def choose_lr(bench: str, run: Path | str | None, factors: list[float], sets: list[str],
              episodes: int | None = None) -> dict:
    """``metaloop.tuning.choose_test_lr``'s answer in a subprocess with one thread (``run`` None: the untrained
    model): ``{"test_inner_lr", "validation"}``, or ``{"failed": the error line}``."""
    code = ("import json, sys\n"
            "from metaloop.errors import MetaloopError\n"
            "from metaloop.tuning import choose_test_lr\n"
            "run, episodes = None if sys.argv[2] == '-' else sys.argv[2], json.loads(sys.argv[4])\n"
            "try:\n"
            "    print(json.dumps(choose_test_lr(sys.argv[1], run, json.loads(sys.argv[3]), overrides=sys.argv[5:], "
            "**({} if episodes is None else {'episodes': episodes}))))\n"
            "except MetaloopError as exc:\n"
            "    sys.exit(f'metaloop: error: {exc}')\n")
    done = subprocess.run([sys.executable, "-c", code, bench, str(run or "-"), json.dumps(factors),
                           json.dumps(episodes), *sets], env=ONE_THREAD, capture_output=True, text=True)
    if done.returncode != 0:
        return {"failed": "test step size: " + last_line(done.stderr)}
    return json.loads(done.stdout)
