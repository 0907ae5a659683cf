"""`metaloop adapt` and :class:`metaloop.adaptation.Adapter`: adapt a trained run to the user's labelled
texts (or images) and predict; every mistake in the files is a one-line error with exit code 2."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import metaloop
from metaloop.adaptation import Adapter, adapt_files
from metaloop.data import data_root
from metaloop.errors import MetaloopError, MetaloopWarning

TEXT_SETS = {"iterations": 1, "meta_batch_size": 1, "queries": 2, "eval_episodes": 1, "log_every": 1,
             "checkpoint_every": 1}
SUPPORT = [("book a flight to rome", "travel"), ("fly me to paris", "travel"),
           ("transfer money to my bank", "banking"), ("what is my bank balance", "banking"),
           ("play a song please", "music"), ("play music", "music")]
QUERIES = ["Book a flight to Rome!", "TRANSFER money to my bank.", "play a song please?"]
EXPECTED = ["travel", "banking", "music"]


def _train(factory, cache, encoder, algo, overrides, name):
    out = factory.mktemp(name) / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METALOOP_CACHE", str(cache))
        return metaloop.train(algo, "clinc150-5w1s", out, overrides={"encoder": str(encoder), **TEXT_SETS,
                                                                     **overrides}, progress=False)


@pytest.fixture(scope="module")
def proto_run(clinc_data, tiny_bert, text_cache, tmp_path_factory):
    return _train(tmp_path_factory, text_cache, tiny_bert, "protonet", {}, "proto")


@pytest.fixture(scope="module")
def maml_run(clinc_data, tiny_bert, text_cache, tmp_path_factory):
    return _train(tmp_path_factory, text_cache, tiny_bert, "maml",
                  {"inner_steps": 1, "test_inner_steps": 3, "inner_lr": 0.5}, "maml")


@pytest.fixture(scope="module")
def leo_run(clinc_data, tiny_bert, text_cache, tmp_path_factory):
    return _train(tmp_path_factory, text_cache, tiny_bert, "leo", {"inner_steps": 1, "test_inner_steps": 2}, "leo")


@pytest.fixture(scope="module")
def omniglot_run(tmp_path_factory):
    try:
        present = (data_root() / "omniglot" / "images_background.zip").exists()
    except MetaloopError:
        present = False
    if not present:
        pytest.skip("Omniglot not found under the data root")
    return metaloop.train("maml", "omniglot-5w1s", tmp_path_factory.mktemp("omniglot") / "run",
                          overrides={"filters": 4, "iterations": 1, "meta_batch_size": 1, "queries": 1,
                                     "eval_episodes": 1, "log_every": 1, "checkpoint_every": 1}, progress=False)


def assert_one_line_error(result, needle) -> None:
    code, out, err = result
    assert code == 2, (out, err)
    assert err.startswith("metaloop: error: ") and err.count("\n") == 1, err
    assert needle in err, err


def write_csv(path, rows, fields=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        writer.writerows(rows)
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ Python API


def test_adapter_predicts_near_duplicates(proto_run):
    adapter = Adapter(proto_run)
    assert adapter.min_shots == 1 and adapter.input_column == "text"
    with pytest.raises(MetaloopError, match="call fit"):
        adapter.predict(["book a flight"])
    adapter.fit([t for t, _ in SUPPORT], [label for _, label in SUPPORT])
    assert adapter.classes == ["banking", "music", "travel"]
    assert [label for label, _ in adapter.predict(QUERIES)] == EXPECTED
    probs = adapter.predict_proba(QUERIES + ["cancel my card"])
    assert probs.shape == (4, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    assert adapter.predict([]) == []
    # a second fit replaces the first (other labels)
    adapter.fit(["set an alarm", "play music"], ["alarm", "music"])
    assert adapter.classes == ["alarm", "music"] and adapter.predict(["PLAY music"])[0][0] == "music"


def test_adapter_on_maml_run(maml_run):
    """The gradient-based family adapts head + LoRA with the run's inner loop; fewer labels than ways."""
    fast = Adapter(maml_run).fit([t for t, _ in SUPPORT], [label for _, label in SUPPORT])
    assert fast.learner.test_inner_steps == 3 and {label for label, _ in fast.predict(QUERIES)} <= set(EXPECTED)
    # a random tiny encoder needs more steps than the run's 3 to fit the support (--steps)
    adapter = Adapter(maml_run, steps=50).fit([t for t, _ in SUPPORT], [label for _, label in SUPPORT])
    assert not torch.equal(adapter._state["head.weight"], fast._state["head.weight"])
    predictions = adapter.predict(QUERIES)
    assert [label for label, _ in predictions] == EXPECTED
    assert all(0 < p <= 1 for _, p in predictions)
    torch.testing.assert_close(adapter.predict_proba(QUERIES).sum(-1), torch.ones(3))
    with pytest.raises(MetaloopError) as e:
        adapter.fit([f"text {i}" for i in range(6)], list("abcdef"))
    assert "its classifier head has 5 outputs, but support has 6 labels" in str(e.value)


