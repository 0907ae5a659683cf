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

import contextlib
import fnmatch
import io
import json
import math
import os
import resource
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from metaloop import distributed
from metaloop.benchmarks import build_learner, get_benchmark, resolve_config
from metaloop.checkpoint import atomic_write_text, has_checkpoint, load_checkpoint, save_checkpoint
from metaloop.config import trained_options
from metaloop.errors import MetaloopError, MetaloopWarning
from metaloop.locking import LOCK, RunLock
from metaloop.plots import training_curve

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


#: What a run directory holds before its first checkpoint: a folder with only these may be trained again.
_BEFORE_CHECKPOINT = frozenset({CONFIG, METRICS, "plots", LOCK})


def _restartable(out: Path) -> bool:
    """A run that stopped before its first checkpoint (diverged, interrupted): nothing in it is worth keeping."""
    names = {p.name for p in out.iterdir() if not any(fnmatch.fnmatch(p.name, pattern) for pattern in _LEFTOVERS)}
    plots = out / "plots"
    return (CONFIG in names and not has_checkpoint(out) and names <= _BEFORE_CHECKPOINT
            and (not plots.is_dir() or all(p.suffix == ".png" for p in plots.iterdir())))


def _check_run_dir(out: Path, cfg: Mapping[str, Any], resume: bool) -> dict[str, Any] | None:
    """Refuse to overwrite another run; return the stored config when resuming one with a checkpoint.

    A folder whose run stopped before its first checkpoint is started again, by ``train`` or ``--resume``,
    with the new options (with a warning): it holds nothing to lose.
    """
    if out.exists() and not out.is_dir():
        raise MetaloopError(f"--out '{out}' exists and is not a directory")
    occupied = out.is_dir() and any(p.name != LOCK for p in out.iterdir())
    if not occupied:
        return None
    if _restartable(out):
        warnings.warn(f"RUN_DIR '{out}' holds a run that stopped before its first checkpoint; starting again",
                      MetaloopWarning, stacklevel=3)
        return None
    if not resume:
        what = "a metaloop run" if (out / CONFIG).exists() else "files"
        raise MetaloopError(f"RUN_DIR '{out}' already holds {what}; use --resume or another --out")
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


def check_out_dir(out: Path, what: str = "--out") -> None:
    """Refuse a run directory that is a file, lies under a file, or cannot be created or written."""
    if out.exists() and not out.is_dir():
        raise MetaloopError(f"{what} '{out}' exists and is not a directory")
    for parent in out.resolve().parents:
        if parent.exists():
            if not parent.is_dir():
                raise MetaloopError(f"{what} '{out}': '{parent}' is a file, not a folder")
            target = out if out.exists() else parent
            if not os.access(target, os.W_OK | os.X_OK):
                raise MetaloopError(f"{what} '{out}': folder '{target}' is not writable")
            return


#: The temp files of metaloop's atomic writes in a run directory (``.<name>.<random>.tmp``).
_LEFTOVERS = (".checkpoint-*.safetensors.*.tmp", ".checkpoint.json.*.tmp", f".{CONFIG}.*.tmp", f".{METRICS}.*.tmp")


def _remove_leftovers(out: Path) -> None:
    """Temp files of writes that a kill interrupted, in a run directory (it has a config.yaml): the folder is
    locked, so no other process is writing them."""
    if not (out / CONFIG).is_file():
        return
    for pattern in _LEFTOVERS:
        for leftover in out.glob(pattern):
            leftover.unlink(missing_ok=True)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``train``; its message says what the run directory holds now."""


def _kept(out: Path, iteration: int | None, *, resume: bool = True) -> str:
    """What the run directory holds now, for a message; ``iteration`` is the last checkpoint this call knows of
    (``None``: it looks for one written before)."""
    if iteration is None and has_checkpoint(out):
        try:
            iteration = int(json.loads((out / "checkpoint.json").read_text())["iteration"])
        except (OSError, ValueError, KeyError, TypeError):
            return f"'{out}' holds a checkpoint"
    if iteration is None:
        return f"no checkpoint was written, so a new `metaloop train --out {out}` may reuse the folder"
    return f"the checkpoint at iteration {iteration} in '{out}' is intact" + (": continue with --resume" if resume else "")


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
    before its first checkpoint, starts from the beginning. The folder is locked while training
    (:mod:`metaloop.locking`): a second trainer of the same folder is refused.
    """
    out = Path(out)
    cfg = resolve_config(algo, benchmark, config_file=config_file, overrides=overrides)
    check_out_dir(out)
    existed = out.exists()
    saved: list[int] = []  # iterations checkpointed so far (by this call or before it)
    place, device = distributed.init(cfg["device"])  # one process, or one of torchrun's (only the first writes)
    try:
        with RunLock(out) if place.main else contextlib.nullcontext():
            return _train(cfg, out, resume, progress, saved, place, device)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:
        raise TrainingInterrupted(f"interrupted; {_kept(out, saved[-1] if saved else None)}") from None
    finally:
        if place.main and not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # refused before anything was written: leave no empty folder behind


