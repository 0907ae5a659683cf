"""Text benchmarks (metaloop.benchmarks.text): presets for every algorithm, the token cache, CLI runs on
CLINC150 with a tiny offline encoder, and the user's own ``text:FILE``."""

from __future__ import annotations

import csv
import json
import os
import random
import warnings
from pathlib import Path

import pytest
import torch

from metaloop.algorithms import ALGORITHMS, LEO, MAML, ProtoNet
from metaloop.benchmarks import build_learner, get_benchmark, resolve_config
from metaloop.benchmarks.text import DEFAULT_MIX, TEXT
from metaloop.errors import MetaloopError, MetaloopWarning

NAMES = [b.name for b in TEXT]
GRADIENT = {"maml", "fomaml", "metasgd", "reptile"}


def sets(**values) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def assert_one_line_error(code, err, needle) -> None:
    assert code == 2, err
    assert err.startswith("metaloop: error: ") and err.count("\n") == 1, err
    assert needle in err, err


# ---------------------------------------------------------------------------------------------- presets


def test_named_text_benchmarks():
    assert NAMES == [f"{s}-5w{k}s" for s in ("clinc150", "hwu64", "huffpost", "fewrel") for k in (1, 5)] + [
        "clinc150-allw10s"]
    for name in NAMES:
        bench = get_benchmark(name)
        assert bench.classification and bench.input_column == "text" and bench.encode_inputs is not None


@pytest.mark.parametrize("name", NAMES)
def test_presets_resolve_for_every_algorithm(name):
    for algo in (a for a, (cls, _) in ALGORITHMS.items() if cls.role != "prompts"):
        cfg = resolve_config(algo, name)
        assert cfg["encoder"] == "minilm" and cfg["train_encoder"] == "lora" and cfg["lora_rank"] == 8
        assert cfg["path"] == "loop"
        if algo in GRADIENT:
            assert cfg["adapt"] == "head.*,*lora_*", algo
        if name == "clinc150-allw10s":
            assert (cfg["ways"], cfg["shots"], cfg["eval_queries"]) == (45, 10, 5)
        else:
            assert cfg["ways"] == 5 and cfg["shots"] == int(name[-2])
    assert resolve_config("protonet", name)["eval_steps"] == [0]
    for head in ("metaoptnet-svm", "metaoptnet-ridge"):  # the learned logit scale starts at 10, not 1
        assert resolve_config(head, name)["logit_scale"] == 10.0


def test_fewrel_meta_trains_on_the_mix():
    for shots in (1, 5):
        cfg = resolve_config("maml", f"fewrel-5w{shots}s")
        assert cfg["train_sources"] == DEFAULT_MIX == "clinc150,hwu64,huffpost"
        assert cfg["max_length"] == 128
    assert resolve_config("maml", "clinc150-5w1s")["train_sources"] is None
    # the benchmark's own split, or the mix, decides the training classes
    from metaloop.benchmarks.text import _texts

    columns = ("text", "label", "split")
    try:
        mix = _texts("fewrel", "train", None, DEFAULT_MIX, columns)
        test = _texts("fewrel", "test", None, DEFAULT_MIX, columns)
    except MetaloopError as e:
        pytest.skip(f"text data absent: {e}")
    prefixes = {c.split("/")[0] for c in mix.classes}
    assert prefixes == {"clinc150", "hwu64", "huffpost"}
    assert len(mix.classes) == 90 + 42 + 20
    assert len(test.classes) == 16 and not any(c.startswith(("clinc150/", "hwu64/")) for c in test.classes)


@pytest.mark.usefixtures("clinc_data")
def test_every_algorithm_builds_on_the_tiny_encoder(text_env):
    for algo in (a for a, (cls, _) in ALGORITHMS.items() if cls.role != "prompts"):
        cfg = resolve_config(algo, "clinc150-5w1s", overrides={"encoder": str(text_env)})
        learner, _ = build_learner(cfg)
        if isinstance(learner, LEO):
            assert learner.params()["decoder.weight"].shape[0] == 2 * 16  # feature_dim from config.json
            continue
        names = {n for n, p in learner.model.named_parameters() if p.requires_grad}
        assert names and all("lora_" in n or n in ("scale", "head.weight", "head.bias") for n in names), algo
        if isinstance(learner, MAML):
            adapted = set(learner.adapted_names)
            assert {"head.weight", "head.bias"} <= adapted, algo
            assert any("lora_" in n for n in adapted) == (algo not in ("anil",)), algo
        else:
            assert learner.model.head is None, algo
    learner, _ = build_learner(resolve_config("protonet", "clinc150-5w1s",
                                              overrides={"encoder": str(text_env), "distance": "cosine"}))
    assert isinstance(learner, ProtoNet) and learner.distance == "cosine"


