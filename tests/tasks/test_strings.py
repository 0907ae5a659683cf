"""String-function tasks: each family on hand examples, the task split, determinism and target masking."""

from __future__ import annotations

import pytest
import torch

from metaloop.tasks.base import TaskBatch
from metaloop.tasks.strings import (
    ALPHABET,
    FAMILIES,
    IGNORE,
    PRIMITIVES,
    SEQ_LEN,
    TEST_PAIRS,
    TRAIN_PAIRS,
    StringTask,
    StringTasks,
    apply,
    composition_pairs,
    encode,
    is_test,
    parameter_space,
    task_key,
)


def assert_same(a: TaskBatch, b: TaskBatch) -> None:
    for x, y in zip(a.tensors(), b.tensors()):
        assert torch.equal(x, y)
    assert torch.equal(a.info["family"], b.info["family"])


@pytest.mark.parametrize("task, inp, out", [
    (StringTask("caesar", (1,)), "abch", "bcda"),
    (StringTask("caesar", (3,)), "fgh", "abc"),
    (StringTask("subst", ("badcfehg",)), "abcdh", "badcg"),
    (StringTask("rotate", (1,)), "abcd", "bcda"),
    (StringTask("rotate", (-2,)), "abcde", "deabc"),
    (StringTask("rotate", (3,)), "abc", "abc"),  # k mod length
    (StringTask("nth", (2, 1)), "abcdef", "bdf"),
    (StringTask("nth", (3, 0)), "abcdefg", "adg"),
    (StringTask("affix", ("prefix", "hb")), "abc", "hbabc"),
    (StringTask("affix", ("suffix", "ha")), "abc", "abcha"),
    (StringTask("affine", (7, 3, 1)), "12", "2"),  # 3·12 + 1 = 37 = 5·7 + 2
    (StringTask("affine", (10, 3, 4)), "9", "1"),
    (StringTask("compose", (StringTask("caesar", (1,)), StringTask("rotate", (1,)))), "abcd", "cdeb"),
    (StringTask("compose", (StringTask("nth", (2, 0)), StringTask("affix", ("suffix", "a")))), "abcde", "acea"),
])
def test_each_family_on_hand_examples(task, inp, out):
    """Every family computes the function its docstring states (compose(f, g) is g ∘ f)."""
    assert apply(task, inp) == out
    assert task(inp) == out


def test_keys_are_canonical():
    assert task_key(StringTask("caesar", (3,))) == "caesar(3)"
    assert task_key(StringTask("affix", ("prefix", "ab"))) == "affix(prefix,'ab')"
    composed = StringTask("compose", (StringTask("nth", (3, 1)), StringTask("affine", (7, 2, 0))))
    assert composed.key == "compose(nth(3,1),affine(7,2,0))"


def test_train_and_test_tasks_do_not_overlap():
    """The primitive task spaces of the two splits share no key; neither do the composed pairs, and
    every family has tasks on both sides."""
    for family in PRIMITIVES:
        train = {t.key for t in parameter_space(family, "train")}
        test = {t.key for t in parameter_space(family, "test")}
        assert train and test, family
        assert not train & test, family
        assert all(not is_test(t) for t in parameter_space(family, "train"))
        assert all(is_test(t) for t in parameter_space(family, "test"))
    train_pairs = {frozenset(p) for p in composition_pairs("train")}
    test_pairs = {frozenset(p) for p in composition_pairs("test")}
    assert not train_pairs & test_pairs
    assert {f for p in TRAIN_PAIRS + TEST_PAIRS for f in p} == set(FAMILIES) - {"affine", "compose"}
    # held-out values stated in the docstring
    assert {t.params[0] for t in parameter_space("caesar", "test")} == {3, 6}
    assert {t.params[0] for t in parameter_space("rotate", "test")} == {2, -3}


def _fingerprint(task: StringTask, probes: list[str], numbers: list[str]) -> tuple[str, ...]:
    return tuple(task(s) for s in (numbers if task.family == "affine" else probes))


