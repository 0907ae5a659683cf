"""Run configuration: defaults, then the benchmark's preset, then a YAML file, then ``--set key=value``.

A resolved config is a flat ``dict`` of plain values, written to ``RUN_DIR/config.yaml``. Every key is
declared as an :class:`Option`; an unknown key or a value of the wrong type is a
:class:`~metaloop.errors.MetaloopError` that names the key and where it came from.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from metaloop.errors import MetaloopError

#: The execution paths over a meta-batch's tasks (metaloop.algorithms.base).
PATHS: tuple[str, ...] = ("auto", "loop", "vmap", "batched")


#: What an option is part of, which says who may change it after a run is trained:
#: ``train``, what is trained (fixed for the life of a run); ``schedule``, how long training runs and how it
#: logs (``train --resume`` may change it); ``test``, how a trained run is tested (``--resume`` and
#: ``eval --set`` may change it); ``place``, where the run computes or reads its data (``--resume``,
#: ``eval --set`` and ``adapt`` may change it).
STAGES = ("train", "schedule", "test", "place")


@dataclass(frozen=True)
class Option:
    """One config key: its type (``int``, ``float``, ``bool``, ``str`` or ``list``), default and rules.

    A ``float`` must be finite. ``maximum`` bounds a number (each element of a list): beyond it a run could
    not finish or fit in memory. ``stage`` is one of :data:`STAGES`.
    """

    name: str
    type: type
    default: Any
    help: str
    positive: bool = False
    non_negative: bool = False
    nullable: bool = False
    choices: tuple[str, ...] | None = None
    maximum: float | None = None
    why_maximum: str = ""
    stage: str = "train"

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"Option {self.name!r}: stage {self.stage!r} is not one of {STAGES}")

    def coerce(self, value: Any, source: str) -> Any:
        where = f"{source}: option '{self.name}'"
        if value is None:
            if self.nullable:
                return None
            raise MetaloopError(f"{where} cannot be null")
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is float and isinstance(value, str):
            try:  # YAML 1.1 reads 1e-4 (no dot) as a string
                value = float(value)
            except ValueError:
                pass
        if self.type is list:
            if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise MetaloopError(f"{where} must be a list of integers, got {value!r}")
        elif not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise MetaloopError(f"{where} must be {self.type.__name__}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise MetaloopError(f"{where} must be one of {', '.join(self.choices)}, got {value!r}")
        values = value if isinstance(value, list) else [value]
        if self.type is float and not all(math.isfinite(v) for v in values):
            raise MetaloopError(f"{where} must be a finite number, got {value!r}")
        if self.positive and not all(v > 0 for v in values):
            raise MetaloopError(f"{where} must be positive, got {value!r}")
        if self.non_negative and not all(v >= 0 for v in values):
            raise MetaloopError(f"{where} must not be negative, got {value!r}")
        if self.maximum is not None and not all(v <= self.maximum for v in values):
            why = f" ({self.why_maximum})" if self.why_maximum else ""
            raise MetaloopError(f"{where} is at most {format_number(self.maximum)}{why}, got {value!r}")
        return value

    @property
    def resumable(self) -> bool:
        """``train --resume`` may change it: it does not change what is trained."""
        return self.stage != "train"

    @property
    def testable(self) -> bool:
        """``metaloop eval --set`` may change it: it says only how or where a trained run is tested."""
        return self.stage in ("test", "place")


def format_number(value: float) -> str:
    """``100,000,000`` for a whole number, ``0.5`` otherwise."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


#: Upper bounds of the sizes (see :attr:`Option.maximum`): far beyond any published protocol, and below what
#: could not finish or fit in memory.
MAX_ITERATIONS = 10**8
WHY_ITERATIONS = "10^8 meta-steps take more than a day even at 1 ms each; MAML's longest protocol is 70,000"
MAX_TASKS = 100_000
MAX_STEPS = 10_000
WHY_STEPS = "each inner step is a forward and backward pass on every task; MAML uses 1 to 10"
MAX_EXAMPLES = 100_000
WHY_EXAMPLES = "examples of a task are held in memory at once"
MAX_EPISODES = 1_000_000
WHY_EPISODES = "600 test tasks already give a 95% CI of about ±0.8 accuracy points"
MAX_SECONDS = 365 * 24 * 3600.0