@pytest.mark.usefixtures("clinc_data")
def test_leo_features_are_scaled(text_env):
    """LEO reads the frozen unit-norm embeddings × feature_scale (its preset: 4), in episodes and in
    ``encode_inputs`` (what ``adapt`` feeds it) alike."""
    bench = get_benchmark("clinc150-5w1s")
    for sets, norm in (({}, 4.0), ({"feature_scale": 2.5}, 2.5)):
        cfg = resolve_config("leo", "clinc150-5w1s", overrides={"encoder": str(text_env), **sets})
        batch = bench.test_tasks(cfg).batch(0, 1)
        assert batch.support_x.shape == (1, 5, 16)
        torch.testing.assert_close(batch.support_x.norm(dim=-1), torch.full((1, 5), norm))
        feats = bench.encode_inputs(cfg, ["book a flight to rome", "what is my balance"], Path("."))
        torch.testing.assert_close(feats.norm(dim=-1), torch.full((2,), norm))
    with pytest.raises(MetaloopError, match="feature_scale"):
        resolve_config("leo", "clinc150-5w1s", overrides={"feature_scale": 0})


@pytest.mark.usefixtures("clinc_data")
def test_all_way_test_episodes(text_env):
    cfg = resolve_config("protonet", "clinc150-allw10s", overrides={"encoder": str(text_env)})
    batch = get_benchmark("clinc150-allw10s").test_tasks(cfg).batch(0, 1)
    assert batch.support_x.shape == (1, 450, 2, 64) and batch.support_x.dtype == torch.int64
    assert batch.query_x.shape == (1, 225, 2, 64)
    assert sorted(batch.support_y[0].unique().tolist()) == list(range(45))


# -------------------------------------------------------------------------------------- CLI runs, CLINC150

RUN_SETS = {"iterations": 2, "meta_batch_size": 1, "eval_episodes": 2, "log_every": 1, "checkpoint_every": 2,
            "queries": 2, "eval_queries": 3}
ALGO_SETS = {
    "maml": {"inner_steps": 1, "test_inner_steps": 2, "eval_steps": "[0,2]"},
    "protonet": {},
    "metaoptnet-ridge": {},
    "leo": {"inner_steps": 1, "test_inner_steps": 1, "eval_steps": "[0,1]"},
}


@pytest.mark.usefixtures("clinc_data")
@pytest.mark.parametrize("algo", list(ALGO_SETS))
def test_train_and_eval_on_clinc150(algo, text_env, tmp_path, cli):
    run = tmp_path / "run"
    code, out, err = cli("train", "--algo", algo, "--benchmark", "clinc150-5w1s", "--out", run, "--quiet",
                         *sets(encoder=text_env, **RUN_SETS, **ALGO_SETS[algo]))
    assert code == 0, err
    assert (run / "checkpoint-2.safetensors").is_file()
    code, out, err = cli("eval", run, "--json", "--no-plots")
    assert code == 0, err
    result = json.loads(out)
    assert (result["algo"], result["benchmark"], result["episodes"], result["iteration"]) == (
        algo, "clinc150-5w1s", 2, 2)
    steps = {"maml": ["0", "2"], "leo": ["0", "1"]}.get(algo, ["0"])
    assert list(result["steps"]) == steps
    for s in steps:
        assert 0 <= result["steps"][s]["mean"] <= 100


@pytest.mark.usefixtures("clinc_data")
def test_bad_encoder_folder_is_a_cli_error(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path / "cache"))
    code, _, err = cli("train", "--algo", "protonet", "--benchmark", "clinc150-5w1s", "--out",
                       tmp_path / "run", "--quiet", *sets(encoder=tmp_path, **RUN_SETS))
    assert_one_line_error(code, err, "is not 'minilm' nor a Hugging Face model folder")


