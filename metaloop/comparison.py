"""``metaloop compare``: train several algorithms on one benchmark under the same budget, evaluate them
on the same test tasks, and write one table (Markdown and CSV) and one plot.

Each algorithm trains in its own process (``metaloop train … --resume``), so that its peak memory is
its own and a finished run in ``OUT/<algo>`` is reused rather than retrained. Evaluation then runs here,
on the benchmark's fixed test tasks (``eval_seed``), at each run's ``test_inner_steps``; its row is kept in
``OUT/<algo>/compare-row.json`` and reused while the checkpoint, the config and ``episodes`` stay the same.

Columns: the metric (mean ± 95% CI), meta-training wall time, adaptation latency per task (adapt on
one task's support set and predict its queries, median over 10 tasks), peak memory of the training
process (RSS, and CUDA on a GPU) and the number of meta-parameters.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from metaloop import evaluation, plots
from metaloop.algorithms import ALGORITHM_OPTIONS, algorithm, check_reads
from metaloop.benchmarks import check_algorithm, get_benchmark, resolve_config
from metaloop.checkpoint import atomic_write_text
from metaloop.config import MAX_ITERATIONS, MAX_SECONDS, WHY_ITERATIONS, parse_set
from metaloop.errors import MetaloopError
from metaloop.locking import make_out_dir
from metaloop.training import check_out_dir, read_config

_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(it|s|m|h)?\s*$")


def own(algo: str, item: str, environment: bool = False) -> bool:
    """Is the ``--set key=value`` ``item`` for ``algo``: not an algorithm option, or one that it reads?"""
    key = item.partition("=")[0].strip()
    return key not in ALGORITHM_OPTIONS or key in algorithm(algo, environment).reads


def parse_budget(text: str) -> dict[str, Any]:
    """``"2000"`` or ``"2000it"`` → ``{"iterations": 2000}``; ``"90s"``, ``"15m"``, ``"1h"`` → a time budget."""
    match = _BUDGET.match(text)
    if not match:
        raise MetaloopError(f"--budget {text!r}: expected iterations (2000, 2000it) or time (90s, 15m, 1h)")
    value, unit = float(match.group(1)), match.group(2) or "it"
    if value <= 0:
        raise MetaloopError(f"--budget {text!r}: must be positive")
    if unit == "it":
        if not value.is_integer():
            raise MetaloopError(f"--budget {text!r}: iterations must be a whole number")
        if value > MAX_ITERATIONS:
            raise MetaloopError(f"--budget {text!r}: at most {MAX_ITERATIONS:,} iterations ({WHY_ITERATIONS})")
        return {"iterations": int(value)}
    seconds = value * {"s": 1, "m": 60, "h": 3600}[unit]
    if seconds > MAX_SECONDS:
        raise MetaloopError(f"--budget {text!r}: at most a year per algorithm")
    return {"time_budget": seconds}


def _train(algo: str, benchmark: str, run: Path, sets: Sequence[str], config_file: str | None,
           progress: bool, nproc: int = 1) -> str | None:
    """Run ``metaloop train`` in a child process (``nproc`` processes); return its last error line, or None."""
    cmd = [sys.executable, "-m", "metaloop", "train", "--algo", algo, "--benchmark", benchmark,
           "--out", str(run), "--resume", "--nproc", str(nproc)]
    if config_file is not None:
        cmd += ["--config", str(config_file)]
    for item in sets:
        cmd += ["--set", item]
    if not progress:
        cmd.append("--quiet")
    env = {**os.environ, PARENT: str(os.getpid())}
    # Its own session: a Ctrl-C at the terminal reaches compare alone, which then interrupts the trainer once
    # (it checkpoints and exits); a second interrupt would stop it at once, without a checkpoint.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    assert proc.stderr is not None
    tail = ""
    try:
        for chunk in iter(lambda: proc.stderr.read(256), ""):
            if progress:
                sys.stderr.write(chunk)
                sys.stderr.flush()
            tail = (tail + chunk)[-4000:]
        code = proc.wait()
    finally:  # compare stopped (Ctrl-C, an error): its trainer stops too, with a checkpoint
        _stop(proc)
    if code == 0:
        return None
    lines = [line for line in re.split(r"[\r\n]", tail) if line.strip()]
    return lines[-1].removeprefix("metaloop: error: ") if lines else f"exit code {code}"


#: The environment variable that tells a ``metaloop train`` child the process id of its ``compare``.
PARENT = "METALOOP_PARENT_PID"


def _stop(proc: subprocess.Popen, grace: float = 60.0) -> None:
    """Stop a trainer that is still running: SIGINT (it checkpoints and exits), then SIGKILL after ``grace``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def exit_with_parent(interval: float = 0.5, grace: float = 60.0) -> None:
    """In a ``metaloop train`` started by ``compare``: stop as a Ctrl-C would (a checkpoint, then exit) when
    the ``compare`` process is gone, however it ended (killed, crashed), so that no trainer runs on orphaned.
    A second interrupt follows after ``grace`` seconds if the first did not stop it."""
    if not os.environ.get(PARENT, "").isdigit():
        return
    pid = os.getppid()  # the process that started this one (compare, or a launcher in between that waits for it)

    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(grace)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="metaloop-parent-watch", daemon=True).start()


