"""A small multi-task language model, meta-trained from scratch: ``lm-strings`` and ``lm-shakespeare``.

The model is a byte-level GPT-2 (:class:`~metaloop.models.gpt.TinyGPT`: 2 blocks, width 128, 4 heads,
0.48 M parameters by default) built from a config, so nothing is downloaded and every algorithm starts
from the same random initialization (``seed``). Each line of a task is its own sequence: the model
never sees other examples in its context, so whatever it knows of a task it learned in its weights,
by the inner loop on the K support lines.

* ``lm-strings`` (:mod:`metaloop.tasks.strings`): a task is a string function (Caesar shift,
  substitution cipher, rotation, every n-th character, prefix/suffix, affine map mod m, or a composition
  of two), shown as ``input>output`` lines. The test tasks are functions never met in meta-training
  (held-out parameters and held-out pairs of composed families). The loss is the cross-entropy of the
  answer bytes only; the metric is the **exact match %** of the query answers.
* ``lm-shakespeare`` (:mod:`metaloop.tasks.shakespeare`): a task is one TinyShakespeare speaker; K
  support lines and Q query lines of theirs; test speakers are never seen in meta-training. Loss and
  metric are the cross-entropy per byte (nats, lower is better) of the query lines.

**Exact match = greedy decoding.** :func:`exact_match` counts a query as correct when the arg-max of
the logits equals the target at every scored position, with the true answer as the context
(teacher forcing). That is the same as decoding the answer greedily after ``input>`` and comparing it
with the truth, newline included: if every teacher-forced arg-max is right, then at each step of greedy
decoding the context so far *is* the true prefix, so greedy decoding emits the same bytes; and at the
first wrong arg-max, greedy decoding has the same context and emits the same wrong byte. (Ties go to
the first index in both.) The tests check this on a random model.

**LoRA.** ``--set lora_rank=8`` adds LoRA adapters (Hu et al. 2022, via ``peft``) to every attention
projection; ``--set "adapt='*lora_*'"`` (quoted: a bare ``*`` is YAML syntax) then makes the inner
loop adapt only them. The base weights are still meta-learned, as the initialization from which every
task adapts its adapters, unless ``--set lora_freeze_base=true``.

**Training from scratch on the K examples.** The baseline with no meta-training at all is a randomly
initialized model fine-tuned on each test task's support lines with the same inner SGD steps;
:func:`evaluate_scratch` evaluates it (``metaloop eval`` needs a trained run, and ``iterations`` must be
positive, so a run with zero meta-steps is not a thing)::

    from metaloop.tuning import evaluate_scratch
    result = evaluate_scratch("lm-strings", episodes=600, steps=[0, 1, 5, 10])

It builds the ``pretrain`` learner (multi-task baseline, fine-tuned by SGD at ``inner_lr``) at its
initialization of ``seed`` and evaluates it like any run. ``python scripts/lm.py`` reports it as
``scratch``.

**Budget.** Each algorithm's preset number of meta-steps fits in about 12 minutes on one CPU thread
(measured CPU time per meta-step on a Xeon core shared with other work: MAML 0.28 s on ``lm-strings``
with 8 tasks of 5 + 5 lines, 0.50 s on ``lm-shakespeare`` with 4 tasks of 8 + 8 lines; first-order
MAML and the baseline about half that, Reptile about twice), and ``time_budget`` stops any run at 20
minutes (checkpointed). Evaluation: 0, 1, 5 and 10 inner steps (SGD at ``inner_lr``; Reptile: Adam).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from metaloop.benchmarks.base import VALIDATION_SEED, Benchmark, TaskSource, presets
from metaloop.config import Option
from metaloop.errors import MetaloopError
from metaloop.models.gpt import TinyGPT
from metaloop.tasks.shakespeare import ShakespeareTasks
from metaloop.tasks.strings import FAMILIES, IGNORE, StringTasks


def lm_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy over the scored positions (``y != -100``) of ``logits [..., T, V]``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)


def exact_match(logits: Tensor, y: Tensor) -> Tensor:
    """``[n]`` booleans: the arg-max equals ``y`` at every scored position of the sequence (see above)."""
    right = (logits.argmax(-1) == y) | (y == IGNORE)
    return right.all(-1)


def exact_match_percent(logits: Tensor, y: Tensor) -> Tensor:
    """The percentage of sequences answered exactly (teacher-forced arg-max = greedy decoding)."""
    return exact_match(logits, y).float().mean() * 100


def _model(cfg: dict[str, Any]) -> nn.Module:
    if cfg["n_embd"] % cfg["n_head"]:
        raise MetaloopError(f"option 'n_embd': {cfg['n_embd']} is not a multiple of n_head={cfg['n_head']}")
    try:
        return TinyGPT(n_layer=cfg["n_layer"], n_embd=cfg["n_embd"], n_head=cfg["n_head"],
                       lora_rank=cfg["lora_rank"], lora_alpha=cfg["lora_alpha"],
                       freeze_base=cfg["lora_freeze_base"])
    except ImportError as exc:
        raise MetaloopError(f"the lm benchmarks need transformers (and peft for LoRA): {exc}") from None


def _strings_train(cfg: dict[str, Any]) -> TaskSource:
    return StringTasks(cfg["shots"], cfg["queries"] or cfg["shots"], seed=cfg["seed"], split="train")


def _strings_test(cfg: dict[str, Any]) -> TaskSource:
    return StringTasks(cfg["shots"], cfg["eval_queries"], seed=cfg["eval_seed"], split="test")


def _shakespeare_train(cfg: dict[str, Any]) -> TaskSource:
    return ShakespeareTasks(cfg["shots"], cfg["queries"] or cfg["shots"], seed=cfg["seed"], split="train",
                            root=cfg["data"])


def _shakespeare_test(cfg: dict[str, Any]) -> TaskSource:
    return ShakespeareTasks(cfg["shots"], cfg["eval_queries"], seed=cfg["eval_seed"], split="test",
                            root=cfg["data"])


MODEL_OPTIONS = (
    Option("n_layer", int, 2, "lm: GPT-2 blocks", positive=True),
    Option("n_embd", int, 128, "lm: GPT-2 width", positive=True),
    Option("n_head", int, 4, "lm: attention heads (n_embd must be a multiple)", positive=True),
    Option("lora_rank", int, 0, "lm: rank of LoRA adapters on c_attn (0: none); with adapt='*lora_*' the inner "
           "loop adapts only them", non_negative=True),
    Option("lora_alpha", float, None, "lm: LoRA scale numerator (default: lora_rank)", positive=True, nullable=True),
    Option("lora_freeze_base", bool, False, "lm: with LoRA, do not meta-learn the base weights"),
)

def validation_tasks(cfg: dict[str, Any]) -> TaskSource:
    """Tasks of the meta-training split for choosing test-time settings, with ``eval_queries`` query lines."""
    seed = VALIDATION_SEED + cfg["eval_seed"]
    if cfg["benchmark"] == "lm-strings":
        return StringTasks(cfg["shots"], cfg["eval_queries"], seed=seed, split="train")
    return ShakespeareTasks(cfg["shots"], cfg["eval_queries"], seed=seed, split="train", root=cfg["data"])



LM_STRINGS = Benchmark(
    name="lm-strings",
    description="string functions (ciphers, rotations, affixes, affine maps, compositions) for a byte-level "
                "GPT-2 trained from scratch; held-out functions; exact match",
    metric="exact match %",
    higher_is_better=True,
    make_model=_model,
    loss_fn=lm_loss,
    metric_fn=exact_match_percent,
    train_tasks=_strings_train,
    test_tasks=_strings_test,
    options=(*MODEL_OPTIONS,
             Option("eval_queries", int, 20, "lm-strings: query lines per test task", positive=True, stage="test")),
    **presets("lm", "lm-strings"),
    classification=False,
    task_groups=("family", FAMILIES),
    size_options=("n_layer", "n_embd", "lora_rank"),
    validation_tasks=validation_tasks,
)

LM_SHAKESPEARE = Benchmark(
    name="lm-shakespeare",
    description="TinyShakespeare, a speaker per task, byte-level GPT-2 trained from scratch; held-out "
                "speakers; loss per byte",
    metric="nats/byte",
    higher_is_better=False,
    make_model=_model,
    loss_fn=lm_loss,
    metric_fn=lm_loss,
    train_tasks=_shakespeare_train,
    test_tasks=_shakespeare_test,
    options=(*MODEL_OPTIONS,
             Option("eval_queries", int, 8, "lm-shakespeare: query lines per test task", positive=True, stage="test"),
             Option("data", str, None, "data root (default: $METALOOP_DATA, then ~/.cache/metaloop/data)", nullable=True,
                    stage="place")),
    **presets("lm", "lm-shakespeare"),
    classification=False,
    size_options=("n_layer", "n_embd", "lora_rank"),
    validation_tasks=validation_tasks,
)

LM = (LM_STRINGS, LM_SHAKESPEARE)


def __getattr__(name: str) -> Any:
    """``evaluate_scratch`` and ``choose_test_lr`` moved to :mod:`metaloop.tuning` (the runs layer); their old
    home answers for one release, with a ``DeprecationWarning``."""
    if name in ("evaluate_scratch", "choose_test_lr"):
        import importlib
        import warnings

        warnings.warn(f"metaloop.benchmarks.lm.{name} is now metaloop.tuning.{name}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module("metaloop.tuning"), name)
    raise AttributeError(f"module 'metaloop.benchmarks.lm' has no attribute {name!r}")
