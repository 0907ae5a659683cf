"""Prompt tasks: the seeded episode stream, the runs of demonstration seeds, the user's task file, and the
built-in collection's task-level split."""

from __future__ import annotations

import json

import pytest
import torch

from metaloop.errors import MetaloopError
from metaloop.tasks.prompts import PAD, PromptTask, PromptTasks, answer_name, read_task_file, source_task


def encode(texts):
    """A stand-in tokenizer: one id per word (its length), so rows are easy to read back."""
    return [[len(w) for w in t.split()] for t in texts]


def task(name: str, classes: int, per_class: int) -> PromptTask:
    inputs = tuple(f"{name} {'x' * (c + 1)} {'y' * (i + 1)}" for c in range(classes) for i in range(per_class))
    labels = tuple(c for c in range(classes) for _ in range(per_class))
    return PromptTask(name, inputs, labels, tuple(f"class{c}" for c in range(classes)))


def test_episodes_are_seeded_and_disjoint():
    """Episode i depends only on (seed, split, i); its demonstrations and queries are distinct examples of its
    options; labels index the options row; a task with fewer options than ways pads with absent rows."""
    pool = [task("a", 6, 5), task("b", 2, 8)]
    stream = PromptTasks(pool, encode, ways=3, shots=4, queries=3, seed=1)
    again = PromptTasks(pool, encode, ways=3, shots=4, queries=3, seed=1)
    a, b = stream.batch(0, 6), again.batch(2, 4)
    assert torch.equal(a.query_x[2:], b.query_x) and torch.equal(a.support_y[2:], b.support_y)
    assert a.support_x.shape[:3] == (6, 4, 4) and a.query_x.shape[:3] == (6, 3, 4)
    other = PromptTasks(pool, encode, ways=3, shots=4, queries=3, seed=2).batch(0, 6)
    assert not torch.equal(other.query_x, a.query_x)
    for i in range(6):
        (sx, sy), (qx, qy) = a.task(i)
        inputs = [tuple(r[r >= 0].tolist()) for r in torch.cat([sx[:, 0], qx[:, 0]])]
        assert len(set(inputs)) == len(inputs)
        present = int((sx[0, 1:] >= 0).any(-1).sum())
        assert present == (2 if a.info["task"][i] == 1 else 3)
        assert int(torch.cat([sy, qy]).max()) < present
        if present == 2:
            assert (sx[:, 3] == PAD).all()


def test_test_episodes_come_in_runs_of_demonstration_seeds():
    """With seeds = 3, episodes 3t … 3t + 2 share their task, options and queries and differ in demonstrations."""
    stream = PromptTasks([task("a", 8, 10)], encode, ways=4, shots=4, queries=5, seed=0, split="test", seeds=3)
    b = stream.batch(0, 6)
    assert b.info["seed"].tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.equal(b.query_x[0], b.query_x[1]) and torch.equal(b.query_x[0], b.query_x[2])
    assert not torch.equal(b.support_x[0], b.support_x[1])
    assert not torch.equal(b.query_x[0], b.query_x[3])


def test_episode_needs_enough_examples():
    with pytest.raises(MetaloopError, match="needs shots \\+ queries = 8 \\+ 4"):
        PromptTasks([task("a", 2, 3)], encode, ways=2, shots=8, queries=4)
    with pytest.raises(MetaloopError, match="at least 2 answer options"):
        PromptTasks([task("a", 2, 3)], encode, ways=1, shots=1, queries=1)


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_the_users_task_file(tmp_path):
    """Tasks by split; options given, or the task's distinct outputs; one line naming file and line per error."""
    path = write(tmp_path / "t.jsonl", [
        {"task": "sent", "input": "great film", "output": "positive", "options": ["negative", "positive"],
         "split": "train"},
        {"task": "sent", "input": "dull", "output": "negative", "split": "train"},
        {"task": "topic", "input": "the match", "output": "sport"},
        {"task": "topic", "input": "the vote", "output": "politics"},
    ])
    tasks = read_task_file(path)
    [sent], [topic] = tasks["train"], tasks["test"]
    assert sent.options == ("negative", "positive") and sent.labels == (1, 0)
    assert topic.options == ("politics", "sport") and topic.labels == (1, 0)
    for rows, needle in [
        (["{not json"], ":1: not a JSON object"),
        ([{"task": "t", "input": "a"}], ":1: field 'output'"),
        ([{"task": "t", "input": "a", "output": "b", "split": "dev"}], ":1: field 'split'"),
        ([{"task": "t", "input": "a", "output": "c", "options": ["a", "b"]}], ":1: output 'c' is not one of"),
        ([{"task": "t", "input": "a", "output": "a"}, {"task": "t", "input": "b", "output": "a", "split": "train"}],
         ":2: task 't' is in split 'test'"),
        ([{"task": "t", "input": "a", "output": "a"}], "at least 2 answer options"),
        ([], "no tasks"),
    ]:
        with pytest.raises(MetaloopError, match=needle):
            read_task_file(write(tmp_path / "bad.jsonl", rows))
    with pytest.raises(MetaloopError, match="does not exist"):
        read_task_file(tmp_path / "none.jsonl")


def test_built_in_tasks_share_no_class_across_the_split(clinc_data):
    """Answer words are readable, and no test class of a source is one of its training classes."""
    assert answer_name("book_flight") == "book flight" and answer_name("WORLD NEWS") == "world news"
    train, test = source_task("clinc150", "train"), source_task("clinc150", "test")
    assert not set(train.options) & set(test.options)
    assert "book flight" in test.options and len(train.options) == 90


def test_a_task_whose_smallest_classes_cannot_fill_an_episode_is_refused_at_once():
    """Not hours later when an episode draws them: the ways smallest classes must hold shots + queries."""
    inputs = tuple(f"x {i}" for i in range(13))
    labels = (0,) * 10 + (1, 2, 3)
    small = PromptTask("lopsided", inputs, labels, ("a", "b", "c", "d"))
    with pytest.raises(MetaloopError, match="its 2 smallest classes have 2 examples"):
        PromptTasks([small], encode, ways=2, shots=2, queries=2)
    PromptTasks([small], encode, ways=4, shots=2, queries=2)  # all four options: 13 examples