def compare(
    benchmark: str,
    algos: Iterable[str],
    out: str | Path,
    *,
    budget: str | None = None,
    overrides: Iterable[str] = (),
    config_file: str | None = None,
    episodes: int | None = None,
    progress: bool = True,
    nproc: int = 1,
) -> list[dict[str, Any]]:
    """Train (or reuse) and evaluate each algorithm; write ``compare.md``, ``compare.csv``,
    ``compare.json`` and ``compare.png`` into ``out``; return the rows."""
    algos = list(dict.fromkeys(algos))
    if not algos:
        raise MetaloopError("--algos: give at least one algorithm")
    bench = get_benchmark(benchmark)
    for algo in algos:
        check_algorithm(algo, bench)
    sets = list(overrides)
    parse_set(sets)  # malformed --set fails here, before any training
    if budget is not None:
        sets += [f"{k}={v}" for k, v in parse_budget(budget).items()]
    given = parse_set(sets)
    rl = bench.environment is not None
    for key in given:  # an algorithm option is for the algorithms that read it: refused if none of them does
        if key in ALGORITHM_OPTIONS and not any(key in algorithm(a, rl).reads for a in algos):
            check_reads(algos[0], [key], "--set", environment=rl)
    own_sets = {algo: [s for s in sets if own(algo, s, rl)] for algo in algos}
    for algo in algos:  # every option of every run checked here, before any training (one line, exit 2)
        resolve_config(algo, benchmark, config_file=config_file, overrides=own_sets[algo])
    out = Path(out)
    check_out_dir(out)
    make_out_dir(out)
    rows: list[dict[str, Any]] = []
    for algo in algos:
        run = out / algo
        row: dict[str, Any] = {"algo": algo, "run": str(run)}
        error = _train(algo, benchmark, run, own_sets[algo], config_file, progress, nproc)
        if error is not None:
            row["error"] = error
            rows.append(row)
            continue
        record = json.loads((run / "checkpoint.json").read_text())
        cached = _cached_row(run, record, episodes)
        if cached is not None:
            rows.append({**cached, **row})
            continue
        learner, _, cfg = evaluation.load_learner(run)
        steps = (cfg["test_inner_steps"] or cfg["inner_steps"]) if learner.has_inner_loop else 0
        tried = sorted({steps, *cfg["eval_steps"]}) if learner.has_inner_loop else [0]
        result = evaluation.evaluate_learner(learner, bench, cfg, episodes=episodes or cfg["eval_episodes"], steps=tried)
        chosen, note = choose_steps(result["steps"], steps, bench.higher_is_better)
        row.update(
            metric=bench.metric,
            steps=chosen,
            mean=result["steps"][str(chosen)]["mean"],
            ci95=result["steps"][str(chosen)]["ci95"],
            note=note,
            episodes=result["episodes"],
            iterations=record["iteration"],
            train_seconds=record["elapsed_seconds"],
            latency_ms=evaluation.adaptation_latency(learner, bench, cfg, steps=chosen),
            peak_rss_mb=record.get("peak_rss_mb"),
            peak_cuda_mb=record.get("peak_cuda_mb"),
            parameters=sum(p.numel() for p in learner.parameters() if p.requires_grad),  # meta-learned ones
        )
        atomic_write_text(run / ROW_CACHE, json.dumps({"key": _row_key(run, record, episodes), "row": row}, indent=1))
        rows.append(row)
    _write(out, bench.name, bench.metric, rows)
    plotted = [r for r in rows if r.get("mean") is not None]
    missing = [f"{r['algo']} ({_why_missing(r)})" for r in rows if r.get("mean") is None]
    plots.metric_vs_time(plotted, out / "compare.png", metric=bench.metric, title=bench.name,
                   footnote="not plotted: " + "; ".join(missing) if missing else "")
    return rows