#: Keys that every benchmark accepts.
OPTIONS: dict[str, Option] = {
    o.name: o
    for o in [
        Option("iterations", int, 1000, "outer-loop iterations (meta-steps)", positive=True, maximum=MAX_ITERATIONS,
               why_maximum=WHY_ITERATIONS, stage="schedule"),
        Option("meta_batch_size", int, 25, "tasks per meta-step", positive=True, maximum=MAX_TASKS,
               why_maximum="tasks of one meta-step are drawn and held at once"),
        Option("inner_lr", float, 0.01, "inner-loop step size α", positive=True),
        Option("inner_steps", int, 1, "inner steps during meta-training", positive=True, maximum=MAX_STEPS,
               why_maximum=WHY_STEPS),
        Option("test_inner_steps", int, None, "inner steps for `adapt` at test time (default inner_steps)",
               positive=True, nullable=True, maximum=MAX_STEPS, why_maximum=WHY_STEPS, stage="test"),
        Option("test_inner_lr", float, None, "inner step size at test time (default inner_lr; the gradient-based "
               "family with a fixed step size: not Meta-SGD or LEO, which learn theirs)", positive=True,
               nullable=True, stage="test"),
        Option("shots", int, 5, "support examples per task (per class for classification): K", positive=True,
               maximum=MAX_EXAMPLES, why_maximum=WHY_EXAMPLES),
        Option("queries", int, None, "query examples per task during meta-training (default: shots)",
               positive=True, nullable=True, maximum=MAX_EXAMPLES, why_maximum=WHY_EXAMPLES),
        Option("seed", int, 0, "seed of the training task stream and of the model's initialization",
               non_negative=True, maximum=2**32 - 1, why_maximum="a 32-bit seed"),
        Option("device", str, "cpu", "torch device: cpu, cuda or cuda:N", stage="place"),
        Option("outer_lr", float, 1e-3, "outer-loop learning rate (Adam; Reptile's ε)", positive=True),
        Option("first_order", bool, False, "maml: drop second-order terms (fomaml sets it)"),
        Option("adapt", str, "all", "parameters the inner loop adapts: all, head, or glob patterns"),
        Option("bn_mode", str, "transductive", "BatchNorm statistics", choices=("transductive", "running")),
        Option("inner_clip", float, None, "clip inner gradients to this global norm", positive=True, nullable=True),
        Option("inner_optimizer", str, "sgd", "inner-loop optimizer (adam: first-order algorithms only)",
               choices=("sgd", "adam")),
        Option("anneal", bool, False, "reptile: decay ε linearly to 0"),
        Option("outer_optimizer", str, "sgd", "reptile: the outer step on θ − mean φ: sgd (θ ← θ + ε·mean(φ − θ), "
               "Algorithm 2) or adam (θ − mean φ as Adam's gradient, Nichol et al. §3); the others use Adam",
               choices=("sgd", "adam")),
        Option("inner_batches", str, "support", "reptile, meta-training: inner steps on the support set, or "
               "alternately on the support and query sets (minibatches of the task, Nichol et al. §5)",
               choices=("support", "alternate")),
        Option("distance", str, "sqeuclidean", "protonet: squared Euclidean (the paper) or 10·cosine",
               choices=("sqeuclidean", "cosine")),
        Option("svm_c", float, 0.1, "metaoptnet-svm: the SVM's cost C", positive=True),
        Option("ridge_lambda", float, 50.0, "metaoptnet-ridge: the ridge penalty λ", positive=True),
        Option("logit_scale", float, 1.0, "metaoptnet: initial value of the learned logit scale γ (MetaOptNet's "
               "code: 1.0, moved by SGD at lr 0.1; Adam moves it about outer_lr per step)", positive=True),
        Option("path", str, "auto", "execution path over tasks", choices=PATHS),
        Option("chunk_size", int, None, "vmap and batched paths: tasks per chunk", positive=True, nullable=True),
        Option("time_budget", float, None, "stop meta-training after this many seconds (checkpointed)",
               positive=True, nullable=True, maximum=MAX_SECONDS, why_maximum="a year", stage="schedule"),
        Option("checkpoint_every", int, 1000, "iterations between checkpoints", positive=True, stage="schedule"),
        Option("log_every", int, 100, "iterations between metrics-log lines", positive=True, stage="schedule"),
        Option("eval_episodes", int, 600, "test tasks for evaluation", positive=True, maximum=MAX_EPISODES,
               why_maximum=WHY_EPISODES, stage="test"),
        Option("eval_steps", list, [0, 1, 5, 10], "inner-step counts reported by eval", non_negative=True,
               maximum=MAX_STEPS, why_maximum=WHY_STEPS, stage="test"),
        Option("eval_seed", int, 0, "seed of the fixed test tasks (shared by all runs)", non_negative=True,
               maximum=2**32 - 1, why_maximum="a 32-bit seed", stage="test"),
    ]
}



def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` items; values are YAML scalars or lists (``0.01``, ``true``, ``[40,40]``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise MetaloopError(f"--set {item!r}: expected key=value")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise MetaloopError(f"--set {item!r}: value is not valid YAML ({exc.__class__.__name__})") from None
    return out


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(f"key {key!r} appears twice (lines {seen[key]} and {line})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file: a YAML mapping of option names to values."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise MetaloopError(f"config file '{path}': cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise MetaloopError(f"config file '{path}': not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise MetaloopError(f"config file '{path}': {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise MetaloopError(f"config file '{path}': malformed YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MetaloopError(f"config file '{path}': expected a mapping of option: value, got {type(data).__name__}")
    return data


def resolve(
    options: Mapping[str, Option],
    layers: Iterable[tuple[str, Mapping[str, Any]]],
) -> dict[str, Any]:
    """Defaults of ``options``, overridden by each ``(source name, mapping)`` layer in turn."""
    config = {name: copy.deepcopy(opt.default) for name, opt in options.items()}
    for source, layer in layers:
        for key, value in layer.items():
            if key not in options:
                raise MetaloopError(f"{source}: unknown option '{key}' (see `metaloop list --options`)")
            config[key] = options[key].coerce(value, source)
    return config


def trained_options(cfg: Mapping[str, Any], options: Mapping[str, Option]) -> dict[str, Any]:
    """What identifies a trained model: the algorithm, the benchmark and each option of stage ``train`` that
    differs from its default (so an option added to metaloop after a run was trained leaves it unchanged)."""
    out = {key: cfg[key] for key in ("algo", "benchmark") if key in cfg}
    for key, value in cfg.items():
        opt = options.get(key)
        if opt is not None and opt.stage == "train" and value != opt.default:
            out[key] = value
    return out
