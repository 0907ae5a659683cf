"""Run configuration: defaults, then the benchmark's preset, then a YAML file, then ``--set key=value``.

A resolved config is a flat ``dict`` of plain values, written to ``RUN_DIR/config.yaml``. Every key is
declared as an :class:`Option`; an unknown key or a value of the wrong type is a
:class:`~metaloop.errors.MetaloopError` that names the key and where it came from.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from metaloop.errors import MetaloopError


@dataclass(frozen=True)
class Option:
    """One config key: its type (``int``, ``float``, ``bool``, ``str`` or ``list``), default and rules."""

    name: str
    type: type
    default: Any
    help: str
    positive: bool = False
    non_negative: bool = False
    nullable: bool = False
    choices: tuple[str, ...] | None = None

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
        if self.positive and not all(v > 0 for v in values):
            raise MetaloopError(f"{where} must be positive, got {value!r}")
        if self.non_negative and not all(v >= 0 for v in values):
            raise MetaloopError(f"{where} must not be negative, got {value!r}")
        return value


#: Keys that every benchmark accepts.
OPTIONS: dict[str, Option] = {
    o.name: o
    for o in [
        Option("iterations", int, 1000, "outer-loop iterations (meta-steps)", positive=True),
        Option("meta_batch_size", int, 25, "tasks per meta-step", positive=True),
        Option("inner_lr", float, 0.01, "inner-loop step size α", positive=True),
        Option("inner_steps", int, 1, "inner steps during meta-training", positive=True),
        Option("test_inner_steps", int, None, "inner steps for `adapt` at test time (default inner_steps)",
               positive=True, nullable=True),
        Option("test_inner_lr", float, None, "inner step size at test time (default inner_lr; the gradient-based "
               "family with a fixed step size: not Meta-SGD or LEO, which learn theirs)", positive=True,
               nullable=True),
        Option("shots", int, 5, "support examples per task (per class for classification): K", positive=True),
        Option("queries", int, None, "query examples per task during meta-training (default: shots)",
               positive=True, nullable=True),
        Option("seed", int, 0, "seed of the training task stream and of the model's initialization",
               non_negative=True),
        Option("device", str, "cpu", "torch device: cpu, cuda or cuda:N"),
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
        Option("path", str, "auto", "execution path over tasks", choices=("auto", "loop", "vmap")),
        Option("chunk_size", int, None, "vmap path: tasks per chunk", positive=True, nullable=True),
        Option("time_budget", float, None, "stop meta-training after this many seconds (checkpointed)",
               positive=True, nullable=True),
        Option("checkpoint_every", int, 1000, "iterations between checkpoints", positive=True),
        Option("log_every", int, 100, "iterations between metrics-log lines", positive=True),
        Option("eval_episodes", int, 600, "test tasks for evaluation", positive=True),
        Option("eval_steps", list, [0, 1, 5, 10], "inner-step counts reported by eval", non_negative=True),
        Option("eval_seed", int, 0, "seed of the fixed test tasks (shared by all runs)", non_negative=True),
    ]
}

#: Keys that may change when a run is resumed (they do not change its result).
RESUMABLE_CHANGES = {"iterations", "time_budget", "device", "checkpoint_every", "log_every", "eval_episodes", "eval_steps",
                     "test_inner_steps", "test_inner_lr", "eval_seed"}
#: Keys that ``metaloop eval --set`` may change: they only say how a trained run is tested.
EVAL_CHANGES = ("test_inner_steps", "test_inner_lr", "eval_episodes", "eval_steps", "eval_seed", "device")


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


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file: a YAML mapping of option names to values."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise MetaloopError(f"config file '{path}': cannot be read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
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