def test_sampled_test_tasks_are_new_functions():
    """No sampled test task has a training key, nor computes the same outputs as a sampled training
    task (or any primitive training task) on 40 probe strings: held out as functions, not only by name."""
    g = torch.Generator().manual_seed(0)
    probes = ["".join(ALPHABET[i] for i in torch.randint(8, (int(n),), generator=g).tolist())
              for n in torch.randint(4, 9, (40,), generator=g)]
    numbers = [str(n) for n in range(100)]
    train_tasks = [StringTasks(1, 1, split="train").task(i) for i in range(1500)]
    test_tasks = [StringTasks(1, 1, split="test").task(i) for i in range(400)]
    assert {t.family for t in train_tasks} == set(FAMILIES) == {t.family for t in test_tasks}
    assert not {t.key for t in train_tasks} & {t.key for t in test_tasks}
    assert all(is_test(t) for t in test_tasks) and not any(is_test(t) for t in train_tasks)
    small = [t for f in PRIMITIVES if f != "subst" for t in parameter_space(f, "train")]
    seen = {_fingerprint(t, probes, numbers) for t in train_tasks + small}
    for t in test_tasks:
        assert _fingerprint(t, probes, numbers) not in seen, t.key
    # training compositions are made of training tasks only
    for t in train_tasks:
        if t.family == "compose":
            assert not any(is_test(part) for part in t.params)


def test_same_seed_and_index_give_same_task():
    """A task depends on (seed, split, index) only; batch() equals the items; the global RNG is untouched."""
    torch.manual_seed(0)
    a = StringTasks(5, 7, seed=3).batch(10, 4)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    b = StringTasks(5, 7, seed=3).batch(10, 4)
    assert torch.equal(torch.get_rng_state(), state)
    assert_same(a, b)
    ds = StringTasks(5, 7, seed=3)
    for i in range(4):
        item = ds[10 + i]
        assert torch.equal(item.support_x, a.support_x[i]) and torch.equal(item.query_y, a.query_y[i])
    c = StringTasks(5, 7, seed=4).batch(10, 4)
    assert not torch.equal(a.support_x, c.support_x)
    assert not torch.equal(a.support_x, StringTasks(5, 7, seed=3, split="test").batch(10, 4).support_x)


def test_batch_shapes_and_distinct_inputs():
    batch = StringTasks(5, 7, seed=0).batch(0, 6)
    assert batch.support_x.shape == batch.support_y.shape == (6, 5, SEQ_LEN)
    assert batch.query_x.shape == (6, 7, SEQ_LEN) and batch.support_x.dtype == torch.long
    for i in range(6):
        task, pairs = StringTasks(5, 7, seed=0).examples(i)
        assert len({s for s, _ in pairs}) == 12
        assert all(task(s) == out for s, out in pairs)
        assert FAMILIES[int(batch.info["family"][i])] == task.family


def test_target_masking():
    """x is the line without its last byte (0-padded); y scores only the answer and its newline."""
    x, y = encode([("abcd", "bcde"), ("12", "5")])
    line = b"abcd>bcde\n"
    assert x[0, :9].tolist() == list(line[:-1]) and x[0, 9:].eq(0).all()
    assert y[0, :4].eq(IGNORE).all()  # predicting "bcd>" from the input: not scored
    assert y[0, 4:9].tolist() == list(b"bcde\n")  # from '>' on: the answer
    assert y[0, 9:].eq(IGNORE).all()
    assert y[1].ne(IGNORE).sum() == 2 and y[1, 2:4].tolist() == list(b"5\n")
    assert x[1, 2] == ord(">")
    # every scored target but the final newline is the next byte of x
    inner = (y[:, :-1] != IGNORE) & (x[:, 1:] != 0)
    assert torch.equal(y[:, :-1][inner], x[:, 1:][inner]) and inner.sum() == 5
    with pytest.raises(ValueError):
        encode([("a" * 20, "b")])


def test_longest_line_fits():
    """An 8-letter input composed with a 2-letter affix is the longest line: it fits SEQ_LEN."""
    task = StringTask("compose", (StringTask("caesar", (1,)), StringTask("affix", ("suffix", "ab"))))
    x, y = encode([("abcdefgh", task("abcdefgh"))])
    assert y[0, -1] == ord("\n")
