"""The llm-tasks benchmarks on a tiny Llama (lm=FOLDER): train and evaluate from the command line, the
untrained baselines, and one-line errors for bad input."""

from __future__ import annotations

import json
import random

import pytest
import torch

from metaloop.benchmarks import get_benchmark, resolve_config
from metaloop.benchmarks.llm import macro_f1
from metaloop.tuning import choose_test_lr, evaluate_untrained

WORDS = "book flight rome paris cancel card bank money weather rain alarm music pizza dinner email mom".split()
SETS = {"ways": 2, "shots": 3, "queries": 2, "eval_queries": 2, "eval_seeds": 2, "iterations": 2,
        "meta_batch_size": 1, "eval_episodes": 4, "log_every": 1, "checkpoint_every": 2}


def task_file(path, *, test_examples: int = 12):
    rng = random.Random(0)
    rows = []
    for name, options, split, count in [("trips", ("travel", "banking"), "train", 12),
                                        ("media", ("music", "weather"), "train", 12),
                                        ("chores", ("alarm", "email", "dinner"), "test", test_examples)]:
        for i in range(count):
            answer = options[i % len(options)]
            rows.append({"task": name, "input": f"{answer} " + " ".join(rng.choice(WORDS) for _ in range(3)),
                         "output": answer, "split": split})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sets(tiny_llama, **extra):
    return [a for k, v in {**SETS, "lm": tiny_llama, **extra}.items() for a in ("--set", f"{k}={v}")]


@pytest.mark.parametrize("algo", ["metaicl", "maml", "maml-icl", "pretrain"])
def test_train_and_eval_on_the_users_tasks(algo, tiny_llama, tmp_path, cli):
    """Each method trains on the file's train tasks and is tested on its test task, per demonstration seed."""
    data = task_file(tmp_path / "tasks.jsonl")
    code, _, err = cli("train", "--algo", algo, "--benchmark", f"llm-tasks:{data}", "--out", tmp_path / "r",
                       "--quiet", *sets(tiny_llama))
    assert code == 0, err
    code, out, err = cli("eval", tmp_path / "r", "--json", "--no-plots")
    assert code == 0, err
    result = json.loads(out)
    assert result["metric"] == "macro-F1 %" and set(result["groups"]) == {"seed 0", "seed 1"}
    assert all(0 <= v["mean"] <= 100 for v in result["steps"].values())


def test_untrained_baselines(tiny_llama, tmp_path):
    """In-context learning and fine-tuning of the pretrained model, with no meta-training."""
    data = task_file(tmp_path / "tasks.jsonl")
    icl = evaluate_untrained(f"llm-tasks:{data}", "metaicl", name="icl", overrides={**SETS, "lm": str(tiny_llama)},
                             steps=[0])
    tuned = evaluate_untrained(f"llm-tasks:{data}", "pretrain", name="finetune", overrides={**SETS, "lm": str(tiny_llama)},
                               steps=[0, 1])
    assert icl["algo"] == "icl" and tuned["algo"] == "finetune" and set(tuned["steps"]) == {"0", "1"}


@pytest.mark.parametrize(("algo", "benchmark", "needle"), [
    ("metaicl", "sinusoid", "needs a language-model benchmark"),
    ("maml-icl", "omniglot-5w1s", "needs a language-model benchmark"),
    ("protonet", "llm-tasks", "scores prompts with a language model"),
    ("metaicl", "llm-tasks:nowhere.jsonl", "does not exist"),
])
def test_bad_combinations_are_one_line_errors(algo, benchmark, needle, tmp_path, cli):
    code, _, err = cli("train", "--algo", algo, "--benchmark", benchmark, "--out", tmp_path / "r", "--quiet")
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "r").exists()


def test_a_test_task_too_small_is_refused_before_training(tiny_llama, tmp_path, cli):
    data = task_file(tmp_path / "tasks.jsonl", test_examples=4)
    code, _, err = cli("train", "--algo", "metaicl", "--benchmark", f"llm-tasks:{data}", "--out",
                       tmp_path / "r", "--quiet", *sets(tiny_llama))
    assert code == 2 and "the test split: " in err and "chores" in err, err
    assert not (tmp_path / "r").exists()


def test_presets_and_the_metric():
    """The built-in benchmark resolves for each method without loading anything; macro-F1 by hand."""
    import torch

    for algo in ("metaicl", "maml", "maml-icl", "fomaml", "reptile", "metasgd", "pretrain"):
        cfg = resolve_config(algo, "llm-tasks")
        assert cfg["shots"] == 8 and cfg["ways"] == 5
    assert resolve_config("maml", "llm-tasks")["adapt"] == resolve_config("maml-icl", "llm-tasks")["adapt"] == "*lora_*"
    scores = torch.tensor([[1.0, 0], [0, 1], [1, 0], [1, 0]])  # predictions 0, 1, 0, 0
    y = torch.tensor([0, 1, 1, 1])
    # class 0: tp 1, fp 2, fn 0 → 0.5; class 1: tp 1, fp 0, fn 2 → 0.5
    assert abs(float(macro_f1(scores, y)) - 50.0) < 1e-5


