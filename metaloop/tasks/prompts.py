"""Few-shot tasks for a language model: text classification tasks whose answers are words, as prompts.

A :class:`PromptTask` is a set of (input, answer) pairs with a fixed answer set, its *options* (MetaICL's
classification tasks, Min et al. 2022). The split is of tasks, not of examples: meta-training tasks and test
tasks share no class (MetaICL's setting).

* The built-in collection (:func:`source_task`) turns each text source of :mod:`metaloop.data` into one
  task per split, the class names (``book_flight`` → ``book flight``) as its answers: CLINC150 (training
  domains / held-out domains), HWU64 (scenarios), HuffPost (Bao et al.'s classes); FewRel's relations are a
  test task only. Their class splits are disjoint, so every test task is new.
* The user's file (:func:`read_task_file`): JSON lines with ``task``, ``input``, ``output``, and optionally
  ``options`` (the answer set; default: the task's distinct outputs) and ``split`` (``train`` or ``test``;
  default ``test``).

:class:`PromptTasks` is a seeded stream of episodes over a pool of tasks. Episode ``i`` (its own generator,
seeded by ``(seed, split, i)``) picks a task, ``ways`` of its options (all of them if it has fewer; the order
shuffled), ``shots`` demonstrations and ``queries`` queries among their examples, disjoint. With ``seeds > 1``
(test streams) episodes come in runs of ``seeds``: the same task, options and queries, and another draw of
demonstrations each (MetaICL reports the mean and the worst of such seeds); ``info["seed"]`` says which.

Tensors: an example is ``int64 [1 + ways, L]``, its input's token ids in row 0 and the options' in rows
``1 …``, right-padded with ``-1`` (an option row of only padding is an absent option, scored ``-inf``); its
label is the index of its answer among the options. Inputs are cut to ``max_input_tokens``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metaloop.errors import MetaloopError
from metaloop.tasks.base import TaskBatch, TaskStream, task_seed
from metaloop.data import TEXT_SOURCES

PAD = -1
SPLITS = ("train", "test")


@dataclass(frozen=True)
class PromptTask:
    """A classification task: ``inputs[i]`` has the answer ``options[labels[i]]``."""

    name: str
    inputs: tuple[str, ...]
    labels: tuple[int, ...]
    options: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.labels):
            raise MetaloopError(f"task {self.name!r}: {len(self.inputs)} inputs but {len(self.labels)} labels")
        if len(self.options) < 2:
            raise MetaloopError(f"task {self.name!r}: needs at least 2 answer options, has {len(self.options)}")


def answer_name(label: str) -> str:
    """A class name as an answer word: ``book_flight`` → ``book flight``, ``WORLD NEWS`` → ``world news``."""
    return " ".join(label.replace("_", " ").split()).lower()


def source_task(source: str, split: str, root: Any = None) -> PromptTask:
    """One split of a text source of :mod:`metaloop.data` as a task (see the module docstring)."""
    if source not in TEXT_SOURCES:
        raise MetaloopError(f"unknown task source {source!r} (known: {', '.join(TEXT_SOURCES)})")
    data = TEXT_SOURCES[source](split, root)
    options = tuple(answer_name(c) for c in data.classes)
    if len(set(options)) != len(options):
        raise MetaloopError(f"{source}: two classes have the same answer word")
    return PromptTask(f"{source}-{split}", tuple(data.texts), tuple(int(v) for v in data.labels), options)


def read_task_file(path: str | Path) -> dict[str, list[PromptTask]]:
    """The tasks of a JSON-lines file, by split (see the module docstring). Errors name the file and line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MetaloopError(f"task file {path} does not exist")
    rows: dict[str, dict[str, Any]] = {}
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise MetaloopError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except ValueError:
            raise MetaloopError(f"{where}: not a JSON object") from None
        if not isinstance(row, dict):
            raise MetaloopError(f"{where}: not a JSON object")
        for field in ("task", "input", "output"):
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise MetaloopError(f"{where}: field {field!r} must be a non-empty string")
        split = row.get("split", "test")
        if split not in SPLITS:
            raise MetaloopError(f"{where}: field 'split' must be train or test, got {split!r}")
        options = row.get("options")
        if options is not None and (not isinstance(options, list) or not all(isinstance(o, str) and o.strip()
                                                                              for o in options)):
            raise MetaloopError(f"{where}: field 'options' must be a list of non-empty strings")
        task = rows.setdefault(row["task"], {"split": split, "options": None, "pairs": [], "line": number})
        if task["split"] != split:
            raise MetaloopError(f"{where}: task {row['task']!r} is in split {task['split']!r} at line {task['line']}")
        if options is not None:
            if task["options"] is not None and task["options"] != options:
                raise MetaloopError(f"{where}: task {row['task']!r} has other options at line {task['line']}")
            task["options"] = options
        task["pairs"].append((row["input"], row["output"], number))
    if not rows:
        raise MetaloopError(f"{path}: no tasks (expected JSON lines with task, input, output)")
    out: dict[str, list[PromptTask]] = {s: [] for s in SPLITS}
    for name, task in rows.items():
        options = task["options"] or sorted({o for _, o, _ in task["pairs"]})
        index = {o: i for i, o in enumerate(options)}
        for _, output, number in task["pairs"]:
            if output not in index:
                raise MetaloopError(f"{path}:{number}: output {output!r} is not one of the task's options")
        out[task["split"]].append(PromptTask(name, tuple(i for i, _, _ in task["pairs"]),
                                             tuple(index[o] for _, o, _ in task["pairs"]), tuple(options)))
    return out