def test_adapter_on_leo_run(leo_run):
    """LEO works on the frozen encoder's unit-norm features × the run's feature_scale (LEO's preset: 4),
    which adapt computes from the raw texts."""
    adapter = Adapter(leo_run)
    assert adapter.cfg["feature_scale"] == 4.0
    x = adapter.bench.encode_inputs(adapter.cfg, ["BOOK a flight to ROME", "play music", "book a flight to rome"],
                                    None)
    assert x.shape == (3, 16) and x.dtype == torch.float32
    torch.testing.assert_close(x.norm(dim=-1), torch.full((3,), 4.0))
    torch.testing.assert_close(x[0], x[2])  # the same tokens (lower-cased)
    assert not torch.allclose(x[0], x[1])
    adapter.fit([t for t, _ in SUPPORT], [label for _, label in SUPPORT])
    predictions = adapter.predict(QUERIES)
    assert all(label in EXPECTED and 0 < p <= 1 for label, p in predictions)
    torch.testing.assert_close(adapter.predict_proba(QUERIES).sum(-1), torch.ones(3))


def test_adapter_fit_errors(proto_run):
    adapter = Adapter(proto_run, min_shots=2)
    with pytest.raises(MetaloopError, match="label 'a' has 1 example"):
        adapter.fit(["x y", "x z", "y"], ["b", "b", "a"])
    with pytest.raises(MetaloopError, match="need at least 2 labels"):
        adapter.fit(["x y", "x z"], ["b", "b"])
    with pytest.raises(MetaloopError, match="example 2 has an empty text"):
        adapter.fit(["x y", " ", "a", "b"], ["b", "b", "a", "a"])
    with pytest.raises(MetaloopError, match="need as many labels as inputs"):
        adapter.fit(["x y"], ["b", "a"])


# ---------------------------------------------------------------------------------- many queries, bounded memory


def test_predict_proba_in_batches_equals_one_batch(proto_run, monkeypatch):
    """Queries are encoded and predicted predict_batch at a time, with the probabilities of one batch."""
    adapter = Adapter(proto_run).fit([t for t, _ in SUPPORT], [label for _, label in SUPPORT])
    queries = QUERIES + ["cancel my card", "weather today", "set alarm", "order pizza for dinner"]
    one = adapter.predict_proba(queries)
    sizes: list[int] = []
    encode = adapter._encode
    monkeypatch.setattr(adapter, "_encode", lambda values, *a: sizes.append(len(values)) or encode(values, *a))
    adapter.predict_batch = 3
    batched = adapter.predict_proba(queries)
    assert sizes == [3, 3, 1] and batched.shape == (7, 3)
    torch.testing.assert_close(batched, one, rtol=1e-5, atol=1e-6)  # float32: the same up to rounding
    assert [label for label, _ in adapter.predict(queries[:3])] == EXPECTED


