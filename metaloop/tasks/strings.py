"""String-function tasks for a byte-level language model: each task is a function from strings to strings.

A task is shown as ``input>output`` lines, for example ``b"abcd>bcde\\n"`` for a Caesar shift by 1.
The model sees one line at a time (no examples in context): it can only learn the function in its
weights, by the inner loop on the K support lines. Families (letters are the alphabet ``a … h``):

========== ================================= ================================================
family     parameters                         example
========== ================================= ================================================
caesar     shift k ∈ 1 … 7                    k = 1: ``abch`` → ``bcda``
subst      a permutation of ``abcdefgh``      (not a cyclic shift: those are Caesar tasks)
rotate     k ∈ ±1, ±2, ±3 (left if k > 0)     k = 1: ``abcd`` → ``bcda``
nth        every n-th char from offset o      (n, o) = (2, 1): ``abcdef`` → ``bdf``
affix      prefix or suffix of 1–2 letters    suffix ``ha``: ``abc`` → ``abcha``
affine     x ↦ (a·x + b) mod m on numbers     (m, a, b) = (7, 3, 1): ``12`` → ``2``
compose    g ∘ f of two letter families       f, g of different families (see below)
========== ================================= ================================================

Inputs are 4–8 random letters (``affine``: a number 0 … 99 in decimal); the inputs of one task are
distinct. Compositions never pair a family with itself nor ``caesar`` with ``subst``: those are again
tasks of a primitive family (a letter-wise permutation, a longer affix, …). An affix is always applied
last, since a rotation or an nth after it can turn it into another primitive task (rotating ``c + s``
left by 1 is adding the suffix ``c``; ``(c + s)[2::3]`` is ``s[1::3]``).

**The split is of tasks, not of examples.** Every task has a canonical key (:func:`task_key`, such as
``caesar(3)`` or ``compose(rotate(-1),affix(prefix,'hb'))``); a primitive task is held out for testing
by a fixed rule on its parameters:

* caesar: k ∈ {3, 6}; rotate: k ∈ {2, −3}; nth: (n, o) = (3, 1) (fixed held-out values);
* subst, affix, affine: the first 32 bits of the SHA-256 of the key, mod 100, below 20 (``subst`` and
  ``affix``) or 25 (``affine``): a fixed pseudo-random fifth or quarter of the parameters;
* compose: the unordered pairs of families in :data:`TEST_PAIRS` are composed only in test tasks (whose
  parts may have any parameters); training compositions use :data:`TRAIN_PAIRS` with training
  parameters only.

So a test task has parameters, or a pair of composed families, never seen in meta-training.
:func:`parameter_space` lists every primitive task of a split and :func:`composition_pairs` the pairs;
the tests check that the two splits share no key, and that no sampled test task computes the same
function as a sampled training task on a set of probe strings.

Tensors (see :func:`encode`): ``x`` is ``[n, T]`` byte ids (right-padded with 0) of the line without
its last byte, ``y`` the next byte at each position, with ``-100`` (ignored by the loss) everywhere
except the answer: the bytes after ``>`` up to and including the newline. Task ``i`` of a split is
drawn from its own generator seeded by ``(seed, split, i)``, as in :mod:`metaloop.tasks.sinusoid`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from metaloop.tasks.base import TaskBatch, TaskStream

ALPHABET = "abcdefgh"
SEP = ">"
IGNORE = -100
PAD = 0
MIN_LEN, MAX_LEN = 4, 8
NUMBERS = 100
MAX_AFFIX = 2
#: The longest line, ``input>output\n`` (an 8-letter input with a 2-letter affix), minus one: ``x``'s width.
SEQ_LEN = MAX_LEN + len(SEP) + MAX_LEN + MAX_AFFIX + 1 - 1

PRIMITIVES = ("caesar", "subst", "rotate", "nth", "affix", "affine")
FAMILIES = (*PRIMITIVES, "compose")
COMPOSABLE = ("caesar", "subst", "rotate", "nth", "affix")
TRAIN_PAIRS = (("caesar", "rotate"), ("caesar", "affix"), ("subst", "nth"), ("subst", "affix"), ("rotate", "nth"),
               ("nth", "affix"))
TEST_PAIRS = (("caesar", "nth"), ("subst", "rotate"), ("rotate", "affix"))

CAESAR = tuple(range(1, len(ALPHABET)))
CAESAR_TEST = (3, 6)
ROTATE = (-3, -2, -1, 1, 2, 3)
ROTATE_TEST = (2, -3)
NTH = ((2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NTH_TEST = ((3, 1),)
MODULI = (7, 10, 11, 13)
HASH_TEST_PERCENT = {"subst": 20, "affix": 20, "affine": 25}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class StringTask:
    """One task: a family and its parameters; ``compose`` holds ``(f, g)`` and computes ``g(f(s))``."""

    family: str
    params: tuple[Any, ...]

    def __call__(self, s: str) -> str:
        return apply(self, s)

    @property
    def key(self) -> str:
        return task_key(self)


def task_key(task: StringTask) -> str:
    """The canonical key of a task, for example ``subst(badcfehg)`` or ``compose(caesar(1),nth(2,0))``."""
    if task.family == "compose":
        f, g = task.params
        return f"compose({task_key(f)},{task_key(g)})"
    if task.family == "affix":
        kind, text = task.params
        return f"affix({kind},{text!r})"
    return f"{task.family}({','.join(str(p) for p in task.params)})"


def apply(task: StringTask, s: str) -> str:
    """The task's output for input ``s``."""
    fam, p = task.family, task.params
    if fam == "caesar":
        return "".join(ALPHABET[(ALPHABET.index(c) + p[0]) % len(ALPHABET)] for c in s)
    if fam == "subst":
        return "".join(p[0][ALPHABET.index(c)] for c in s)
    if fam == "rotate":
        k = p[0] % len(s)
        return s[k:] + s[:k]
    if fam == "nth":
        n, offset = p
        return s[offset::n]
    if fam == "affix":
        kind, text = p
        return text + s if kind == "prefix" else s + text
    if fam == "affine":
        m, a, b = p
        return str((a * int(s) + b) % m)
    if fam == "compose":
        f, g = p
        return apply(g, apply(f, s))
    raise ValueError(f"unknown string-task family {fam!r}")


