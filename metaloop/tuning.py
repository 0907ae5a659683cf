"""Baselines without meta-training, and choosing test-time settings: runs of the evaluation layer that build a
learner themselves.

* :func:`evaluate_untrained`: a benchmark's model at its initialization (or pretrained weights), adapted by an
  algorithm's ``adapt`` on each test task, evaluated like a run: in-context learning of a pretrained LLM
  (``metaicl``), fine-tuning on the K examples (``pretrain``), or, for a model trained from scratch,
  :func:`evaluate_scratch` (the random initialization fine-tuned on the support set).
* :func:`choose_test_lr`: the test-time step size of a run, chosen on the benchmark's validation tasks (tasks
  of the meta-training split, never a test task).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from metaloop.algorithms import FINETUNE
from metaloop.benchmarks import build_learner, resolve_config
from metaloop.config import parse_set
from metaloop.errors import MetaloopError
from metaloop.evaluation import evaluate_learner, load_learner
from metaloop.training import read_config


def evaluate_untrained(
    benchmark: str,
    algo: str,
    *,
    name: str | None = None,
    episodes: int | None = None,
    steps: Sequence[int] | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """``algo``'s learner on ``benchmark`` with no meta-training step, on the test tasks: the dict of
    :func:`~metaloop.evaluation.evaluate_learner`, its ``algo`` set to ``name`` (default: ``algo``)."""
    cfg = resolve_config(algo, benchmark, overrides=overrides)
    learner, bench = build_learner(cfg)
    learner.eval()
    result = evaluate_learner(learner, bench, cfg, episodes=episodes or cfg["eval_episodes"],
                              steps=steps or cfg["eval_steps"], progress=progress)
    result.update(algo=name or algo, iteration=0, train_seconds=0.0)
    return result


def evaluate_scratch(benchmark: str, **kwargs: Any) -> dict[str, Any]:
    """The "training from scratch on the K examples" baseline: the randomly initialized model (``seed``)
    fine-tuned on each test task's support set with the inner loop of ``pretrain`` (SGD at ``inner_lr``),
    named ``"scratch"``."""
    return evaluate_untrained(benchmark, FINETUNE, name="scratch", **kwargs)


def _as_mapping(overrides: Mapping[str, Any] | Iterable[str] | None) -> dict[str, Any]:
    if overrides is None:
        return {}
    return dict(overrides) if isinstance(overrides, Mapping) else parse_set(overrides)


def choose_test_lr(
    benchmark: str,
    run_dir: str | None,
    factors: Sequence[float],
    *,
    episodes: int = 100,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
) -> dict[str, Any]:
    """The test-time step size, chosen on the benchmark's validation tasks: ``test_inner_lr = f · inner_lr`` for
    each factor ``f``, scored by the mean query loss after ``test_inner_steps`` inner steps on ``episodes``
    validation tasks; the lowest wins (the first on a tie). ``run_dir`` None scores the random initialization
    (the ``scratch`` baseline, with ``overrides``). Returns ``{"test_inner_lr": best, "validation": {lr: loss}}``."""
    if not factors or any(not f > 0 for f in factors):
        raise MetaloopError(f"test step-size factors must be positive, got {list(factors)}")
    if run_dir is None:
        inner_lr = resolve_config(FINETUNE, benchmark, overrides=overrides)["inner_lr"]
    else:
        inner_lr = read_config(run_dir)["inner_lr"]
    losses: dict[float, float] = {}
    for factor in factors:
        if run_dir is None:
            cfg = resolve_config(FINETUNE, benchmark, overrides={**_as_mapping(overrides),
                                                                     "test_inner_lr": factor * inner_lr})
            learner, bench = build_learner(cfg)
        else:
            learner, bench, cfg = load_learner(run_dir, overrides={"test_inner_lr": factor * inner_lr})
        if bench.validation_tasks is None:
            raise MetaloopError(f"benchmark '{bench.name}' has no validation tasks to choose a step size on")
        learner.eval()
        steps = cfg["test_inner_steps"] or cfg["inner_steps"]
        tasks, total = bench.validation_tasks(cfg), 0.0
        for start in range(0, episodes, 50):
            batch = tasks.batch(start, min(50, episodes - start)).to(cfg["device"])
            total += float(learner.evaluate_batch(batch, [steps], bench.loss_fn).sum())
        losses[cfg["test_inner_lr"]] = total / episodes
    finite = {lr: loss for lr, loss in losses.items() if math.isfinite(loss)}
    if not finite:
        raise MetaloopError(f"every test step size diverged on the validation tasks: {losses}")
    best = min(finite, key=finite.__getitem__)
    return {"test_inner_lr": best, "validation": {str(lr): loss for lr, loss in losses.items()}}