def _train(cfg: dict[str, Any], out: Path, resume: bool, progress: bool, saved: list[int],
           place: distributed.World, device: str) -> Path:
    main = place.main
    stored = _check_run_dir(out, cfg, resume)
    if main:
        _remove_leftovers(out)
    learner, bench = build_learner({**cfg, "device": device})
    distributed.check_limits(learner, place)
    if place.size > 1:
        learner.gradient_sync = distributed.sync_gradients
        if cfg["meta_batch_size"] < place.size and main:
            warnings.warn(f"{place.size} processes for a meta-batch of {cfg['meta_batch_size']} tasks: "
                          f"{place.size - cfg['meta_batch_size']} of them take no task at each step", MetaloopWarning,
                          stacklevel=3)
    options = bench.all_options()
    run = trained_options(cfg, options)
    tasks = bench.train_tasks(cfg)  # data errors surface before anything is written
    bench.check_splits(cfg)  # warns when test classes or examples are also training ones (the user's data)
    try:
        bench.test_tasks(cfg)  # and those of the test split, which evaluation needs after training
    except MetaloopError as exc:
        raise MetaloopError(f"the test split: {exc} (test tasks take shots + eval_queries examples per class; "
                            "eval_queries may be lowered, also later with `metaloop eval --set`)") from None
    optimizer = learner.make_optimizer(cfg["outer_lr"])
    start, elapsed, window, record = 0, 0.0, list[float](), {}
    if stored is not None and has_checkpoint(out):
        record = load_checkpoint(out, learner, optimizer, run=run, where=f"--resume of '{out}'")
        start, elapsed = int(record["iteration"]), float(record["elapsed_seconds"])
        saved.append(start)
        window = [float(v) for v in record.get("loss_window", [])]  # losses not yet in the log
        if start > cfg["iterations"]:  # checked before anything in RUN_DIR is rewritten
            raise MetaloopError(f"option 'iterations': {cfg['iterations']} is below the checkpoint's {start}")
        if main:
            _trim_metrics(out / METRICS, start)
    elif main:  # a fresh run, or one that stopped before its first checkpoint: nothing to keep
        _trim_metrics(out / METRICS, 0)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "plots").mkdir(exist_ok=True)
        atomic_write_text(out / CONFIG, yaml.safe_dump(cfg, sort_keys=False))

    n_iter, batch_size = cfg["iterations"], cfg["meta_batch_size"]
    first, last = distributed.share(batch_size, place)  # this process's part of each meta-batch
    learner.train()
    bar = tqdm(total=n_iter, initial=start, disable=not progress or not main,
               desc=f"{cfg['algo']} {cfg['benchmark']}", unit="it", dynamic_ncols=True)
    iteration = start
    t0 = time.perf_counter() - elapsed

    def checkpoint() -> None:
        if main:
            save_checkpoint(out, learner, optimizer, iteration=iteration, elapsed=time.perf_counter() - t0,
                            extra={"algo": cfg["algo"], "benchmark": cfg["benchmark"], "loss_window": window,
                                   **peak_memory(device, previous=record)}, run=run)
        saved.append(iteration)

    budget = cfg["time_budget"]
    if budget is not None and elapsed >= budget:
        n_iter = iteration  # the time budget was spent before this (resumed) call: nothing to do
    log_file = open(out / METRICS, "a") if main else contextlib.nullcontext(io.StringIO())
    with bar, _deferred_interrupt() as interrupted, log_file as log:
        while iteration < n_iter:
            start_task = iteration * batch_size
            batch = tasks.batch(start_task + first, last - first).to(device) if last > first else None
            learner.before_step(optimizer, iteration, n_iter)
            loss = learner.meta_step(batch, optimizer)
            if not math.isfinite(loss):
                raise MetaloopError(f"meta-training diverged: loss is {loss} at iteration {iteration + 1}; train a "
                                    "new run with a lower outer_lr or inner_lr "
                                    f"({_kept(out, saved[-1] if saved else None, resume=False)})")
            window.append(loss)
            iteration += 1
            bar.update(1)
            over_budget = budget is not None and time.perf_counter() - t0 >= budget
            over_budget, stop = distributed.agree([over_budget, interrupted()], place)  # every process, or none
            if iteration % cfg["log_every"] == 0 or iteration == n_iter or over_budget:
                mean = sum(window) / len(window)
                log.write(json.dumps({"iteration": iteration, "loss": mean,
                                      "time": round(time.perf_counter() - t0, 3)}) + "\n")
                log.flush()
                name, sign = learner.progress
                bar.set_postfix({name: f"{sign * mean:.4g}"})
                window.clear()
            if iteration % cfg["checkpoint_every"] == 0 or iteration == n_iter or over_budget:
                checkpoint()
            if over_budget:
                break
            if stop:
                checkpoint()
                raise TrainingInterrupted(f"interrupted; {_kept(out, iteration)}")
    if main:
        training_curve(out / METRICS, out / "plots" / "training_curve.png",
                       title=f"{cfg['algo']} on {cfg['benchmark']}")
    return out