def _hash_percent(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100


def is_test(task: StringTask) -> bool:
    """Whether ``task`` belongs to the held-out test tasks (see the module docstring)."""
    fam, p = task.family, task.params
    if fam == "caesar":
        return p[0] in CAESAR_TEST
    if fam == "rotate":
        return p[0] in ROTATE_TEST
    if fam == "nth":
        return tuple(p) in NTH_TEST
    if fam in HASH_TEST_PERCENT:
        return _hash_percent(task_key(task)) < HASH_TEST_PERCENT[fam]
    if fam == "compose":
        pair = {p[0].family, p[1].family}
        return any(pair == set(t) for t in TEST_PAIRS)
    raise ValueError(f"unknown string-task family {fam!r}")


def _all_params(family: str) -> list[tuple[Any, ...]]:
    if family == "caesar":
        return [(k,) for k in CAESAR]
    if family == "subst":
        shifts = {ALPHABET[k:] + ALPHABET[:k] for k in range(len(ALPHABET))}
        perms = ("".join(q) for q in itertools.permutations(ALPHABET))
        return [(q,) for q in perms if q not in shifts]
    if family == "rotate":
        return [(k,) for k in ROTATE]
    if family == "nth":
        return list(NTH)
    if family == "affix":
        texts = ["".join(t) for n in range(1, MAX_AFFIX + 1) for t in itertools.product(ALPHABET, repeat=n)]
        return [(kind, t) for kind in ("prefix", "suffix") for t in texts]
    if family == "affine":
        return [(m, a, b) for m in MODULI for a in range(1, m) if math.gcd(a, m) == 1 for b in range(m)
                if (a, b) != (1, 0)]
    raise ValueError(f"unknown primitive family {family!r}")


@lru_cache(maxsize=None)
def parameter_space(family: str, split: str) -> tuple[StringTask, ...]:
    """Every primitive task of ``family`` in ``split`` (``"train"`` or ``"test"``), in a fixed order.

    ``"val"`` draws from the training tasks (it is another stream of the same tasks).
    """
    want_test = split == "test"
    return tuple(t for t in (StringTask(family, p) for p in _all_params(family)) if is_test(t) == want_test)


def composition_pairs(split: str) -> tuple[tuple[str, str], ...]:
    """The (unordered) pairs of families composed in ``split``'s tasks."""
    return TEST_PAIRS if split == "test" else TRAIN_PAIRS


def task_space(split: str) -> dict[str, Any]:
    """The whole task space of a split: every primitive task by family, and the composed pairs."""
    return {**{f: parameter_space(f, split) for f in PRIMITIVES}, "compose": composition_pairs(split)}


def _pick(seq: Sequence[Any], g: torch.Generator) -> Any:
    return seq[int(torch.randint(len(seq), (), generator=g))]


def sample_task(g: torch.Generator, split: str) -> StringTask:
    """A task of ``split``: a family uniformly from :data:`FAMILIES`, then its parameters uniformly."""
    family = _pick(FAMILIES, g)
    if family != "compose":
        return _pick(parameter_space(family, split), g)
    pair = list(_pick(composition_pairs(split), g))
    if int(torch.randint(2, (), generator=g)):
        pair.reverse()
    if pair[0] == "affix":  # an affix comes last: added first, a rotation or nth could undo it
        pair.reverse()
    # training compositions are made of training tasks; a test composition is new by its pair alone
    parts = [_pick(parameter_space(f, "train") + (parameter_space(f, "test") if split == "test" else ()), g)
             for f in pair]
    return StringTask("compose", (parts[0], parts[1]))


def _input(g: torch.Generator, numeric: bool) -> str:
    if numeric:
        return str(int(torch.randint(NUMBERS, (), generator=g)))
    n = int(torch.randint(MIN_LEN, MAX_LEN + 1, (), generator=g))
    return "".join(ALPHABET[i] for i in torch.randint(len(ALPHABET), (n,), generator=g).tolist())


def sample_inputs(task: StringTask, count: int, g: torch.Generator) -> list[str]:
    """``count`` distinct inputs for ``task`` (numbers for ``affine``, letter strings otherwise)."""
    numeric = task.family == "affine"
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen.setdefault(_input(g, numeric), None)
    return list(seen)


def encode(pairs: Sequence[tuple[str, str]], length: int = SEQ_LEN) -> tuple[Tensor, Tensor]:
    """``(x, y)``, each ``[n, length]``, for ``(input, output)`` pairs (see the module docstring).

    The line is ``input>output\\n``; ``x`` holds all its bytes but the last, ``y[t] = line[t + 1]`` where
    ``line[t + 1]`` belongs to the answer (``output\\n``) and ``-100`` elsewhere, padding included.
    """
    x = torch.full((len(pairs), length), PAD, dtype=torch.long)
    y = torch.full((len(pairs), length), IGNORE, dtype=torch.long)
    for i, (inp, out) in enumerate(pairs):
        line = (inp + SEP + out + "\n").encode()
        if len(line) - 1 > length:
            raise ValueError(f"line {line!r} is longer than {length + 1} bytes")
        ids = torch.tensor(list(line), dtype=torch.long)
        x[i, : len(line) - 1] = ids[:-1]
        start = len(inp.encode())  # x[start] is the separator: from there on, the next byte is the answer
        y[i, start: len(line) - 1] = ids[start + 1:]
    return x, y


class StringTasks(TaskStream):
    """An indexable, seeded stream of string-function tasks (a ``torch.utils.data.Dataset`` of tasks).

    Args:
        shots: support lines per task (K).
        queries: query lines per task.
        seed: the stream's seed.
        split: ``"train"`` (or ``"val"``: another stream of the training tasks) or ``"test"``.
        length: the dataset's length (the stream itself is unbounded).

    ``info["family"]`` is the index in :data:`FAMILIES` of each task's family.
    """

    splits = SPLITS

    def __init__(self, shots: int, queries: int, *, seed: int = 0, split: str = "train", length: int = 2**31 - 1):
        super().__init__(seed=seed, split=split, length=length)
        self.shots, self.queries = shots, queries

    def task(self, index: int) -> StringTask:
        """The function of task ``index``."""
        return sample_task(self.generator(index), self.split)

    def examples(self, index: int) -> tuple[StringTask, list[tuple[str, str]]]:
        """Task ``index`` and its ``shots + queries`` ``(input, output)`` pairs, support first."""
        g = self.generator(index)
        task = sample_task(g, self.split)
        return task, [(s, apply(task, s)) for s in sample_inputs(task, self.shots + self.queries, g)]

    def batch(self, start: int, count: int) -> TaskBatch:
        """Tasks ``start … start + count − 1`` as one batch: ``x``, ``y`` of shape ``[tasks, n, SEQ_LEN]``."""
        xs, ys, families = [], [], []
        for i in range(start, start + count):
            task, pairs = self.examples(i)
            x, y = encode(pairs)
            xs.append(x)
            ys.append(y)
            families.append(FAMILIES.index(task.family))
        x, y, k = torch.stack(xs), torch.stack(ys), self.shots
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:], info={"family": torch.tensor(families)})