def choose_steps(summary: dict[str, dict[str, float | None]], steps: int, higher_is_better: bool
                 ) -> tuple[int, str]:
    """The step count to report: the run's own (``test_inner_steps``) when its metric is finite; else the best
    step count with a finite metric, and a note saying so (Meta-SGD's learned step sizes, say, may diverge over
    more steps than it was meta-trained for). ``(steps, "")`` when every step count diverged."""
    if summary[str(steps)]["mean"] is not None:
        return steps, ""
    finite = {int(s): v["mean"] for s, v in summary.items() if v["mean"] is not None}
    tried = ", ".join(summary)
    if not finite:
        return steps, f"diverged at every step count tried ({tried})"
    pick = max if higher_is_better else min
    best = pick(finite, key=lambda s: finite[s])
    return best, f"diverged at its {steps} test steps; best finite of {tried}: {best}"


def _why_missing(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"failed: {row['error']}"
    return row.get("note") or "diverged"


#: A run's evaluated row, reused while its checkpoint, its config and the requested episodes are the same.
ROW_CACHE = "compare-row.json"


def config_digest(run: Path) -> str:
    """A digest of a run's config that options at their defaults leave out: an option added to metaloop
    after the run (which ``train --resume`` then writes into its config.yaml at its default) changes neither
    the run nor its digest, while any value that differs from a default does."""
    cfg = read_config(run)
    defaults = {k: o.default for k, o in get_benchmark(cfg["benchmark"]).all_options().items()}
    kept = {k: v for k, v in cfg.items() if k not in defaults or v != defaults[k]}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


#: Bumped when a row's fields change, so that rows cached by an older metaloop are evaluated again.
ROW_FORMAT = 3


def _row_key(run: Path, record: dict[str, Any], episodes: int | None) -> list[Any]:
    return [record.get("sha256"), config_digest(run), episodes, ROW_FORMAT]


def _cached_row(run: Path, record: dict[str, Any], episodes: int | None) -> dict[str, Any] | None:
    try:
        cached = json.loads((run / ROW_CACHE).read_text())
        if cached.get("key") == _row_key(run, record, episodes):
            return cached["row"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _fmt(value: Any, spec: str, unit: str) -> str:
    return "–" if value is None else f"{format(value, spec)} {unit}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def format_markdown(benchmark: str, metric: str, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"| {benchmark} | {metric} (mean ± 95% CI) | test inner steps | meta-training time | iterations "
        "| adaptation latency per task | peak RSS | peak CUDA | meta-parameters |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['algo']} | failed: {r['error'].replace('|', '/')} | | | | | | | |")
            continue
        value = r.get("note") or "diverged" if r["mean"] is None else f"{r['mean']:.3f} ± {r['ci95']:.3f}"
        if r["mean"] is not None and r.get("note"):
            value += f" ({r['note']})"
        lines.append(
            f"| {r['algo']} | {value} | {r['steps']} | {_duration(r['train_seconds'])} | {r['iterations']} "
            f"| {r['latency_ms']:.1f} ms | {_fmt(r['peak_rss_mb'], '.0f', 'MB')} | {_fmt(r['peak_cuda_mb'], '.0f', 'MB')} "
            f"| {r['parameters']:,} |"
        )
    return "\n".join(lines) + "\n"


def _write(out: Path, benchmark: str, metric: str, rows: list[dict[str, Any]]) -> None:
    fields = ["algo", "metric", "mean", "ci95", "episodes", "steps", "iterations", "train_seconds", "latency_ms",
              "peak_rss_mb", "peak_cuda_mb", "parameters", "note", "error", "run"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "compare.csv", buffer.getvalue())
    atomic_write_text(out / "compare.md", format_markdown(benchmark, metric, rows))
    atomic_write_text(out / "compare.json", json.dumps(rows, indent=1))