@pytest.mark.usefixtures("clinc_data")
def test_option_errors_are_cli_errors(text_env, tmp_path, cli):
    """Options the encoder cannot run with fail in one line, not deep inside transformers."""
    for options, needle in [
        ({"path": "vmap"}, "option 'path': the text encoder runs on path=loop only"),
        ({"max_length": 100}, "option 'max_length': 100 tokens, but the encoder has 64 positions"),
        ({"train_encoder": "lora", "lora_rank": 0}, "option 'lora_rank'"),
    ]:
        code, _, err = cli("train", "--algo", "protonet", "--benchmark", "clinc150-5w1s", "--out",
                           tmp_path / "run", "--quiet", *sets(encoder=text_env, **RUN_SETS, **options))
        assert_one_line_error(code, err, needle)
        assert not (tmp_path / "run" / "checkpoint.json").exists()


@pytest.mark.usefixtures("clinc_data")
def test_unknown_train_source(text_env):
    cfg = resolve_config("protonet", "clinc150-5w1s", overrides={"encoder": str(text_env),
                                                                 "train_sources": "clinc150,imdb"})
    with pytest.raises(MetaloopError, match="option 'train_sources': unknown source 'imdb'"):
        get_benchmark("clinc150-5w1s").train_tasks(cfg)


# ------------------------------------------------------------------------------------------- text:FILE

WORDS = "book flight rome paris cancel card bank money weather rain alarm music pizza dinner email mom".split()


