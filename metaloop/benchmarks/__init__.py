"""The registry of named benchmarks: task source, backbone, loss, metric and preset hyper-parameters."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaloop.algorithms import ALGORITHMS, MetaLearner
from metaloop.config import OPTIONS, Option, load_yaml, parse_set, resolve
from metaloop.errors import MetaloopError
from metaloop.models.mlp import MLP
from metaloop.tasks.base import TaskBatch
from metaloop.tasks.sinusoid import SinusoidTasks


class TaskSource(Protocol):
    def batch(self, start: int, count: int) -> TaskBatch: ...


@dataclass(frozen=True)
class Benchmark:
    """A named benchmark. ``defaults`` and ``algo_defaults`` are presets applied before user config."""

    name: str
    description: str
    metric: str
    higher_is_better: bool
    make_model: Callable[[dict[str, Any]], nn.Module]
    loss_fn: Callable[[Any, Tensor], Tensor]
    metric_fn: Callable[[Any, Tensor], Tensor]
    train_tasks: Callable[[dict[str, Any]], TaskSource]
    test_tasks: Callable[[dict[str, Any]], TaskSource]
    options: tuple[Option, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    algo_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    plot: Callable[[MetaLearner, dict[str, Any], Path], list[Path]] | None = None

    def all_options(self) -> dict[str, Option]:
        return {**OPTIONS, **{o.name: o for o in self.options}}


# ---------------------------------------------------------------------------------------------- sinusoid
def _sinusoid_model(cfg: dict[str, Any]) -> nn.Module:
    return MLP(1, cfg["hidden"], 1)


def _sinusoid_train(cfg: dict[str, Any]) -> TaskSource:
    return SinusoidTasks(cfg["shots"], cfg["queries"] or cfg["shots"], seed=cfg["seed"], split="train")


def _sinusoid_test(cfg: dict[str, Any]) -> TaskSource:
    return SinusoidTasks(cfg["shots"], cfg["eval_queries"], seed=cfg["eval_seed"], split="test")


def _mse_per_task(pred: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(pred, y)


def _sinusoid_plot(learner: MetaLearner, cfg: dict[str, Any], out_dir: Path) -> list[Path]:
    from metaloop.plots import sinusoid_predictions

    return [sinusoid_predictions(learner, cfg, out_dir / "predictions.png")]


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
    options=(
        Option("hidden", list, [40, 40], "sinusoid: hidden layer widths of the ReLU MLP", positive=True),
        Option("eval_queries", int, 100, "sinusoid: query points per test task", positive=True),
    ),
    defaults={
        "iterations": 70000,
        "meta_batch_size": 25,
        "inner_lr": 0.01,
        "inner_steps": 1,
        "test_inner_steps": 10,
        "outer_lr": 1e-3,
        "shots": 5,
        "checkpoint_every": 5000,
        "log_every": 500,
    },
    algo_defaults={
        # Reptile needs several inner steps to differ from joint training (Nichol et al. 2018, §6).
        "reptile": {"inner_steps": 10, "inner_lr": 0.02, "outer_lr": 0.1, "anneal": True},
    },
    plot=_sinusoid_plot,
)

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [SINUSOID]}


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise MetaloopError(f"unknown benchmark '{name}' (known: {', '.join(BENCHMARKS)})")
    return BENCHMARKS[name]


def check_algorithm(name: str) -> None:
    if name not in ALGORITHMS:
        raise MetaloopError(f"unknown algorithm '{name}' (known: {', '.join(ALGORITHMS)})")


def resolve_config(
    algo: str | None,
    benchmark: str | None,
    *,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
) -> dict[str, Any]:
    """The full config of a run: defaults < benchmark preset < algorithm preset < file < overrides.

    ``overrides`` is a mapping, or ``key=value`` strings as given to ``--set``. ``algo`` and
    ``benchmark`` may instead come from the config file.
    """
    file_layer = dict(load_yaml(config_file)) if config_file is not None else {}
    algo = algo or file_layer.pop("algo", None)
    benchmark = benchmark or file_layer.pop("benchmark", None)
    file_layer.pop("algo", None)
    file_layer.pop("benchmark", None)
    if algo is None or benchmark is None:
        raise MetaloopError("both an algorithm (--algo) and a benchmark (--benchmark) are needed")
    check_algorithm(algo)
    bench = get_benchmark(benchmark)
    if overrides is None:
        set_layer: Mapping[str, Any] = {}
    elif isinstance(overrides, Mapping):
        set_layer = overrides
    else:
        set_layer = parse_set(overrides)
    layers = [
        (f"benchmark '{benchmark}'", bench.defaults),
        (f"algorithm '{algo}' preset", bench.algo_defaults.get(algo, {})),
        (f"config file '{config_file}'", file_layer),
        ("--set", set_layer),
    ]
    cfg = resolve(bench.all_options(), layers)
    check_device(cfg["device"])
    return {"algo": algo, "benchmark": benchmark, **cfg}


def check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise MetaloopError(f"option 'device': {device!r} is not a torch device (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MetaloopError(f"option 'device': {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise MetaloopError(f"option 'device': {device!r} is not supported (cpu, cuda, cuda:N)")


def build_learner(cfg: Mapping[str, Any]) -> tuple[MetaLearner, Benchmark]:
    """The benchmark's model wrapped in the configured algorithm, on ``cfg['device']``.

    The model's initialization depends only on ``cfg['seed']``; the global RNG is left as it was.
    """
    bench = get_benchmark(cfg["benchmark"])
    check_algorithm(cfg["algo"])
    cls = ALGORITHMS[cfg["algo"]][0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        model = bench.make_model(dict(cfg))
    kwargs: dict[str, Any] = dict(
        inner_lr=cfg["inner_lr"],
        inner_steps=cfg["inner_steps"],
        test_inner_steps=cfg["test_inner_steps"],
        adapt=cfg["adapt"],
        clip_norm=cfg["inner_clip"],
        inner_optimizer=cfg["inner_optimizer"],
        bn_mode=cfg["bn_mode"],
        path=cfg["path"],
        chunk_size=cfg["chunk_size"],
    )
    if cfg["algo"] == "maml":
        kwargs["first_order"] = cfg["first_order"]
    if cfg["algo"] == "reptile":
        kwargs["anneal"] = cfg["anneal"]
    learner = cls(model, bench.loss_fn, **kwargs)
    return learner.to(cfg["device"]), bench
