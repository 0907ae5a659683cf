"""The sinusoid regression benchmark of Finn et al. 2017 (§5.1)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from metaloop.benchmarks.base import Benchmark, TaskSource, presets
from metaloop.config import Option
from metaloop.models.mlp import MLP
from metaloop.tasks.sinusoid import SinusoidTasks


def _sinusoid_model(cfg: dict[str, Any]) -> nn.Module:
    return MLP(1, cfg["hidden"], 1)


def _sinusoid_train(cfg: dict[str, Any]) -> TaskSource:
    return SinusoidTasks(cfg["shots"], cfg["queries"] or cfg["shots"], seed=cfg["seed"], split="train")


def _sinusoid_test(cfg: dict[str, Any]) -> TaskSource:
    return SinusoidTasks(cfg["shots"], cfg["eval_queries"], seed=cfg["eval_seed"], split="test")


def _mse_per_task(pred: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(pred, y)


SINUSOID = Benchmark(
    name="sinusoid",
    description="sinusoid regression, K-shot (Finn et al. 2017): --set shots=5|10",
    metric="mse",
    higher_is_better=False,
    make_model=_sinusoid_model,
    loss_fn=F.mse_loss,
    metric_fn=_mse_per_task,
    train_tasks=_sinusoid_train,
    test_tasks=_sinusoid_test,
    size_options=("hidden",),
    options=(
        Option("hidden", list, [40, 40], "sinusoid: hidden layer widths of the ReLU MLP", positive=True),
        Option("eval_queries", int, 100, "sinusoid: query points per test task", positive=True, stage="test"),
    ),
    **presets("sinusoid", "sinusoid"),
    plot="sinusoid_predictions",
    classification=False,
)