class _Encoded:
    """A task's token ids: each input (cut to ``max_input_tokens``) and each option, and its examples by class."""

    def __init__(self, task: PromptTask, encode: Any, max_input_tokens: int) -> None:
        self.task = task
        self.inputs = [ids[:max_input_tokens] for ids in encode(list(task.inputs))]
        self.options = encode(list(task.options))
        labels = torch.tensor(task.labels, dtype=torch.long)
        self.by_class = [torch.nonzero(labels == c).flatten() for c in range(len(task.options))]


class PromptTasks(TaskStream):
    """An indexable, seeded stream of few-shot prompt episodes over ``tasks`` (see the module docstring).

    Args:
        tasks: the pool of tasks of this split.
        encode: ``encode(texts) -> list of token-id lists`` (e.g. :meth:`~metaloop.models.llm.Template.fields`).
        ways: options per episode (at most; a task with fewer uses all of its own).
        shots: demonstrations per episode (K, over all its options: not per class).
        queries: queries per episode.
        seed, split: the stream's seed and split.
        seeds: episodes per (task, options, queries) draw, each with other demonstrations.
        max_input_tokens: inputs are cut to this many tokens.
    """

    def __init__(self, tasks: Sequence[PromptTask], encode: Any, *, ways: int, shots: int, queries: int,
                 seed: int = 0, split: str = "train", seeds: int = 1, max_input_tokens: int = 48) -> None:
        if not tasks:
            raise MetaloopError(f"split {split!r} has no tasks")
        if ways < 2:
            raise MetaloopError(f"option 'ways': a task needs at least 2 answer options, got {ways}")
        super().__init__(seed=seed, split=split)
        self.ways, self.shots, self.queries, self.seeds = ways, shots, queries, max(1, seeds)
        self.encoded = [_Encoded(t, encode, max_input_tokens) for t in tasks]
        for enc in self.encoded:  # the fewest examples an episode's options can have: its smallest classes
            sizes = sorted(len(c) for c in enc.by_class)[: min(ways, len(enc.by_class))]
            if sum(sizes) < shots + queries:
                raise MetaloopError(f"task {enc.task.name!r}: its {len(sizes)} smallest classes have {sum(sizes)} "
                                    f"examples; an episode needs shots + queries = {shots} + {queries}")

    def _draw(self, index: int) -> tuple[_Encoded, list[int], list[int], list[int]]:
        """Episode ``index``: its task, options (class ids), demonstration and query example ids."""
        group, repeat = divmod(index, self.seeds)
        g = self.generator(group)
        enc = self.encoded[int(torch.randint(len(self.encoded), (1,), generator=g))]
        classes = torch.randperm(len(enc.task.options), generator=g)[: self.ways].tolist()
        pool = torch.cat([enc.by_class[c] for c in classes])
        if pool.numel() < self.shots + self.queries:
            raise MetaloopError(f"task {enc.task.name!r}: its {len(classes)} drawn options have {pool.numel()} "
                                f"examples; an episode needs shots + queries = {self.shots} + {self.queries}")
        order = pool[torch.randperm(pool.numel(), generator=g)]
        queries, rest = order[: self.queries].tolist(), order[self.queries:]
        demos = torch.Generator().manual_seed(task_seed(self.seed, self.split, group) ^ (repeat + 1))
        shots = rest[torch.randperm(rest.numel(), generator=demos)[: self.shots]].tolist()
        return enc, classes, shots, queries

    def _tensor(self, enc: _Encoded, classes: list[int], examples: list[int], width: int) -> tuple[Tensor, Tensor]:
        x = torch.full((len(examples), 1 + self.ways, width), PAD, dtype=torch.long)
        for j, c in enumerate(classes):
            ids = enc.options[c]
            x[:, 1 + j, : len(ids)] = torch.tensor(ids)
        position = {c: j for j, c in enumerate(classes)}
        y = torch.tensor([position[enc.task.labels[e]] for e in examples], dtype=torch.long)
        for r, e in enumerate(examples):
            ids = enc.inputs[e]
            x[r, 0, : len(ids)] = torch.tensor(ids)
        return x, y

    def batch(self, start: int, count: int) -> TaskBatch:
        """Episodes ``start … start + count − 1``: ``x [tasks, n, 1 + ways, L]`` (``L`` the longest row), ``y [tasks, n]``."""
        draws = [self._draw(i) for i in range(start, start + count)]
        width = max(max(len(ids) for ids in [*(enc.inputs[e] for e in s + q), *(enc.options[c] for c in cl)])
                    for enc, cl, s, q in draws)
        sx, sy, qx, qy = [], [], [], []
        for enc, classes, shots, queries in draws:
            x, y = self._tensor(enc, classes, shots, width)
            sx.append(x)
            sy.append(y)
            x, y = self._tensor(enc, classes, queries, width)
            qx.append(x)
            qy.append(y)
        names = [enc.task.name for enc in self.encoded]
        info = {"task": torch.tensor([names.index(d[0].task.name) for d in draws]),
                "seed": torch.tensor([i % self.seeds for i in range(start, start + count)])}
        return TaskBatch(torch.stack(sx), torch.stack(sy), torch.stack(qx), torch.stack(qy), info=info)
