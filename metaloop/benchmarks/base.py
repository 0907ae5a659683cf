"""The :class:`Benchmark` record: what a named benchmark provides to training and evaluation."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import yaml
from torch import Tensor, nn

from metaloop.config import OPTIONS, Option
from metaloop.tasks.base import TaskBatch


class TaskSource(Protocol):
    def batch(self, start: int, count: int) -> TaskBatch: ...


def _no_check(cfg: dict[str, Any]) -> None:
    """The default :attr:`Benchmark.check_splits`: a benchmark whose splits are disjoint by construction."""


#: The presets, one YAML file per benchmark family (values written out; the reasons are in docs/presets.md).
PRESETS = Path(__file__).resolve().parent / "presets"


@lru_cache(maxsize=None)
def _preset_file(family: str) -> dict[str, Any]:
    return yaml.safe_load((PRESETS / f"{family}.yaml").read_text(encoding="utf-8"))


def presets(family: str, name: str) -> dict[str, Any]:
    """The :class:`Benchmark` fields ``defaults``, ``algo_defaults`` and ``demo`` of benchmark ``name``, from
    ``presets/<family>.yaml``: its ``preset``, the file's ``algorithms`` entries with the benchmark's own
    ``algorithms`` entries in place of them, and its ``demo`` (a copy: the file's data are never changed)."""
    doc = _preset_file(family)
    entry = doc["benchmarks"][name]
    return copy.deepcopy({"defaults": entry["preset"],
                          "algo_defaults": {**doc.get("algorithms", {}), **entry.get("algorithms", {})},
                          "demo": entry.get("demo")})


#: Validation tasks are drawn from the meta-training split (tasks, or speakers, that meta-training sees: the
#: held-out ones stay for testing) with this seed plus ``eval_seed``, apart from the training stream (``seed``).
VALIDATION_SEED = 10_000


@dataclass(frozen=True)
class Benchmark:
    """A named benchmark. ``defaults`` and ``algo_defaults`` are presets applied before user config.

    ``make_model(cfg)`` builds the network for ``cfg["algo"]`` (a classifier with a head for the
    gradient-based family, an embedding network for the metric methods).
    """

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
    #: The name of the benchmark's own plot in :data:`metaloop.plots.BENCHMARK_PLOTS` (a name: the plots are drawn
    #: by the runs layer, above this catalogue), written by ``eval`` beside the adaptation curve.
    plot: str | None = None
    #: Tasks of the meta-training split for choosing test-time settings (:func:`metaloop.tuning.choose_test_lr`),
    #: seeded with :data:`VALIDATION_SEED` plus ``eval_seed``, apart from the training stream.
    validation_tasks: Callable[[dict[str, Any]], TaskSource] | None = None
    published: Mapping[str, Any] = field(default_factory=dict)
    classification: bool = True
    #: The dimension of the pretrained features that feature-based algorithms (LEO) receive.
    feature_dim: Callable[[dict[str, Any]], int] | None = None
    #: For ``metaloop adapt``: the column of the user's files holding the raw inputs (``text`` or ``path``)
    #: and ``encode_inputs(cfg, values, base_dir, options)`` turning them into the model's input tensor ``[n, ...]``
    #: (``options``: the labels of the support file, for a model that reads them: the LLM's answer words).
    input_column: str | None = None
    encode_inputs: Callable[[dict[str, Any], list[str], Path, list[str]], Any] | None = None
    #: The column of the support file's labels (``label``; the LLM benchmarks' ``output``).
    label_column: str = "label"
    #: The model answers with any set of labels, as words (no classifier head with ``ways`` outputs): ``adapt``
    #: takes any number of labels, and each needs one example at least.
    open_answers: bool = False
    #: ``(info key, group names)``: the test tasks fall into groups (a :class:`TaskBatch` ``info`` tensor of
    #: indices into the names), and evaluation also reports each group (lm-strings: the function families).
    task_groups: tuple[str, tuple[str, ...]] | None = None
    #: ``check_splits(cfg)``, called by :func:`~metaloop.training.train` once the training tasks are drawn: warns
    #: (:class:`~metaloop.errors.MetaloopWarning`) when the test split shares classes or examples with the training
    #: split, which inflates the test accuracy. The user's own data (``images:``, ``text:``) checks; the named
    #: benchmarks' splits are disjoint by construction (the default does nothing).
    check_splits: Callable[[dict[str, Any]], None] = _no_check
    #: The options that set the size of a model built from scratch (not loaded from pretrained weights):
    #: before a run allocates it, the model is built on the ``meta`` device and its parameter count is
    #: checked against the device's memory (:func:`metaloop.benchmarks.check_model_size`).
    size_options: tuple[str, ...] = ()
    #: The model is a language model's prompt scorer (the LLM benchmarks): algorithms whose role is "prompts"
    #: need one, and those of an embedding, features or a head cannot use one.
    prompts: bool = False
    #: A reinforcement-learning benchmark's environment (:data:`metaloop.tasks.rl.Environment`): its learners are the
    #: RL algorithms (:data:`metaloop.algorithms.RL_ALGORITHMS`), which sample their own rollouts of each task.
    environment: Callable[..., Any] | None = None
    #: Options of every benchmark that this one does not read (an RL benchmark has no ``shots``): setting one is
    #: an error.
    unread_options: tuple[str, ...] = ()
    #: What ``metaloop demo`` runs on this benchmark (from its presets file): ``algo``, ``iterations``, optionally
    #: ``overrides``, ``baseline`` (the label of the same algorithm evaluated with no meta-training) and ``anchor``
    #: (the published figures printed beside the result); ``None``: no demo.
    demo: Mapping[str, Any] | None = None

    def all_options(self) -> dict[str, Option]:
        return {**OPTIONS, **{o.name: o for o in self.options}}