def write_texts(path, classes, per_class, split=None, seed=0):
    rng = random.Random(seed)
    rows = []
    for c in classes:
        for _ in range(per_class):
            row = {"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))), "label": c}
            if split is not None:
                row["split"] = split
            rows.append(row)
    return rows


def save_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


USER_SETS = {"ways": 3, "shots": 1, "queries": 1, "eval_queries": 1, "iterations": 2, "meta_batch_size": 1,
             "eval_episodes": 2, "log_every": 1, "checkpoint_every": 2}


def test_user_file_with_split_column(text_env, tmp_path, cli):
    rows = (write_texts(tmp_path, [f"train{i}" for i in range(4)], 3, "train", seed=1)
            + write_texts(tmp_path, ["alpha", "beta", "gamma"], 2, "test", seed=2))
    data = save_csv(tmp_path / "mine.csv", rows)
    from metaloop.benchmarks.text import _texts

    columns = ("text", "label", "split")
    train = _texts(f"text:{data}", "train", None, None, columns)
    test = _texts(f"text:{data}", "test", None, None, columns)
    assert train.classes == [f"train{i}" for i in range(4)] and len(train) == 12
    assert test.classes == ["alpha", "beta", "gamma"] and test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert test.texts == [r["text"] for r in rows[12:]]
    run = tmp_path / "run"
    code, _, err = cli("train", "--algo", "protonet", "--benchmark", f"text:{data}", "--out", run,
                       "--quiet", *sets(encoder=text_env, **USER_SETS))
    assert code == 0, err
    code, out, err = cli("eval", run, "--json", "--no-plots")
    assert code == 0, err
    assert json.loads(out)["benchmark"] == f"text:{data}"


def test_user_file_without_split_column(text_env, tmp_path, cli, request):
    data = save_csv(tmp_path / "mine.csv", write_texts(tmp_path, ["alpha", "beta", "gamma"], 2))
    code, _, err = cli("train", "--algo", "protonet", "--benchmark", f"text:{data}", "--out",
                       tmp_path / "run", "--quiet", *sets(encoder=text_env, **USER_SETS))
    assert_one_line_error(code, err, "no 'split' column, so meta-training needs --set train_sources=")
    request.getfixturevalue("clinc_data")
    code, _, err = cli("train", "--algo", "protonet", "--benchmark", f"text:{data}", "--out",
                       tmp_path / "run2", "--quiet", *sets(encoder=text_env, train_sources="clinc150", **USER_SETS))
    assert code == 0, err
    code, out, err = cli("eval", tmp_path / "run2", "--json", "--no-plots")
    assert code == 0, err


def test_user_file_errors(text_env, tmp_path, cli):
    code, _, err = cli("train", "--algo", "protonet", "--benchmark", f"text:{tmp_path / 'none.csv'}",
                       "--out", tmp_path / "run", "--quiet")
    assert_one_line_error(code, err, "none.csv does not exist")
    # a split column with a blank cell is an error about that cell, not a file without splits
    rows = write_texts(tmp_path, ["a", "b", "c"], 2, "train") + write_texts(tmp_path, ["d", "e", "f"], 2, "test")
    rows[7]["split"] = ""
    data = save_csv(tmp_path / "holes.csv", rows)
    for split in ("train", "test"):
        cfg = resolve_config("protonet", f"text:{data}", overrides={"encoder": str(text_env)})
        from metaloop.benchmarks.text import _texts

        with pytest.raises(MetaloopError, match=r"holes.csv:9: empty label in column 'split'"):
            _texts(f"text:{data}", split, None, None, (cfg["text_column"], "label", "split"))


# ---------------------------------------------------------------------- text:FILE inputs that inflate accuracy


def metaloop_warnings(call, *args, **kwargs) -> list[str]:
    """The MetaloopWarning messages of ``call(*args, **kwargs)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call(*args, **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, MetaloopWarning)]


@pytest.mark.parametrize("option", ["ways", "train_ways"])
def test_one_way_text_tasks_are_refused(text_env, tmp_path, option):
    data = save_csv(tmp_path / "mine.csv", write_texts(tmp_path, ["a", "b"], 2, "train") + write_texts(
        tmp_path, ["c", "d"], 2, "test"))
    for name in ("clinc150-5w1s", f"text:{data}"):
        cfg = resolve_config("protonet", name, overrides={"encoder": str(text_env), option: 1})
        with pytest.raises(MetaloopError, match=rf"option '{option}': {option}=1 gives 1-way tasks, which have one "
                                                r"possible answer \(accuracy is 100 % whatever the model\)"):
            build_learner(cfg)


def test_user_file_test_rows_that_are_training_rows_warn(text_env, tmp_path):
    """The test rows are a copy of the training rows: meta-training warns that the test classes are training
    classes and that the test texts are training texts, once each, naming the file and the split."""
    train = [{"text": f"{c} says hello number {i}", "label": c, "split": "train"} for c in "xyz" for i in range(3)]
    data = save_csv(tmp_path / "same.csv", train + [{**r, "split": "test"} for r in train])
    from metaloop import train as train_run

    messages = sorted(metaloop_warnings(train_run, "protonet", f"text:{data}", tmp_path / "run", progress=False,
                                        overrides={"encoder": str(text_env), **USER_SETS, "iterations": 1}))
    where = f"(test: the split=test rows of {data}; training: the split=train rows of {data})"
    assert messages == [
        (f"benchmark 'text:{data}': 3 of the 3 test classes (x, y, z) are also training classes {where}; "
         "meta-testing is meant to be on classes not seen in meta-training, and accuracy on seen classes is inflated"),
        (f"benchmark 'text:{data}': 9 of the 9 test texts are identical to training texts {where}, e.g. 'x says "
         "hello number 0'; the model has seen them in meta-training, which inflates accuracy"),
    ]
    # one shared class name is enough to warn; disjoint splits do not warn
    other = [{"text": f"{c} writes {i}", "label": c, "split": "test"} for c in ("x", "u", "v") for i in range(2)]
    data = save_csv(tmp_path / "one.csv", train + other)
    cfg = resolve_config("protonet", f"text:{data}", overrides={"encoder": str(text_env), **USER_SETS})
    bench = get_benchmark(f"text:{data}")
    assert metaloop_warnings(bench.check_splits, cfg) == [(
        f"benchmark 'text:{data}': 1 of the 3 test classes (x) is also a training class (test: the split=test rows "
        f"of {data}; training: the split=train rows of {data}); meta-testing is meant to be on classes not seen in "
        "meta-training, and accuracy on seen classes is inflated")]
    other = [{**r, "label": r["label"] + "2"} for r in other]
    data = save_csv(tmp_path / "disjoint.csv", train + other)
    cfg = resolve_config("protonet", f"text:{data}", overrides={"encoder": str(text_env), **USER_SETS})
    assert metaloop_warnings(get_benchmark(f"text:{data}").check_splits, cfg) == []


def test_user_file_repeated_test_texts_warn(text_env, tmp_path):
    """The same text twice in a test class (case and spacing aside): loading the test split warns once,
    counting the repeated texts; a text under two labels is not counted (it cannot be answered by copying)."""
    rows = [("book a flight", "travel"), ("Book a  flight", "travel"), ("fly to rome", "travel"),
            ("play music", "music"), ("play music", "music"), ("play music", "music"), ("sing", "music"),
            ("hello", "greet"), ("hello", "music"), ("hi there", "greet")]
    data = save_csv(tmp_path / "repeats.csv", [{"text": t, "label": label} for t, label in rows])
    from metaloop.benchmarks.text import _texts
    from metaloop.data import file_stamp

    columns = ("text", "label", "split")
    assert metaloop_warnings(_texts, f"text:{data}", "test", None, None, columns, file_stamp(data)) == [(
        f"benchmark 'text:{data}': 2 texts appear more than once in a class of the test split ({data}), e.g. "
        "'book a flight' and 'Book a  flight' (compared ignoring case and spacing); an episode may put one copy "
        "in the support set and another in the query set, which inflates accuracy")]
    cfg = resolve_config("protonet", f"text:{data}", overrides={"encoder": str(text_env), **USER_SETS})
    assert metaloop_warnings(lambda: get_benchmark(f"text:{data}").test_tasks(cfg).batch(0, 3)) == []  # loaded once


def test_named_text_benchmark_does_not_warn(text_env, clinc_data, tmp_path):
    """CLINC150's test domains are held out of meta-training: training on it warns of nothing."""
    from metaloop import train as train_run

    assert metaloop_warnings(train_run, "protonet", "clinc150-5w1s", tmp_path / "run", progress=False,
                             overrides={"encoder": str(text_env), **USER_SETS, "iterations": 1}) == []


def test_user_file_test_split_is_checked_before_training(text_env, tmp_path, cli, monkeypatch):
    """Test tasks need shots + eval_queries texts per class: a test split that is too small is refused
    before any training (the message names eval_queries), eval may lower eval_queries later, and the run
    keeps the file's absolute path, so that eval and adapt work from any working directory."""
    rows = (write_texts(tmp_path, [f"train{i}" for i in range(4)], 3, "train", seed=1)
            + write_texts(tmp_path, ["alpha", "beta", "gamma"], 4, "test", seed=2))
    save_csv(tmp_path / "topics.csv", rows)
    monkeypatch.chdir(tmp_path)
    small = {**USER_SETS, "eval_queries": 15}
    code, _, err = cli("train", "--algo", "protonet", "--benchmark", "text:topics.csv", "--out", "run",
                       "--quiet", *sets(encoder=text_env, **small))
    assert_one_line_error(code, err, "the test split: ")
    assert "eval_queries" in err and not (tmp_path / "run").exists()
    code, _, err = cli("train", "--algo", "protonet", "--benchmark", "text:topics.csv", "--out", "run",
                       "--quiet", *sets(encoder=text_env, **USER_SETS))
    assert code == 0, err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = cli("eval", tmp_path / "run", "--json", "--no-plots", "--set", "eval_queries=3")
    assert code == 0, err
    assert json.loads(out)["benchmark"] == f"text:{tmp_path / 'topics.csv'}"
    save_csv(elsewhere / "s.csv", [{"text": "book a flight", "label": "travel"}, {"text": "my card", "label": "bank"}])
    save_csv(elsewhere / "q.csv", [{"text": "fly to rome"}])
    code, out, err = cli("adapt", tmp_path / "run", "--support", "s.csv", "--query", "q.csv", "--min-shots", "1")
    assert code == 0, err
    assert out.splitlines()[0] == "text,prediction,score"


def test_an_edited_user_file_is_read_again(text_env, tmp_path):
    """The in-process caches of text:FILE key on the file's size and modification time."""
    from metaloop.benchmarks import get_benchmark

    data = save_csv(tmp_path / "mine.csv", write_texts(tmp_path, ["alpha", "beta", "gamma"], 2, "test", seed=2)
                    + write_texts(tmp_path, ["x", "y", "z"], 2, "train", seed=3))
    cfg = resolve_config("protonet", f"text:{data}", overrides={"encoder": str(text_env), **USER_SETS})
    bench = get_benchmark(f"text:{data}")
    assert len(bench.test_tasks(cfg).class_ids) == 3
    save_csv(data, write_texts(tmp_path, ["alpha", "beta", "gamma", "delta"], 2, "test", seed=2)
             + write_texts(tmp_path, ["x", "y", "z"], 2, "train", seed=3))
    os.utime(data, ns=(os.stat(data).st_atime_ns, os.stat(data).st_mtime_ns + 10**9))
    assert len(bench.test_tasks(cfg).class_ids) == 4
