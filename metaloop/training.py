"""Meta-training: the outer loop, the run directory, checkpoints and resume.

A run directory holds::

    config.yaml          the resolved config (every option, after presets, file and --set)
    metrics.jsonl        one line per `log_every` iterations: iteration, mean loss, elapsed seconds
    checkpoint.json      + checkpoint-<iteration>.safetensors (see metaloop.checkpoint)
    plots/               training curve; evaluation adds the adaptation curve and benchmark plots
    eval.json            written by `metaloop eval`

Determinism: the tasks of iteration ``i`` are tasks ``i·B … i·B + B − 1`` of a stream seeded by the
config's ``seed``, and the initialization depends only on that seed. Since the checkpoint restores the
weights and the optimizer state exactly, a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from metaloop.benchmarks import build_learner, get_benchmark, resolve_config
from metaloop.checkpoint import atomic_write_text, has_checkpoint, load_checkpoint, save_checkpoint
from metaloop.errors import MetaloopError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved config of a run directory."""
    path = Path(run_dir) / CONFIG
    if not Path(run_dir).is_dir():
        raise MetaloopError(f"run directory '{run_dir}' does not exist")
    if not path.exists():
        raise MetaloopError(f"'{run_dir}' is not a metaloop run (missing {CONFIG})")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise MetaloopError(f"config file '{path}': malformed YAML") from None
    if not isinstance(cfg, dict) or "algo" not in cfg or "benchmark" not in cfg:
        raise MetaloopError(f"config file '{path}': not a metaloop run config")
    return cfg


def _check_run_dir(out: Path, cfg: Mapping[str, Any], resume: bool) -> dict[str, Any] | None:
    """Refuse to overwrite another run; return the stored config when resuming."""
    if out.exists() and not out.is_dir():
        raise MetaloopError(f"--out '{out}' exists and is not a directory")
    occupied = out.is_dir() and any(out.iterdir())
    if not resume:
        if occupied:
            what = "a metaloop run" if (out / CONFIG).exists() else "files"
            raise MetaloopError(f"RUN_DIR '{out}' already holds {what}; use --resume or another --out")
        return None
    if not occupied:
        return None  # nothing to resume: start fresh
    stored = read_config(out)
    options = get_benchmark(cfg["benchmark"]).all_options()
    defaults = {k: o.default for k, o in options.items()}
    for key in sorted(set(stored) | set(cfg)):
        if key in options and options[key].resumable:
            continue
        if key not in stored and key in defaults and cfg.get(key) == defaults[key]:
            continue  # an option newer than the run, at its default: the run is unchanged
        if stored.get(key) != cfg.get(key):
            raise MetaloopError(
                f"RUN_DIR '{out}' holds a different run: '{key}' is {stored.get(key)!r} there, "
                f"{cfg.get(key)!r} here"
            )
    return stored


def _trim_metrics(path: Path, last_iteration: int) -> None:
    """Drop log lines written after the checkpoint we resume from."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["iteration"] <= last_iteration:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def peak_memory(device: str, previous: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Peak resident memory of this process (and peak CUDA memory on a GPU) in MB, over the whole run.

    A resumed run keeps the larger of its own peak and the one recorded before.
    """
    previous = previous or {}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out = {"peak_rss_mb": max(rss, float(previous.get("peak_rss_mb", 0.0)))}
    if torch.device(device).type == "cuda":
        cuda = torch.cuda.max_memory_allocated(device) / 2**20
        out["peak_cuda_mb"] = max(cuda, float(previous.get("peak_cuda_mb", 0.0)))
    return out


@contextmanager
def _deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Hold off Ctrl-C until the current meta-step is complete.

    The first SIGINT only sets a flag; the training loop checks it between iterations, writes a
    checkpoint of a consistent state and raises ``KeyboardInterrupt``. A second SIGINT interrupts at
    once, without a checkpoint (the last periodic one stays intact).
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    hits: list[int] = []
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if hits:
            raise KeyboardInterrupt
        hits.append(signum)

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(hits)
    finally:
        signal.signal(signal.SIGINT, previous)


