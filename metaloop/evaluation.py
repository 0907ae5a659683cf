"""Evaluation on fixed test tasks: the metric after each number of inner steps, with a 95% CI.

Every run of a benchmark is tested on the same tasks: they depend only on the benchmark's options and
``eval_seed``, not on the training seed or the algorithm. The 95% confidence interval is
``1.96 · s / √n`` over the ``n`` test tasks (``s``: sample standard deviation), as in MAML's code.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from metaloop.algorithms import check_reads
from metaloop.algorithms.base import MetaLearner
from metaloop import distributed
from metaloop.benchmarks import Benchmark, build_learner, check_device, get_benchmark
from metaloop.checkpoint import atomic_write_text, load_checkpoint
from metaloop.config import MAX_EPISODES, MAX_STEPS, WHY_EPISODES, WHY_STEPS, resolve, trained_options
from metaloop.errors import MetaloopError
from metaloop.plots import adaptation_curve, benchmark_plot
from metaloop.training import CONFIG, read_config

EVAL = "eval.json"


def learner_device(learner: MetaLearner) -> torch.device:
    """The device of the learner's parameters (CPU for a learner without any, e.g. a fixed embedding)."""
    first = next(learner.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def mean_ci95(values: Tensor) -> tuple[float, float]:
    """Mean and 95% confidence half-width of a 1-D tensor of per-task values."""
    values = values.double()
    n = values.numel()
    std = float(values.std(unbiased=True)) if n > 1 else float("nan")
    return float(values.mean()), 1.96 * std / math.sqrt(n)


def check_steps(steps: Sequence[int]) -> list[int]:
    steps = list(steps)
    if not steps:
        raise MetaloopError("option 'steps': give at least one step count")
    for s in steps:
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise MetaloopError(f"option 'steps': step counts must be integers ≥ 0, got {s!r}")
        if s > MAX_STEPS:
            raise MetaloopError(f"option 'steps': at most {MAX_STEPS:,} ({WHY_STEPS}), got {s}")
    return steps


def check_episodes(episodes: int) -> int:
    if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1:
        raise MetaloopError(f"option 'episodes': must be a positive integer, got {episodes!r}")
    if episodes > MAX_EPISODES:
        raise MetaloopError(f"option 'episodes': at most {MAX_EPISODES:,} ({WHY_EPISODES}), got {episodes}")
    return episodes


def evaluate_learner(
    learner: MetaLearner,
    bench: Benchmark,
    cfg: dict[str, Any],
    *,
    episodes: int,
    steps: Sequence[int],
    chunk: int = 100,
    progress: bool = False,
    partial: tuple[Path, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``learner`` on the first ``episodes`` test tasks of ``bench``: a JSON-ready dict.

    A step count at which the inner loop diverged (a non-finite metric on some task) gets
    ``{"mean": null, "ci95": null}``.

    ``partial=(path, key)`` makes a long evaluation resumable: after each ``chunk`` of tasks the per-task
    metrics so far are written (atomically) to ``path`` with ``key``, a JSON value that identifies what is
    evaluated (the run's checkpoint, the settings); a later call with the same key, steps and chunk size
    starts after the chunks found there. The file is removed when the evaluation completes.
    """
    steps = check_steps(steps)
    check_episodes(episodes)
    tasks = bench.test_tasks(cfg)
    if hasattr(tasks, "__len__") and episodes > len(tasks):
        raise MetaloopError(f"option 'episodes': {episodes} requested, benchmark '{bench.name}' has {len(tasks)} test tasks")
    device = learner_device(learner)
    values: list[Tensor] = []
    group_ids: list[Tensor] = []
    partial_file = None if partial is None else Path(partial[0])
    stamp = None if partial is None else json.loads(json.dumps([partial[1], steps, chunk]))
    if partial_file is not None:
        try:
            saved = json.loads(partial_file.read_text())
        except (OSError, ValueError):
            saved = {}
        if saved.get("key") == stamp:
            values = [torch.tensor(v, dtype=torch.float64) for v in saved["values"]]
            group_ids = [torch.tensor(g) for g in saved["groups"]]
    done = sum(len(v) for v in values)
    place = distributed.world()  # with several processes, each evaluates a contiguous part of the tasks
    if place.size > 1 and partial_file is not None:
        raise MetaloopError("a resumable evaluation (partial=...) runs in one process")
    first, last = distributed.share(episodes, place) if place.size > 1 else (done, episodes)
    # The metric heads and ANIL embed each distinct test example once (their adapt leaves the body alone).
    with tqdm(total=episodes, initial=done, disable=not progress or not place.main, desc="eval", unit="task") as bar, \
            learner.memoize_embeddings():
        for start in range(first, last, chunk):
            count = min(chunk, last - start)
            batch = tasks.batch(start, count).to(device)
            values.append(learner.evaluate_batch(batch, steps, bench.metric_fn).cpu().double())
            if bench.task_groups is not None:
                group_ids.append(batch.info[bench.task_groups[0]].cpu())
            if partial_file is not None and start + count < episodes:
                atomic_write_text(partial_file, json.dumps({
                    "key": stamp, "values": [v.tolist() for v in values], "groups": [g.tolist() for g in group_ids]}))
            bar.update(count)
    if partial_file is not None:
        partial_file.unlink(missing_ok=True)
    if place.size > 1:  # every process's values, in task order
        parts = distributed.gather((values, group_ids), place)
        values = [v for part, _ in parts for v in part]
        group_ids = [g for _, part in parts for g in part]
    table = torch.cat(values)
    result = {
        "algo": cfg["algo"],
        "benchmark": cfg["benchmark"],
        "metric": bench.metric,
        "episodes": episodes,
        "steps": _summary(table, steps),
    }
    if bench.task_groups is not None:
        ids = torch.cat(group_ids)
        result["groups"] = {name: {"tasks": int((ids == g).sum()), "steps": _summary(table[ids == g], steps)}
                            for g, name in enumerate(bench.task_groups[1]) if bool((ids == g).any())}
    return result


def _summary(table: Tensor, steps: Sequence[int]) -> dict[str, dict[str, float | None]]:
    """``{step: {"mean", "ci95"}}`` of a ``[tasks, steps]`` table; a step count at which the inner loop diverged
    (a non-finite metric on some task) gets nulls (JSON has no NaN)."""
    out = {}
    for j, s in enumerate(steps):
        mean, ci = mean_ci95(table[:, j])
        if not math.isfinite(mean):
            mean, ci = None, None
        out[str(s)] = {"mean": mean, "ci95": ci}
    return out


def adaptation_latency(learner: MetaLearner, bench: Benchmark, cfg: dict[str, Any], *, tasks: int = 10,
                       steps: int | None = None) -> float:
    """Median wall time (ms) to adapt to one test task and predict its queries, one task at a time,
    with ``steps`` inner steps (default: the run's ``test_inner_steps``); after one warm-up task."""
    steps = cfg["test_inner_steps"] or cfg["inner_steps"] if steps is None else steps
    source = bench.test_tasks(cfg)
    device = learner_device(learner)
    times = []
    for i in range(tasks + 1):
        batch = source.batch(i, 1).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        learner.evaluate_batch(batch, [steps], bench.metric_fn)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i > 0:
            times.append(time.perf_counter() - t0)
    times.sort()
    return 1000 * times[len(times) // 2]


def load_learner(run_dir: str | Path, *, device: str | None = None,
                 overrides: Mapping[str, Any] | None = None) -> tuple[MetaLearner, Benchmark, dict[str, Any]]:
    """Rebuild a run's learner from its config and last checkpoint (in evaluation mode).

    Options newer than the run take their defaults. ``overrides`` may change the options of
    stage ``test`` or ``place`` only (:attr:`~metaloop.config.Option.testable`: how or where the run is tested).
    """
    stored = read_config(run_dir)
    bench = get_benchmark(stored["benchmark"])
    options = bench.all_options()
    changes = dict(overrides or {})
    testable = [name for name, opt in options.items() if opt.testable]
    for key in changes:
        if key in options and not options[key].testable:
            raise MetaloopError(f"--set {key}: eval can change only {', '.join(testable)} "
                                f"('{key}' changes what is trained: train another run)")
    check_reads(stored["algo"], changes, "--set", environment=bench.environment is not None)
    known = {k: v for k, v in stored.items() if k in options}
    cfg = {"algo": stored["algo"], "benchmark": stored["benchmark"],
           **resolve(options, [(f"run '{run_dir}'", known), ("--set", changes)])}
    if device is not None:
        cfg["device"] = device
    check_device(cfg["device"])
    learner, bench = build_learner(cfg)
    run = trained_options({"algo": stored["algo"], "benchmark": stored["benchmark"], **known}, options)
    record = load_checkpoint(Path(run_dir), learner, run=run, where=f"config file '{Path(run_dir) / CONFIG}'")
    cfg["checkpoint_iteration"] = record["iteration"]
    cfg["train_seconds"] = record.get("elapsed_seconds")
    learner.eval()
    return learner, bench, cfg


def result_name(run_cfg: Mapping[str, Any], options: Mapping[str, Any], *, episodes: int, steps: Sequence[int],
                overrides: Mapping[str, Any]) -> str:
    """The file of a run's evaluation: ``eval.json`` at the run's own settings (its ``eval_episodes``,
    ``eval_steps`` and test-time options), else a name that lists what differs, e.g.
    ``eval-episodes=5.json`` or ``eval-test_inner_lr=0.005_steps=0,20.json``: no result replaces another
    one taken at other settings. Options of stage ``place`` (device, data root) do not change a result."""
    parts = []
    if episodes != run_cfg.get("eval_episodes"):
        parts.append(f"episodes={episodes}")
    if list(steps) != list(run_cfg.get("eval_steps", [])):
        parts.append("steps=" + ",".join(str(s) for s in steps))
    for key in sorted(overrides):
        opt = options.get(key)
        if key in ("eval_episodes", "eval_steps") or (opt is not None and opt.stage == "place"):
            continue
        if overrides[key] != run_cfg.get(key):
            value = overrides[key]
            parts.append(f"{key}=" + (",".join(map(str, value)) if isinstance(value, list) else str(value)))
    if not parts:
        return EVAL
    return "eval-" + re.sub(r"[^A-Za-z0-9_.,=+-]", "_", "_".join(parts)) + ".json"


def evaluate(
    run_dir: str | Path,
    *,
    episodes: int | None = None,
    steps: Sequence[int] | None = None,
    plots: bool = True,
    progress: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a run directory's last checkpoint; write the result and plots; return the result.

    ``episodes`` and ``steps`` default to the run's ``eval_episodes`` and ``eval_steps``; ``overrides``
    changes test-time options (:attr:`~metaloop.config.Option.testable`, e.g. ``test_inner_lr``), which the
    result records under ``"settings"``. The result goes to ``eval.json`` at the run's own settings and to
    a file named by the settings otherwise (:func:`result_name`; ``result["file"]``), so a quick check never
    replaces a full evaluation.
    """
    run_dir = Path(run_dir)
    stored_device = (overrides or {}).get("device") or read_config(run_dir).get("device", "cpu")
    place, device = distributed.init(stored_device)
    learner, bench, cfg = load_learner(run_dir, overrides=overrides, device=device if place.size > 1 else None)
    episodes = cfg["eval_episodes"] if episodes is None else episodes
    steps = check_steps(cfg["eval_steps"] if steps is None else steps)
    result = evaluate_learner(learner, bench, cfg, episodes=episodes, steps=steps, progress=progress)
    result["iteration"] = cfg["checkpoint_iteration"]
    result["train_seconds"] = cfg["train_seconds"]
    if overrides:
        result["settings"] = {k: cfg[k] for k in overrides}
    result["file"] = result_name(read_config(run_dir), bench.all_options(), episodes=episodes, steps=steps,
                                 overrides=overrides or {})
    if not place.main:  # only the first process writes
        return result
    if (run_dir / result["file"]).is_dir():
        raise MetaloopError(f"'{run_dir / result['file']}' is a folder; eval writes its result there (move it)")
    atomic_write_text(run_dir / result["file"], json.dumps(result, indent=1))
    if plots and result["file"] == EVAL:  # the plots show the run's own evaluation, not a quick check
        (run_dir / "plots").mkdir(exist_ok=True)
        adaptation_curve({cfg["algo"]: result}, run_dir / "plots" / "adaptation_curve.png", metric=bench.metric)
        if bench.plot is not None:
            benchmark_plot(bench.plot, learner, cfg, run_dir / "plots")
    return result


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: one row per result (name → result), one column per step count."""
    steps = sorted({int(s) for r in results.values() for s in r["steps"]})
    metric = next(iter(results.values()))["metric"]
    head = "| method | " + " | ".join(f"{metric} after {s} steps" for s in steps) + " |"
    rule = "|---|" + "---|" * len(steps)
    rows = [head, rule]
    for name, r in results.items():
        cells = []
        for s in steps:
            v = r["steps"].get(str(s))
            if v is None:
                cells.append("–")
            elif v["mean"] is None:
                cells.append("diverged")
            else:
                cells.append(f"{v['mean']:.3f} ± {v['ci95']:.3f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
