"""A catalogue of bad inputs, across the commands: each exits with code 2, prints one line that names the
problem, and changes no file (options, YAML, run directories, corrupt checkpoints, malformed CSV/JSONL, files
that are not images, empty folders, encodings, huge values)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metaloop.cli import main

TINY = ["iterations=10", "hidden=[8]", "eval_episodes=5", "log_every=5", "checkpoint_every=5", "meta_batch_size=2"]


def sets(items) -> list[str]:
    return [a for s in items for a in ("--set", s)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("bad") / "run"
    assert main(["train", "--algo", "maml", "--benchmark", "sinusoid", "--out", str(run), "--quiet", *sets(TINY)]) == 0
    return run


@pytest.fixture
def ws(trained: Path, tmp_path: Path) -> Path:
    """A workspace: a copy of the trained run as ``run``, and room for files."""
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path


def write(ws: Path, name: str, data: str | bytes) -> Path:
    path = ws / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def images(ws: Path, name: str = "imgs", classes: int = 3, per_class: int = 3, *, test: bool = True) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test") if test else ("train",):
        for c in range(classes):
            folder = ws / name / split / f"{split}{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(folder / f"{i}.png")
    return ws / name


def pointer(ws: Path, **changes) -> Path:
    path = ws / "run" / "checkpoint.json"
    record = json.loads(path.read_text())
    record.update(changes)
    for key, value in changes.items():
        if value is None:
            del record[key]
    path.write_text(json.dumps(record))
    return ws / "run"


def train(*extra: str, out: str = "new", benchmark: str = "sinusoid", algo: str = "maml") -> Callable[[Path], list]:
    return lambda ws: ["train", "--algo", algo, "--benchmark", benchmark, "--out", ws / out, "--quiet", *extra]


def train_with(build: Callable[[Path], list]) -> Callable[[Path], list]:
    return build


def adapt_text(support: str, query: str = "text\nhello\n", **kw) -> Callable[[Path], list]:
    def argv(ws: Path) -> list:
        return ["adapt", ws / "run", "--support", write(ws, kw.get("sname", "s.csv"), support),
                "--query", write(ws, kw.get("qname", "q.csv"), query), *kw.get("extra", [])]
    return argv


CASES: list = [
    # ----------------------------------------------------------------------------------------- options
    (train("--set", "nosuch=1"), "nosuch"),
    (train("--set", "iterations=abc"), "iterations"),
    (train("--set", "iterations=0"), "iterations"),
    (train("--set", "iterations=-3"), "iterations"),
    (train("--set", "iterations=1000000000000"), "at most"),
    (train("--set", "inner_lr=inf"), "finite"),
    (train("--set", "inner_lr=.nan"), "finite"),
    (train("--set", "outer_lr=0"), "outer_lr"),
    (train("--set", "shots=0"), "shots"),
    (train("--set", "shots=10000000"), "at most"),
    (train("--set", "meta_batch_size=1000000000"), "at most"),
    (train("--set", "inner_steps=100000"), "at most"),
    (train("--set", "time_budget=1e12"), "at most"),
    (train("--set", "seed=-1"), "seed"),
    (train("--set", "seed=100000000000000000000"), "seed"),
    (train("--set", "hidden=[1000000,1000000]"), "hidden"),
    (train("--set", "hidden=[0]"), "hidden"),
    (train("--set", "hidden=abc"), "hidden"),
    (train("--set", "path=sideways"), "path"),
    (train("--set", "bn_mode=sometimes"), "bn_mode"),
    (train("--set", "device=tpu"), "device"),
    (train("--set", "first_order=maybe"), "first_order"),
    (train("--set", "iterations"), "expected key=value"),
    (train("--set", "inner_lr=[0.1"), "not valid YAML"),
    (train(algo="nosuch"), "nosuch"),
    (train(benchmark="nosuch"), "nosuch"),
    (train(algo="protonet"), "regression"),
    (train(algo="metaicl"), "language-model benchmark"),
    (train("--bogus-flag"), "--bogus-flag"),
    # --------------------------------------------------------------------------------------------- YAML
    (lambda ws: train("--config", write(ws, "c.yaml", "shots: [1\n"))(ws), "malformed YAML"),
    (lambda ws: train("--config", write(ws, "c.yaml", "- 1\n- 2\n"))(ws), "mapping"),
    (lambda ws: train("--config", write(ws, "c.yaml", "nosuch: 1\n"))(ws), "nosuch"),
    (lambda ws: train("--config", write(ws, "c.yaml", "shots: 5\nshots: 6\n"))(ws), "appears twice"),
    (lambda ws: train("--config", write(ws, "c.yaml", "shots: 5 # caf\xe9".encode("latin-1")))(ws), "UTF-8"),
    (lambda ws: train("--config", write(ws, "c.yaml", "shots: 5\n".encode("utf-16")))(ws), "UTF-8"),
    (lambda ws: train("--config", ws / "missing.yaml")(ws), "missing.yaml"),
    # -------------------------------------------------------------------------------------- run directories
    (train(out="run"), "already holds a metaloop run"),
    (train("--resume", "--set", "inner_lr=0.5", "--set", "hidden=[8]", out="run"), "different run"),
    (lambda ws: train(out=str(write(ws, "afile", "x")))(ws), "not a directory"),
    (lambda ws: train(out=str(write(ws, "afile", "x") / "run"))(ws), "is a file"),
    (lambda ws: ["eval", ws / "nowhere"], "does not exist"),
    (lambda ws: ["eval", write(ws, "plain/notes.txt", "x").parent], "not a metaloop run"),
    (lambda ws: ["eval", ws / "run", "--steps", "-1"], "--steps"),
    (lambda ws: ["eval", ws / "run", "--steps", "1,,2"], "--steps"),
    (lambda ws: ["eval", ws / "run", "--steps", "5,5"], "twice"),
    (lambda ws: ["eval", ws / "run", "--episodes", "0"], "--episodes"),
    (lambda ws: ["eval", ws / "run", "--episodes", "100000000000"], "at most"),
    (lambda ws: ["eval", ws / "run", "--set", "inner_lr=0.5"], "changes what is trained"),
    # ---------------------------------------------------------------------------------- corrupt checkpoints
    (lambda ws: ["eval", pointer(ws, iteration=-5)], "field 'iteration'"),
    (lambda ws: ["eval", pointer(ws, iteration="ten")], "field 'iteration'"),
    (lambda ws: ["eval", pointer(ws, elapsed_seconds=None)], "field 'elapsed_seconds'"),
    (lambda ws: ["eval", pointer(ws, sha256="0" * 64)], "sha256"),
    (lambda ws: ["eval", pointer(ws, file="../elsewhere")], "field 'file'"),
    (lambda ws: ["eval", write(ws, "run/checkpoint.json", "{not json").parent], "checkpoint"),
    (lambda ws: (write(ws, "run/config.yaml", (ws / "run" / "config.yaml").read_text()
                       .replace("algo: maml", "algo: fomaml")), ["eval", ws / "run"])[1], "option 'algo'"),
    (lambda ws: (write(ws, "run/config.yaml", (ws / "run" / "config.yaml").read_text()
                       .replace("inner_lr: 0.01", "inner_lr: 0.5")), ["eval", ws / "run"])[1], "option 'inner_lr'"),
    (lambda ws: ([p.unlink() for p in (ws / "run").glob("checkpoint-*.safetensors")], ["eval", ws / "run"])[1],
     "missing checkpoint file"),
    # ------------------------------------------------------------------------- malformed CSV / JSONL (adapt)
    (adapt_text("text,label\nhi,a\n"), "adapt needs a classifier"),
    (lambda ws: ["adapt", ws / "run", "--support", ws / "none.csv", "--query", ws / "none.csv"], "does not exist"),
    (lambda ws: ["adapt", ws / "run", "--support", write(ws, "s.txt", "x"), "--query", write(ws, "q.csv", "text\n")],
     "unknown file type"),
    (lambda ws: ["adapt", ws / "run", "--support", write(ws, "s.jsonl", "{not json}\n"),
                 "--query", write(ws, "q.csv", "text\nhi\n")], "invalid JSON"),
    (lambda ws: ["adapt", ws / "run", "--support", write(ws, "s.csv", "text,label\n\"a,b\",c,d\n"),
                 "--query", write(ws, "q.csv", "text\nhi\n")], "more fields"),
    (lambda ws: ["adapt", ws / "run", "--support", write(ws, "s.csv", b"text,label\nhi\x00,a\n"),
                 "--query", write(ws, "q.csv", "text\nhi\n")], "NUL byte"),
    (lambda ws: ["adapt", ws / "run", "--support", write(ws, "s.csv", "text,label,text\nhi,a,b\n"),
                 "--query", write(ws, "q.csv", "text\nhi\n")], "appears twice"),
    (lambda ws: ["adapt", ws / "run", "--support", write(ws, "s.csv", b"text,label\n\xff\xfe,a\n"),
                 "--query", write(ws, "q.csv", "text\nhi\n")], "not UTF-8"),
    (lambda ws: ["adapt", ws / "run", "--support", write(ws, "s.csv", "text,label\nhi,a\n"),
                 "--query", write(ws, "q.csv", "text\nhi\n"), "--out", ws / "run" / "metrics.jsonl"], "run directory"),
    (lambda ws: ["adapt", ws / "run", "--support", write(ws, "s.csv", "text,label\nhi,a\n"),
                 "--query", write(ws, "q.csv", "text\nhi\n"), "--out", ws / "s.csv"], "support file"),
    (lambda ws: ["adapt", ws / "run", "--support", write(ws, "s.csv", "text,label\nhi,a\n"),
                 "--query", write(ws, "q.csv", "text\nhi\n"), "--out", ws / "p.txt"], ".csv or .jsonl"),
    # ------------------------------------------------------------------------------ images and empty folders
    (lambda ws: train(benchmark=f"images:{write(ws, 'empty/train/.keep', '').parent.parent}", algo="protonet")(ws),
     "class"),
    (lambda ws: train(benchmark=f"images:{images(ws, test=False)}", algo="protonet", *sets(["ways=2", "queries=1", "eval_queries=1"]))(ws), "test"),
    (lambda ws: train(benchmark=f"images:{images(ws)}", algo="protonet", *sets(["ways=5", "queries=1", "eval_queries=1"]))(ws), "ways"),
    (lambda ws: train(benchmark=f"images:{images(ws)}", algo="maml", *sets(["image_size=8", "ways=2", "queries=1", "eval_queries=1"]))(ws),
     "image_size"),
    (lambda ws: (write(ws, "imgs/train/train0/bad.png", b"not an image"),
                 train(benchmark=f"images:{images(ws)}", algo="protonet", *sets(["ways=2", "queries=1", "eval_queries=1"]))(ws))[1], "bad.png"),
    (lambda ws: train(benchmark=f"images:{ws / 'nowhere'}", algo="protonet")(ws), "no such folder"),
    (lambda ws: train(benchmark=f"images:{images(ws)}", algo="protonet", *sets(["ways=1", "queries=1", "eval_queries=1"]))(ws), "1-way"),
    # ----------------------------------------------------------------------------------------- other commands
    (lambda ws: ["compare", "--benchmark", "sinusoid", "--algos", "maml,bogus", "--out", ws / "c"], "bogus"),
    (lambda ws: ["compare", "--benchmark", "sinusoid", "--algos", "maml", "--budget", "soon", "--out", ws / "c"],
     "--budget"),
    (lambda ws: ["compare", "--benchmark", "sinusoid", "--algos", "maml", "--set", "iterations=abc", "--out", ws / "c"],
     "iterations"),
    (lambda ws: ["data", "download", "nosuch"], "unknown dataset"),
    (lambda ws: ["data", "download", "hwu64", "--to", ws / "d"], "cannot be downloaded"),
]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize(("build", "needle"), CASES, ids=[f"case{i:02d}" for i in range(len(CASES))])
def test_bad_input(ws: Path, capsys, build, needle):
    argv = [str(a) for a in build(ws)]  # the case may prepare files (its inputs): the snapshot comes after
    before = snapshot(ws)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.startswith("metaloop: error: ") and err.count("\n") == 1, err
    assert needle in err, (needle, err)
    assert snapshot(ws) == before
    assert not (ws / "new").exists() and not (ws / "c").exists()