def test_a_checkpoint_holds_the_adapters_only(tiny_llama, tmp_path, cli):
    """The frozen base weights, the tied output embedding included, are left out (a digest checks them)."""
    from safetensors.torch import load_file

    data = task_file(tmp_path / "tasks.jsonl")
    code, _, err = cli("train", "--algo", "metaicl", "--benchmark", f"llm-tasks:{data}", "--out",
                       tmp_path / "r", "--quiet", *sets(tiny_llama))
    assert code == 0, err
    keys = load_file(str(tmp_path / "r" / "checkpoint-2.safetensors")).keys()
    learner_keys = [k for k in keys if k.startswith("learner.")]
    assert learner_keys and all("lora_" in k for k in learner_keys), learner_keys


@pytest.mark.parametrize("algo", ["metaicl", "fomaml"])
def test_adapt_answers_the_users_new_task(algo, tiny_llama, tmp_path, cli):
    """`metaloop adapt RUN --support examples.jsonl --query queries.jsonl`: the support's outputs are the
    answer options (any number, one example each at least), and each query gets one with its probability."""
    data = task_file(tmp_path / "tasks.jsonl")
    code, _, err = cli("train", "--algo", algo, "--benchmark", f"llm-tasks:{data}", "--out", tmp_path / "r",
                       "--quiet", *sets(tiny_llama))
    assert code == 0, err
    support = tmp_path / "examples.jsonl"
    support.write_text("".join(json.dumps({"input": i, "output": o}) + "\n" for i, o in [
        ("the film was wonderful", "positive"), ("a dull and slow story", "negative"), ("loved every minute", "positive"),
        ("i want my money back", "negative"), ("just boring", "negative"), ("a gem of a movie", "neutral")]))
    query = tmp_path / "queries.jsonl"
    query.write_text("".join(json.dumps({"input": q}) + "\n" for q in ["what a great film", "so boring"]))
    code, out, err = cli("adapt", tmp_path / "r", "--support", support, "--query", query, "--out",
                         tmp_path / "answers.jsonl")
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [r["input"] for r in rows] == ["what a great film", "so boring"]
    assert all(r["prediction"] in {"positive", "negative", "neutral"} and 0 < r["score"] <= 1 for r in rows)


def test_adapt_compares_llm_queries_as_texts(tiny_llama, tmp_path, cli):
    """A query that repeats a support input warns (as a text, however long: not as a file path)."""
    data = task_file(tmp_path / "tasks.jsonl")
    code, _, err = cli("train", "--algo", "metaicl", "--benchmark", f"llm-tasks:{data}", "--out",
                       tmp_path / "r", "--quiet", *sets(tiny_llama))
    assert code == 0, err
    long = "word " * 80
    support = tmp_path / "s.jsonl"
    support.write_text("".join(json.dumps({"input": i, "output": o}) + "\n" for i, o in [(long, "a"), ("short", "b")]))
    query = tmp_path / "q.jsonl"
    query.write_text(json.dumps({"input": long.upper()}) + "\n")
    code, out, err = cli("adapt", tmp_path / "r", "--support", support, "--query", query)
    assert code == 0, err
    assert "1 of the 1 queries is also in the support file" in err and "ignoring case" in err


def test_zero_shot_is_for_in_context_learning_only(tiny_llama, tmp_path):
    data = task_file(tmp_path / "tasks.jsonl")
    from metaloop.errors import MetaloopError

    with pytest.raises(MetaloopError, match="option 'eval_shots': 0 demonstrations leave maml's inner loop nothing"):
        evaluate_untrained(f"llm-tasks:{data}", "maml", overrides={**SETS, "lm": str(tiny_llama), "eval_shots": 0})
    zero = evaluate_untrained(f"llm-tasks:{data}", "metaicl", overrides={**SETS, "lm": str(tiny_llama), "eval_shots": 0})
    assert zero["steps"]["0"]["mean"] is not None


def test_validation_episodes_are_of_meta_training_tasks_in_the_test_format(tiny_llama, tmp_path):
    """choose_test_lr's tasks: the file's train tasks (never its test task), with eval_shots demonstrations and
    eval_queries queries, apart from the training stream."""
    data = task_file(tmp_path / "tasks.jsonl")
    cfg = resolve_config("maml", f"llm-tasks:{data}", overrides={**SETS, "lm": str(tiny_llama), "eval_shots": 4,
                                                                  "eval_queries": 3})
    bench = get_benchmark(cfg["benchmark"])
    tasks = bench.validation_tasks(cfg)
    names = {enc.task.name for enc in tasks.encoded}
    batch = tasks.batch(0, 6)
    assert names == {"trips", "media"}
    assert batch.support_y.shape == (6, 4) and batch.query_y.shape == (6, 3)
    train = bench.train_tasks(cfg).batch(0, 6)
    assert not torch.equal(batch.support_x[:, :3], train.support_x[:, :3])


def test_choose_test_lr_on_llm_tasks(tiny_llama, tmp_path):
    """The fine-tuning baseline's step size is chosen on the validation episodes, lowest query loss wins."""
    data = task_file(tmp_path / "tasks.jsonl")
    chosen = choose_test_lr(f"llm-tasks:{data}", None, [1.0, 100.0], episodes=2,
                            overrides={**SETS, "lm": str(tiny_llama)})
    losses = {float(k): v for k, v in chosen["validation"].items()}
    assert set(losses) == {0.001, 0.1} and chosen["test_inner_lr"] == min(losses, key=losses.__getitem__)
    assert losses[0.1] != losses[0.001]