def test_predict_proba_keeps_transductive_batchnorm_queries_together(omniglot_run, tmp_path, monkeypatch):
    """Transductive BatchNorm normalizes with the statistics of the query set: one batch, whatever predict_batch."""
    rng = np.random.default_rng(2)
    paths = []
    for k in range(4):
        picture = np.full((28, 28), 255, dtype=np.uint8)
        picture[rng.random((28, 28)) < 0.25] = 0
        Image.fromarray(picture).save(tmp_path / f"{k}.png")
        paths.append(f"{k}.png")
    adapter = Adapter(omniglot_run).fit(paths[:2], ["a", "b"], base_dir=tmp_path)
    assert adapter.learner.fmodel.has_batch_norm and adapter.learner.fmodel.bn_mode == "transductive"
    one = adapter.predict_proba(paths, base_dir=tmp_path)
    sizes: list[int] = []
    encode = adapter._encode
    monkeypatch.setattr(adapter, "_encode", lambda values, *a: sizes.append(len(values)) or encode(values, *a))
    adapter.predict_batch = 1
    torch.testing.assert_close(adapter.predict_proba(paths, base_dir=tmp_path), one)
    assert sizes == [4]


#: Run in a fresh process: adapt to 77 labels × 10 shots, predict N queries, print the peak RSS in KiB. That is
#: VmHWM, the high-water mark of the process's own memory since exec; not getrusage's ru_maxrss, which starts
#: at the RSS of the parent that forked it (pytest's, hundreds of MB, enough to hide the growth).
PEAK_RSS = """
import sys
import torch
torch.set_num_threads(1)
from metaloop.adaptation import Adapter
words = "book flight rome paris fly cancel card bank balance transfer money weather today tomorrow rain".split()
def text(i):
    return f"{words[i % 15]} {words[i // 15 % 15]} {words[i // 225 % 15]} {i}"
adapter = Adapter(sys.argv[1]).fit([text(i) for i in range(770)], [f"label{i % 77}" for i in range(770)])
probs = adapter.predict_proba([text(i + 7) for i in range(int(sys.argv[2]))])
assert probs.shape == (int(sys.argv[2]), 77)
with open("/proc/self/status") as f:
    print(next(line.split()[1] for line in f if line.startswith("VmHWM:")))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS (VmHWM) from /proc/self/status")
def test_predict_memory_does_not_grow_with_queries(proto_run, text_cache):
    """Issue 20: the peak RSS at 5,000 queries is within 1.5× of that at 100, for a ProtoNet adapted to 77
    labels × 10 shots (before: the queries went in one batch and predict built a [queries, 770, d] tensor;
    with the tiny encoder 2.2×, with MiniLM 0.94 GB at 10 queries and 12.4 GB at 5,000)."""
    env = {**os.environ, "METALOOP_CACHE": str(text_cache)}
    runs = {n: subprocess.Popen([sys.executable, "-c", PEAK_RSS, str(proto_run), str(n)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (100, 5000)}
    peak = {}
    for n, proc in runs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        peak[n] = int(out.split()[-1])
    assert peak[5000] <= 1.5 * peak[100], f"peak RSS {peak[100] / 1024:.0f} MiB at 100 queries, " \
                                          f"{peak[5000] / 1024:.0f} MiB at 5000"


# ----------------------------------------------------------------------------------------- the command


def test_adapt_command_writes_csv_and_jsonl(proto_run, tmp_path, cli):
    support = write_csv(tmp_path / "support.csv", SUPPORT)
    query = write_csv(tmp_path / "query.csv", [[q] for q in QUERIES], fields=("text",))
    code, out, err = cli("adapt", proto_run, "--support", support, "--query", query, "--out", tmp_path / "p.csv")
    assert code == 0, err
    assert out == f"3 predictions written to {tmp_path / 'p.csv'}\n"
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["text"] for r in rows] == QUERIES and [r["prediction"] for r in rows] == EXPECTED
    assert all(1 / 3 < float(r["score"]) <= 1 for r in rows)

    query_jsonl = write_jsonl(tmp_path / "query.jsonl", [{"text": q, "id": i} for i, q in enumerate(QUERIES)])
    code, out, err = cli("adapt", proto_run, "--support", support, "--query", query_jsonl, "--out",
                         tmp_path / "p.jsonl")
    assert code == 0, err
    lines = (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["prediction"] for r in records] == EXPECTED
    assert [r["text"] for r in records] == QUERIES and all(set(r) == {"text", "prediction", "score"} for r in records)
    assert [r["score"] for r in records] == [float(r["score"]) for r in rows]

    code, out, err = cli("adapt", proto_run, "--support", support, "--query", query)  # no --out: CSV on stdout
    assert code == 0, err
    printed = list(csv.DictReader(out.splitlines()))
    assert printed == rows


def test_adapt_command_other_columns(proto_run, tmp_path, cli):
    support = write_jsonl(tmp_path / "s.jsonl", [{"sentence": t, "intent": lab} for t, lab in SUPPORT])
    query = write_jsonl(tmp_path / "q.jsonl", [{"sentence": q} for q in QUERIES])
    code, out, err = cli("adapt", proto_run, "--support", support, "--query", query, "--input-column", "sentence",
                         "--label-column", "intent")
    assert code == 0, err
    assert out.splitlines()[0] == "sentence,prediction,score"
    assert [r["prediction"] for r in csv.DictReader(out.splitlines())] == EXPECTED


def test_adapt_command_errors(proto_run, maml_run, tmp_path, cli):
    support = write_csv(tmp_path / "support.csv", SUPPORT)
    query = write_csv(tmp_path / "query.csv", [[q] for q in QUERIES], fields=("text",))
    run = proto_run

    assert_one_line_error(cli("adapt", run, "--support", support, "--query", query, "--min-shots", 3),
                          "label 'banking' has 2 example(s); this run needs at least 3 per label")
    holes = write_csv(tmp_path / "holes.csv", [SUPPORT[0], ("", "travel"), *SUPPORT[2:]])
    assert_one_line_error(cli("adapt", run, "--support", holes, "--query", query),
                          f"{holes}:3: empty text in column 'text'")
    empty_query = write_jsonl(tmp_path / "q.jsonl", [{"text": "play music"}, {"text": "  "}])
    assert_one_line_error(cli("adapt", run, "--support", support, "--query", empty_query),
                          f"{empty_query}:2: empty text in field 'text'")
    assert_one_line_error(cli("adapt", run, "--support", support, "--query", query, "--input-column", "sentence"),
                          f"{support}: no column 'sentence' (the run's text inputs; columns: text, label)")
    assert_one_line_error(cli("adapt", run, "--support", support, "--query", query, "--label-column", "intent"),
                          f"{support}: no column 'intent'")
    assert_one_line_error(cli("adapt", run, "--support", support, "--query", tmp_path / "nope.csv"),
                          f"file {tmp_path / 'nope.csv'} does not exist")
    assert_one_line_error(cli("adapt", run, "--support", support, "--query", query, "--out", tmp_path / "p.txt"),
                          "expected a .csv or .jsonl file")
    assert not (tmp_path / "p.txt").exists()
    assert_one_line_error(cli("adapt", tmp_path, "--support", support, "--query", query),
                          f"{tmp_path}: not a run directory (no config.yaml)")
    six = write_csv(tmp_path / "six.csv", [(f"play song {i}", f"label{i}") for i in range(6)])
    assert_one_line_error(cli("adapt", maml_run, "--support", six, "--query", query),
                          "its classifier head has 5 outputs, but")
    assert_one_line_error(cli("adapt", run, "--support", support, "--query", query, "--steps", 0),
                          "--steps")  # argparse: a positive integer
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9 au lait,drinks\n".encode("latin-1"))
    assert_one_line_error(cli("adapt", run, "--support", latin, "--query", query), f"{latin}: not UTF-8 text")
    extra = tmp_path / "extra.csv"  # a row with more fields than the header (an unquoted comma)
    extra.write_text("text,label\nbook a flight,travel\nplay, music,music\n", encoding="utf-8")
    assert_one_line_error(cli("adapt", run, "--support", extra, "--query", query),
                          f"{extra}:3: more fields than the header has columns (quote a text")


def test_adapt_command_reads_a_spreadsheet_bom(proto_run, tmp_path, cli):
    support = tmp_path / "support.csv"
    support.write_text("\ufefftext,label\n" + "".join(f"{t},{label}\n" for t, label in SUPPORT), encoding="utf-8")
    query = tmp_path / "query.csv"
    query.write_text("\ufefftext\n" + "".join(f"{q}\n" for q in QUERIES), encoding="utf-8")
    code, out, err = cli("adapt", proto_run, "--support", support, "--query", query)
    assert code == 0, err
    assert [r["prediction"] for r in csv.DictReader(out.splitlines())] == EXPECTED


def test_adapt_command_rejects_a_regression_run(tmp_path, cli):
    run = metaloop.train("maml", "sinusoid", tmp_path / "sin", overrides={"iterations": 1, "hidden": [4],
                                                                           "eval_episodes": 1}, progress=False)
    support = write_csv(tmp_path / "support.csv", SUPPORT)
    assert_one_line_error(cli("adapt", run, "--support", support, "--query", support),
                          "adapt needs a classifier; benchmark 'sinusoid' is not a classification benchmark")


# ---------------------------------------------------------------------------------------------- images


def test_adapt_image_run(omniglot_run, tmp_path, cli):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    rows = []
    for label in ("circle", "cross", "line"):
        for k in range(2):
            picture = np.full((40, 40), 255, dtype=np.uint8)  # white paper, dark strokes as in Omniglot
            picture[rng.random((40, 40)) < 0.25] = 0
            Image.fromarray(picture).save(tmp_path / "img" / f"{label}{k}.png")
            rows.append((f"img/{label}{k}.png", label))
    support = write_csv(tmp_path / "support.csv", rows, fields=("path", "label"))
    query = write_csv(tmp_path / "query.csv", [[p] for p, _ in rows[::2]], fields=("path",))
    code, out, err = cli("adapt", omniglot_run, "--support", support, "--query", query, "--out", tmp_path / "p.csv")
    assert code == 0, err
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as f:
        predictions = list(csv.DictReader(f))
    assert [p["path"] for p in predictions] == [p for p, _ in rows[::2]]
    assert all(p["prediction"] in {"circle", "cross", "line"} and 0 < float(p["score"]) <= 1 for p in predictions)

    adapter = Adapter(omniglot_run)
    assert adapter.input_column == "path"
    x = adapter.bench.encode_inputs(adapter.cfg, ["img/circle0.png"], tmp_path)
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert float(x.mean()) < 0.5  # inverted: strokes bright on a dark ground, as the training images

    text_support = write_csv(tmp_path / "text.csv", SUPPORT)
    assert_one_line_error(cli("adapt", omniglot_run, "--support", text_support, "--query", query),
                          "no column 'path' (the run's path inputs; columns: text, label)")
    missing = write_csv(tmp_path / "missing.csv", [*rows, ("img/none.png", "line")], fields=("path", "label"))
    assert_one_line_error(cli("adapt", omniglot_run, "--support", missing, "--query", query),
                          "none.png does not exist")


# ------------------------------------------------------------------------------- queries that are support examples


def test_adapt_warns_when_queries_are_support_texts(proto_run, tmp_path, cli):
    """A query that is also a support text (case and spacing aside) is answered by the support label: the
    command warns on one line, counting them, and still predicts."""
    support = write_csv(tmp_path / "support.csv", SUPPORT)
    query = write_csv(tmp_path / "query.csv", [["Book a flight  to rome"], ["play music"], ["fly me to london"]],
                      fields=("text",))
    code, out, err = cli("adapt", proto_run, "--support", support, "--query", query)
    assert code == 0, err
    assert err == (f"metaloop: warning: {query}: 2 of the 3 queries are also in the support file {support} "
                   "(compared ignoring case and spacing): their predictions are not a test of the model\n")
    assert len(out.splitlines()) == 4
    with pytest.warns(MetaloopWarning, match=r"2 of the 3 queries are also in the support file"):
        adapt_files(proto_run, support, query)
    distinct = write_csv(tmp_path / "distinct.csv", [[q] for q in QUERIES], fields=("text",))
    code, out, err = cli("adapt", proto_run, "--support", support, "--query", distinct)
    assert code == 0 and err == ""


def test_adapt_warns_when_query_images_are_support_images(omniglot_run, tmp_path, cli):
    """Image queries are compared by file content: the same file by another path, or a copy, counts."""
    rng = np.random.default_rng(1)
    (tmp_path / "img").mkdir()
    (tmp_path / "q").mkdir()
    rows = []
    for label in ("a", "b"):
        for k in range(2):
            Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8)).save(tmp_path / "img" / f"{label}{k}.png")
            rows.append((f"img/{label}{k}.png", label))
    (tmp_path / "q" / "copy.png").write_bytes((tmp_path / "img" / "b1.png").read_bytes())
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8)).save(tmp_path / "q" / "new.png")
    support = write_csv(tmp_path / "support.csv", rows, fields=("path", "label"))
    query = write_csv(tmp_path / "q" / "query.csv", [["../img/a0.png"], ["copy.png"], ["new.png"]], fields=("path",))
    code, _, err = cli("adapt", omniglot_run, "--support", support, "--query", query)
    assert code == 0, err
    assert err == (f"metaloop: warning: {query}: 2 of the 3 queries are also in the support file {support} "
                   "(identical files): their predictions are not a test of the model\n")


def test_adapt_out_never_replaces_an_input_or_a_run_file(proto_run, tmp_path, cli):
    """--out may not be the support or query file, nor a file inside a run directory, and replaces an
    existing file only with --force; what was refused is unchanged."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(proto_run, run)
    support = write_csv(tmp_path / "support.csv", SUPPORT)
    query = write_csv(tmp_path / "query.csv", [[q] for q in QUERIES], fields=("text",))
    kept = {p: p.read_bytes() for p in [support, query, run / "metrics.jsonl", run / "config.yaml"]}
    args = [run, "--support", support, "--query", query, "--out"]
    assert_one_line_error(cli("adapt", *args, support), "that is the support file")
    assert_one_line_error(cli("adapt", *args, tmp_path / "." / "query.csv", "--force"), "that is the query file")
    assert_one_line_error(cli("adapt", *args, run / "metrics.jsonl", "--force"), "inside the run directory")
    assert_one_line_error(cli("adapt", *args, run / "plots" / "p.csv"), "inside the run directory")
    assert all(p.read_bytes() == data for p, data in kept.items())
    out = tmp_path / "p.csv"
    assert cli("adapt", *args, out)[0] == 0
    first = out.read_bytes()
    out.write_text("mine\n")
    assert_one_line_error(cli("adapt", *args, out), "the file exists; --force replaces it")
    assert out.read_text() == "mine\n"
    assert cli("adapt", *args, out, "--force")[0] == 0 and out.read_bytes() == first


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_adapt_a_gpu_run_on_the_cpu(proto_run, tmp_path, cli):
    """A run trained with device=cuda adapts on a CPU-only machine with --device cpu (and says so when not)."""
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(proto_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "device": "cuda"}, sort_keys=False))
    support = write_csv(tmp_path / "support.csv", SUPPORT)
    query = write_csv(tmp_path / "query.csv", [[q] for q in QUERIES], fields=("text",))
    assert_one_line_error(cli("adapt", run, "--support", support, "--query", query), "--device cpu")
    code, out, err = cli("adapt", run, "--support", support, "--query", query, "--device", "cpu")
    assert code == 0, err
    assert [r["prediction"] for r in csv.DictReader(out.splitlines())] == EXPECTED