def train(
    algo: str | None,
    benchmark: str | None,
    out: str | Path,
    *,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Meta-train ``algo`` on ``benchmark`` into the run directory ``out``; return its path.

    ``overrides`` is a mapping of options or ``key=value`` strings. With ``resume=True`` an existing
    run continues from its last checkpoint (its options must match, except those that do not change
    the result, such as ``iterations`` and ``device``); an empty or missing ``out``, or a run that stopped
    before its first checkpoint, starts from the beginning.
    """
    out = Path(out)
    cfg = resolve_config(algo, benchmark, config_file=config_file, overrides=overrides)
    stored = _check_run_dir(out, cfg, resume)
    learner, bench = build_learner(cfg)
    tasks = bench.train_tasks(cfg)  # data errors surface before anything is written
    optimizer = learner.make_optimizer(cfg["outer_lr"])
    start, elapsed, window, record = 0, 0.0, list[float](), {}
    if stored is not None and has_checkpoint(out):
        record = load_checkpoint(out, learner, optimizer)
        start, elapsed = int(record["iteration"]), float(record["elapsed_seconds"])
        window = [float(v) for v in record.get("loss_window", [])]  # losses not yet in the log
        if start > cfg["iterations"]:  # checked before anything in RUN_DIR is rewritten
            raise MetaloopError(f"option 'iterations': {cfg['iterations']} is below the checkpoint's {start}")
        _trim_metrics(out / METRICS, start)
    elif stored is not None:  # stopped before its first checkpoint: nothing to keep, start again
        _trim_metrics(out / METRICS, 0)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    atomic_write_text(out / CONFIG, yaml.safe_dump(cfg, sort_keys=False))

    n_iter, batch_size, device = cfg["iterations"], cfg["meta_batch_size"], cfg["device"]
    learner.train()
    bar = tqdm(total=n_iter, initial=start, disable=not progress, desc=f"{cfg['algo']} {cfg['benchmark']}",
               unit="it", dynamic_ncols=True)
    iteration = start
    t0 = time.perf_counter() - elapsed

    def checkpoint() -> None:
        save_checkpoint(out, learner, optimizer, iteration=iteration, elapsed=time.perf_counter() - t0,
                        extra={"algo": cfg["algo"], "benchmark": cfg["benchmark"], "loss_window": window,
                               **peak_memory(device, previous=record)})

    budget = cfg["time_budget"]
    if budget is not None and elapsed >= budget:
        n_iter = iteration  # the time budget was spent before this (resumed) call: nothing to do
    with bar, _deferred_interrupt() as interrupted, open(out / METRICS, "a") as log:
        while iteration < n_iter:
            batch = tasks.batch(iteration * batch_size, batch_size).to(device)
            learner.before_step(optimizer, iteration, n_iter)
            loss = learner.meta_step(batch, optimizer)
            if not math.isfinite(loss):
                raise MetaloopError(
                    f"meta-training diverged: loss is {loss} at iteration {iteration + 1}; lower outer_lr or "
                    f"inner_lr (the last checkpoint in '{out}' is intact)"
                )
            window.append(loss)
            iteration += 1
            bar.update(1)
            over_budget = budget is not None and time.perf_counter() - t0 >= budget
            if iteration % cfg["log_every"] == 0 or iteration == n_iter or over_budget:
                mean = sum(window) / len(window)
                log.write(json.dumps({"iteration": iteration, "loss": mean,
                                      "time": round(time.perf_counter() - t0, 3)}) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{mean:.4g}")
                window.clear()
            if iteration % cfg["checkpoint_every"] == 0 or iteration == n_iter or over_budget:
                checkpoint()
            if over_budget:
                break
            if interrupted():
                checkpoint()
                raise KeyboardInterrupt
    from metaloop.plots import training_curve

    training_curve(out / METRICS, out / "plots" / "training_curve.png", title=f"{cfg['algo']} on {cfg['benchmark']}")
    return out
