"""Evaluation: the 95% confidence interval, shared test tasks, and the results table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metaloop.algorithms import ALGORITHMS
from metaloop.benchmarks import BENCHMARKS, CLASSIFICATION_ONLY, build_learner, resolve_config
from metaloop.errors import MetaloopError
from metaloop.evaluation import evaluate_learner, format_table, mean_ci95


def test_mean_ci95_matches_the_formula():
    """mean_ci95 is (mean, 1.96·std(ddof=1)/√n) for a known vector."""
    values = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 3.5])
    mean, ci = mean_ci95(torch.tensor(values, dtype=torch.float32))
    assert math.isclose(mean, values.mean(), rel_tol=1e-12)
    assert math.isclose(ci, 1.96 * values.std(ddof=1) / math.sqrt(len(values)), rel_tol=1e-12)
    assert math.isclose(ci, 1.96 * 5.565518843737752 / math.sqrt(6), rel_tol=1e-12)


def test_mean_ci95_of_one_value_has_no_interval():
    """With a single task the mean is the value and the interval is undefined (nan)."""
    mean, ci = mean_ci95(torch.tensor([2.5]))
    assert mean == 2.5 and math.isnan(ci)


def _test_batches(algo: str, seed: int, monkeypatch) -> list[torch.Tensor]:
    """The task tensors that evaluate_learner hands to the learner of ``algo`` trained with ``seed``."""
    cfg = resolve_config(algo, "sinusoid", overrides={"seed": seed, "hidden": [8]})
    learner, bench = build_learner(cfg)
    seen: list[torch.Tensor] = []
    real = learner.evaluate_batch

    def spy(batch, steps, metric_fn):
        seen.append(torch.cat([t.flatten() for t in batch.tensors()]))
        return real(batch, steps, metric_fn)

    monkeypatch.setattr(learner, "evaluate_batch", spy)
    result = evaluate_learner(learner, bench, cfg, episodes=7, steps=[0, 1], chunk=3)
    assert result["episodes"] == 7 and set(result["steps"]) == {"0", "1"}
    assert len(seen) == 3  # chunks of 3, 3 and 1 tasks
    return seen


def test_every_algorithm_and_seed_sees_the_same_test_tasks(monkeypatch):
    """Test tasks depend on neither the algorithm nor the training seed, and differ from training tasks."""
    reference = _test_batches("maml", 0, monkeypatch)
    for algo in (a for a in ALGORITHMS if a not in CLASSIFICATION_ONLY):
        for seed in (0, 3):
            got = _test_batches(algo, seed, monkeypatch)
            assert all(torch.equal(a, b) for a, b in zip(reference, got, strict=True)), (algo, seed)

    cfg = resolve_config("maml", "sinusoid")
    bench = BENCHMARKS["sinusoid"]
    assert not torch.equal(bench.test_tasks(cfg).batch(0, 2).tensors()[0],
                           bench.train_tasks(cfg).batch(0, 2).tensors()[0])


def test_evaluate_learner_rejects_bad_steps_and_episodes():
    """Negative step counts and non-positive episode counts raise MetaloopError."""
    cfg = resolve_config("maml", "sinusoid", overrides={"hidden": [8]})
    learner, bench = build_learner(cfg)
    with pytest.raises(MetaloopError, match="steps"):
        evaluate_learner(learner, bench, cfg, episodes=2, steps=[-1])
    with pytest.raises(MetaloopError, match="episodes"):
        evaluate_learner(learner, bench, cfg, episodes=0, steps=[0])


def test_format_table():
    """format_table: a Markdown row per result, numerically sorted step columns, '–' for missing cells."""
    results = {
        "maml": {"metric": "mse", "steps": {"0": {"mean": 1.23456, "ci95": 0.1},
                                            "10": {"mean": 0.5, "ci95": 0.05},
                                            "2": {"mean": 0.75, "ci95": 0.0625}}},
        "pretrain": {"metric": "mse", "steps": {"0": {"mean": 2.0, "ci95": 0.2}}},
    }
    assert format_table(results) == (
        "| method | mse after 0 steps | mse after 2 steps | mse after 10 steps |\n"
        "|---|---|---|---|\n"
        "| maml | 1.235 ± 0.100 | 0.750 ± 0.062 | 0.500 ± 0.050 |\n"
        "| pretrain | 2.000 ± 0.200 | – | – |"
    )


def test_diverged_step_counts_are_null_in_json(monkeypatch):
    """A non-finite metric (a diverged inner loop) is reported as null, so --json stays valid JSON."""
    import json

    import metaloop.evaluation as ev
    from metaloop.benchmarks import build_learner, resolve_config

    cfg = resolve_config("maml", "sinusoid", overrides={"hidden": [4]})
    learner, bench = build_learner(cfg)
    monkeypatch.setattr(type(learner), "evaluate_batch",
                        lambda self, batch, steps, fn: torch.tensor([[1.0, float("nan")]]).repeat(len(batch), 1))
    result = ev.evaluate_learner(learner, bench, cfg, episodes=3, steps=[0, 1])
    assert result["steps"]["1"] == {"mean": None, "ci95": None}
    assert json.loads(json.dumps(result, allow_nan=False))["steps"]["0"]["mean"] == 1.0
    assert "diverged" in ev.format_table({"x": result})