def test_labels_that_differ_only_by_case_or_spacing_warn(proto_run, tmp_path, cli):
    support = write_csv(tmp_path / "s.csv", [*SUPPORT, ("book it", "Travel"), ("fly it", "Travel")])
    query = write_csv(tmp_path / "q.csv", [[q] for q in QUERIES], fields=("text",))
    code, _, err = cli("adapt", proto_run, "--support", support, "--query", query)
    assert code == 0 and "metaloop: warning: " in err and "'Travel' / 'travel'" in err, err


def test_adapt_reads_a_query_field_longer_than_the_csv_default_limit(proto_run, tmp_path, cli):
    """A text of 200,000 characters (the csv module refuses fields over 131,072 by default: it was a traceback)
    is read and answered like any other; the model sees its first tokens."""
    support = write_csv(tmp_path / "support.csv", SUPPORT)
    long_text = QUERIES[0] + " " + "x" * 200_000
    query = write_csv(tmp_path / "query.csv", [[long_text], *[[q] for q in QUERIES[1:]]], fields=("text",))
    code, out, err = cli("adapt", proto_run, "--support", support, "--query", query, "--out", tmp_path / "p.csv")
    assert code == 0, err
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(QUERIES) and rows[0]["text"] == long_text and rows[0]["prediction"] in {s[1] for s in SUPPORT}
