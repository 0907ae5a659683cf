"""Few-shot text data: the four benchmarks' class splits on the real files, the user's CSV and JSON-lines
files with each error message, and mixing sources."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from metaloop.data import (
    TEXT_SOURCES,
    LabelledTexts,
    clinc150_split,
    data_root,
    fewrel_split,
    huffpost_split,
    hwu64_split,
    mixed,
    text_file,
)
from metaloop.data.fewrel import mark_entities_in
from metaloop.data.texts import SPLITS
from metaloop.errors import MetaloopError
from metaloop.tasks.episodes import EpisodicTasks

NEEDED = [
    "clinc150/data_full.json",
    "clinc150/domains.json",
    "hwu64/hwu64.csv",
    "huffpost/huffpost.json",
    "huffpost/label_names.json",
    "fewrel/val_wiki.json",
    "fewrel/pid2name.json",
]


def _real_root() -> Path | None:
    try:
        root = data_root()
    except MetaloopError:
        return None
    return root if all((root / n).is_file() for n in NEEDED) else None


DATA = _real_root()
needs_data = pytest.mark.skipif(
    DATA is None,
    reason="the text data (shared/data or $METALOOP_DATA: clinc150, hwu64, huffpost, fewrel) is absent",
)


def per_class(dataset: LabelledTexts) -> Counter:
    return Counter(dataset.labels.tolist())


# -------------------------------------------------------------------------------------- LabelledTexts


def test_labelled_texts_basics():
    d = LabelledTexts(["a b", "c", "d"], [1, 0, 1], ["x", "y"])
    assert d.labels.dtype == torch.int64 and d.labels.tolist() == [1, 0, 1]
    assert len(d) == 3 and d.num_classes == 2
    assert d[0] == ("a b", 1) and isinstance(d[0][1], int)
    assert repr(d) == "LabelledTexts(3 texts, 2 classes)"


@pytest.mark.parametrize(
    "texts, labels, classes, message",
    [
        (["a", "b"], [0], ["x"], "labels must be \\[n\\] for 2 texts"),
        (["a"], [2], ["x", "y"], "labels must lie in 0 … 1"),
        (["a"], torch.tensor([0.0]), ["x"], "integer class ids"),
        (["a", 3], [0, 0], ["x"], "text 1 is a int"),
        (["a"], [0], ["x", "x"], "class names must be unique, repeated: x"),
    ],
)
def test_labelled_texts_checks(texts, labels, classes, message):
    with pytest.raises(MetaloopError, match=message):
        LabelledTexts(texts, labels, classes)


# ----------------------------------------------------------------------------------------- benchmarks


@needs_data
def test_clinc150_domain_split():
    splits = {s: clinc150_split(s, root=DATA) for s in SPLITS}
    assert [splits[s].num_classes for s in SPLITS] == [90, 15, 45]
    assert [len(splits[s]) for s in SPLITS] == [90 * 150, 15 * 150, 45 * 150]
    for d in splits.values():
        assert set(per_class(d).values()) == {150}
        assert d.classes == sorted(d.classes) and "oos" not in d.classes
    domains = json.loads((DATA / "clinc150" / "domains.json").read_text())
    test_intents = {i for dom in ("credit_cards", "travel", "work") for i in domains[dom]}
    assert set(splits["test"].classes) == test_intents
    assert set(splits["val"].classes) == set(domains["kitchen_and_dining"])
    assert set().union(*(d.classes for d in splits.values())) == {i for v in domains.values() for i in v}
    data = json.loads((DATA / "clinc150" / "data_full.json").read_text())
    # The first training example of the file, found where it belongs (pooled train + val + test).
    text, intent = data["train"][0]
    owner = next(s for s in SPLITS if intent in splits[s].classes)
    assert splits[owner][0] == (text, splits[owner].classes.index(intent))


@needs_data
def test_hwu64_scenario_split():
    splits = {s: hwu64_split(s, root=DATA) for s in SPLITS}
    assert [splits[s].num_classes for s in SPLITS] == [42, 8, 14]
    assert sum(len(d) for d in splits.values()) == 11036
    assert splits["val"].num_classes >= 5 and splits["test"].num_classes >= 5
    for d in splits.values():
        assert min(per_class(d).values()) >= 38
    scenarios = {s: {c.split("_")[0] for c in splits[s].classes} for s in SPLITS}
    assert scenarios["test"] == {"datetime", "qa", "recommendation", "social", "takeaway"}
    assert scenarios["val"] == {"audio", "play"}
    assert not (scenarios["train"] & scenarios["val"]) and not (scenarios["train"] & scenarios["test"])
    assert len(set().union(*scenarios.values())) == 18


@needs_data
def test_huffpost_bao_split():
    splits = {s: huffpost_split(s, root=DATA) for s in SPLITS}
    assert [splits[s].num_classes for s in SPLITS] == [20, 5, 16]
    for d in splits.values():
        assert set(per_class(d).values()) == {900}
    names = json.loads((DATA / "huffpost" / "label_names.json").read_text())
    assert splits["train"].classes[0] == names["0"] == "POLITICS"
    assert splits["val"].classes[0] == names["20"] == "CRIME"
    assert splits["test"].classes[-1] == names["40"] == "EDUCATION"
    first = json.loads((DATA / "huffpost" / "huffpost.json").open().readline())  # label 20: val class 0
    assert splits["val"][0] == (first["raw"], first["label"] - 20)


@needs_data
def test_classes_disjoint_and_complete():
    for name in ("clinc150", "hwu64", "huffpost"):
        classes = [set(TEXT_SOURCES[name](s, root=DATA).classes) for s in SPLITS]
        for a in range(3):
            for b in range(a + 1, 3):
                assert not classes[a] & classes[b], (name, SPLITS[a], SPLITS[b])
        assert sum(len(c) for c in classes) == {"clinc150": 150, "hwu64": 64, "huffpost": 41}[name]


@needs_data
def test_fewrel_meta_test_only_with_entity_marks():
    test = fewrel_split("test", root=DATA)
    assert test.num_classes == 16 and len(test) == 16 * 700
    assert set(per_class(test).values()) == {700}
    assert fewrel_split("val", root=DATA).texts == test.texts
    assert "follows" in test.classes and "crosses" in test.classes
    with pytest.raises(MetaloopError, match="fewrel: no 'train' split: .*train_wiki.json.*meta-testing only"):
        fewrel_split("train", root=DATA)
    # Hand-checked: the first P155 ("follows") instance, head "Song for a Future Generation" (tokens
    # 16–20) after the tail "Whammy Kiss" (tokens 11–12).
    follows = test.classes.index("follows")
    first = test.texts[test.labels.tolist().index(follows)]
    assert first == (
        'Hot Dance Club Play chart , along with album tracks " [E2] Whammy Kiss [/E2] " and " '
        '[E1] Song for a Future Generation [/E1] " .'
    )
    # Every text: one mark of each kind, around exactly the tokens that the file gives.
    raw = json.loads((DATA / "fewrel" / "val_wiki.json").read_text())
    instances = [i for pid in sorted(raw) for i in raw[pid]]
    for text, inst in zip(test.texts, instances):
        for tag, entity in (("E1", inst["h"]), ("E2", inst["t"])):
            assert text.count(f"[{tag}]") == 1 and text.count(f"[/{tag}]") == 1
            inside = re.search(rf"\[{tag}\] (.*?) \[/{tag}\]", text).group(1)
            words = [w for w in inside.split(" ") if not re.fullmatch(r"\[/?E[12]\]", w)]
            assert words == [inst["tokens"][p] for p in entity[2][0]]
    plain = fewrel_split("test", root=DATA, mark_entities=False)
    assert plain.texts[0] == " ".join(instances[0]["tokens"]) and "[E1]" not in plain.texts[0]


def test_mark_entities_order_nesting_and_overlap():
    tokens = "a b c d e".split()
    assert mark_entities_in(tokens, [0], [3, 4]) == "[E1] a [/E1] b c [E2] d e [/E2]"
    assert mark_entities_in(tokens, [4], [1]) == "a [E2] b [/E2] c d [E1] e [/E1]"
    assert mark_entities_in(tokens, [1, 2, 3], [2]) == "a [E1] b [E2] c [/E2] d [/E1] e"  # nested
    assert mark_entities_in(tokens, [2], [1, 2, 3]) == "a [E2] b [E1] c [/E1] d [/E2] e"
    assert mark_entities_in(tokens, [2], [2]) == "a b [E1] [E2] c [/E2] [/E1] d e"  # same span
    assert mark_entities_in(tokens, [0, 1, 2], [1, 2, 3]) == "[E1] a [E2] b c [/E1] d [/E2] e"  # overlap


@pytest.mark.parametrize("loader", list(TEXT_SOURCES.values()))
def test_unknown_split(loader, tmp_path):
    with pytest.raises(MetaloopError, match="unknown split 'dev' \\(expected one of train, val, test\\)"):
        loader("dev", root=tmp_path)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("clinc150", "clinc150/data_full.json"),
        ("hwu64", "hwu64/hwu64.csv"),
        ("huffpost", "huffpost/huffpost.json"),
        ("fewrel", "fewrel/val_wiki.json"),
    ],
)
def test_missing_file_named(tmp_path, name, expected):
    with pytest.raises(MetaloopError, match=f"{name}: expected the file {expected} under the data root") as e:
        TEXT_SOURCES[name]("test", root=tmp_path)
    assert "\n" not in str(e.value)


def test_clinc150_split_file_checked_against_domains(tmp_path):
    (tmp_path / "clinc150").mkdir()
    (tmp_path / "clinc150" / "data_full.json").write_text(
        json.dumps({"train": [["hi", "greeting"]], "val": [], "test": [["x", "oos"]]})
    )
    (tmp_path / "clinc150" / "domains.json").write_text(json.dumps({"chat": ["greeting"]}))
    with pytest.raises(
        MetaloopError, match="splits/clinc150.json lists the domain .*which clinc150/domains.json"
    ):
        clinc150_split("train", root=tmp_path)


def test_root_from_environment(tmp_path, monkeypatch):
    (tmp_path / "huffpost").mkdir()
    lines = [{"raw": f"headline {i}", "label": i % 41} for i in range(82)]
    (tmp_path / "huffpost" / "huffpost.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path))
    val = huffpost_split("val")
    assert val.classes == ["20", "21", "22", "23", "24"]  # no label_names.json: the ids
    assert val.texts == [
        "headline 20",
        "headline 21",
        "headline 22",
        "headline 23",
        "headline 24",
        "headline 61",
        "headline 62",
        "headline 63",
        "headline 64",
        "headline 65",
    ]
    assert val.labels.tolist() == [0, 1, 2, 3, 4] * 2
    assert huffpost_split("val") is not val  # cached parse, fresh object


# ----------------------------------------------------------------------------------------- text_file


def test_text_file_csv(tmp_path):
    path = tmp_path / "intents.csv"
    path.write_text('utterance,intent,extra\nhello there,greet,1\n"bye, now",leave,2\n\nhi,greet,3\n')
    d = text_file(path, text_field="utterance", label_field="intent")
    assert d.texts == ["hello there", "bye, now", "hi"]
    assert d.classes == ["greet", "leave"] and d.labels.tolist() == [0, 1, 0]


def test_text_file_jsonl_int_and_string_labels(tmp_path):
    path = tmp_path / "news.jsonl"
    rows = [{"text": "a", "label": 10}, {"text": "b", "label": 2}, {"text": "c", "label": "2"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    d = text_file(path)
    assert d.classes == ["2", "10"] and d.labels.tolist() == [1, 0, 0]
    copy = tmp_path / "news.json"
    copy.write_text(path.read_text())
    assert text_file(copy).texts == ["a", "b", "c"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("t.csv", "text,label\nhi,a\n", None),
        ("t.csv", "sentence,label\nhi,a\n", "t.csv: no column 'text' \\(columns: sentence, label\\)"),
        ("t.csv", "text,lbl\nhi,a\n", "t.csv: no column 'label' \\(columns: text, lbl\\)"),
        ("t.csv", "text,label\nhi,a\n  ,b\n", "t.csv:3: empty text in column 'text'"),
        ("t.csv", "text,label\nhi,a\nho,\n", "t.csv:3: empty label in column 'label'"),
        ("t.csv", "text,label\n", "t.csv: no rows after the header"),
        ("t.jsonl", "\n", "t.jsonl: no field 'text' \\(fields: none: the file is empty\\)"),
        ("t.jsonl", '{"text": "hi", "label": 1}\n{"text": "ho", "label": 2', "t.jsonl:2: invalid JSON"),
        (
            "t.jsonl",
            '{"text": "hi", "label": 1}\n\n{"txt": "ho", "label": 2}\n',
            "t.jsonl:3: no field 'text' \\(fields: txt, label\\)",
        ),
        ("t.jsonl", '{"text": "", "label": 1}\n', "t.jsonl:1: empty text in field 'text'"),
        (
            "t.jsonl",
            '{"text": "hi", "label": 1.5}\n',
            "t.jsonl:1: field 'label' must be a string or an integer, not float",
        ),
        ("t.jsonl", '["hi", 1]\n', "t.jsonl:1: expected a JSON object, got list"),
        ("t.txt", "hi\n", "t.txt: unknown file type '.txt'"),
    ],
)
def test_text_file_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    if message is None:
        assert len(text_file(path)) == 1
        return
    with pytest.raises(MetaloopError, match=message) as e:
        text_file(path)
    assert "\n" not in str(e.value)


def test_text_file_missing(tmp_path):
    with pytest.raises(MetaloopError, match=f"text file {tmp_path / 'nope.csv'} does not exist"):
        text_file(tmp_path / "nope.csv")


# --------------------------------------------------------------------------------------------- mixed


def test_mixed_and_episodes():
    a = LabelledTexts(["a0", "a1", "a2", "a3"], [0, 1, 0, 1], ["x", "y"])
    b = LabelledTexts(["b0", "b1", "b2", "b3", "b4", "b5"], [2, 0, 1, 2, 0, 1], ["x", "p", "q"])
    m = mixed([a, b], ["one", "two"])
    assert m.classes == ["one/x", "one/y", "two/x", "two/p", "two/q"]
    assert m.texts == a.texts + b.texts and m.labels.tolist() == [0, 1, 0, 1, 4, 2, 3, 4, 2, 3]
    assert m[4] == ("b0", 4)
    tasks = EpisodicTasks(m, ways=5, shots=1, queries=1, seed=0)
    support, query = tasks.indices(0)
    assert len(set(m.labels[support].tolist())) == 5 and set(m.labels[query].tolist()) == set(range(5))
    with pytest.raises(MetaloopError, match="mixed: 2 datasets but 1 names"):
        mixed([a, b], ["one"])
    with pytest.raises(MetaloopError, match="mixed: the names must be distinct"):
        mixed([a, b], ["one", "one"])
    with pytest.raises(MetaloopError, match="mixed: no datasets given"):
        mixed([], [])


@needs_data
def test_mixed_real_sources():
    m = mixed([clinc150_split("train", root=DATA), hwu64_split("train", root=DATA)], ["clinc150", "hwu64"])
    assert m.num_classes == 90 + 42 and len(m) == 90 * 150 + 7225
    assert m.classes[0] == "clinc150/account_blocked" and m.classes[90] == "hwu64/alarm_query"
    assert m[len(m) - 1][1] >= 90


def test_text_file_rejects_an_unquoted_comma(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nbook a flight,travel\nplay, music,music\n", encoding="utf-8")
    with pytest.raises(MetaloopError, match=r"d.csv:3: more fields than the header has columns"):
        text_file(path)
