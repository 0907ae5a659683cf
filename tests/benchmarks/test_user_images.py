"""`--benchmark images:PATH`: the user's own image folder or CSV as a few-shot benchmark."""

import csv

import numpy as np
import pytest
from PIL import Image

import metaloop
from metaloop.benchmarks import get_benchmark
from metaloop.cli import main

SETS = {"iterations": 2, "meta_batch_size": 1, "image_size": 16, "channels": 1, "filters": 4, "queries": 2,
        "eval_queries": 2, "shots": 1, "ways": 3, "eval_episodes": 5, "log_every": 1, "checkpoint_every": 2}


def _write_images(root, classes, per_class, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = root / c / f"{i}.png"
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(path)
            rows.append((path, c))
    return rows


@pytest.fixture
def folder(tmp_path):
    _write_images(tmp_path / "data" / "train", [f"a{i}" for i in range(4)], 4, 0)
    _write_images(tmp_path / "data" / "test", [f"b{i}" for i in range(3)], 4, 1)
    return tmp_path / "data"


def test_folder_benchmark_trains_and_evaluates(folder, tmp_path):
    """images:FOLDER with train/ and test/ class folders runs ProtoNet and MAML end to end."""
    for algo in ["protonet", "maml"]:
        run = metaloop.train(algo, f"images:{folder}", tmp_path / algo, overrides=SETS, progress=False)
        result = metaloop.evaluate(run, plots=False)
        assert result["episodes"] == 5 and all(0 <= v["mean"] <= 100 for v in result["steps"].values())


def test_csv_benchmark_reads_the_split_column(tmp_path):
    """images:FILE.csv with path,label,split columns: train rows for meta-training, test rows for testing."""
    rows = [(p, c, "train") for p, c in _write_images(tmp_path / "img", [f"a{i}" for i in range(4)], 4, 0)]
    rows += [(p, c, "test") for p, c in _write_images(tmp_path / "img", [f"b{i}" for i in range(3)], 4, 1)]
    table = tmp_path / "data.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "split"])
        writer.writerows((p.relative_to(tmp_path), c, s) for p, c, s in rows)
    overrides = {**SETS, "path_column": "file"}
    bench = get_benchmark(f"images:{table}")
    cfg = metaloop.resolve_config("protonet", f"images:{table}", overrides=overrides)
    assert len(bench.train_tasks(cfg).class_ids) == 4 and len(bench.test_tasks(cfg).class_ids) == 3
    run = metaloop.train("protonet", f"images:{table}", tmp_path / "run", overrides=overrides, progress=False)
    assert metaloop.evaluate(run, plots=False)["episodes"] == 5


@pytest.mark.parametrize("layout", ["no-test-folder", "missing-path", "no-split-column"])
def test_bad_user_data_is_a_one_line_error(tmp_path, capsys, folder, layout):
    """A missing split folder, a missing path or a CSV without the split column exits 2, naming it."""
    if layout == "no-test-folder":
        target, needle = folder / "train", "test"
    elif layout == "missing-path":
        target, needle = tmp_path / "nowhere", "no such folder"
    else:
        target, needle = tmp_path / "t.csv", "split"
        target.write_text("path,label\nx.png,a\n")
    code = main(["train", "--algo", "protonet", "--benchmark", f"images:{target}", "--out", str(tmp_path / "r"),
                 *sum((["--set", f"{k}={v}"] for k, v in SETS.items()), [])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err
    assert not (tmp_path / "r").exists()


def test_leo_on_pretrained_features_of_the_users_images(folder, tmp_path, monkeypatch):
    """LEO on images:FOLDER: a Conv-4 is pretrained on the train classes, its features cached under a
    digest of the images (a changed image is embedded anew), then LEO trains and evaluates on them."""
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path / "cache"))
    sets = {**SETS, "feature_epochs": 1, "eval_steps": [0, 1], "inner_steps": 1, "test_inner_steps": 1}
    cfg = metaloop.resolve_config("leo", f"images:{folder}", overrides=sets)
    bench = get_benchmark(f"images:{folder}")
    batch = bench.test_tasks(cfg).batch(0, 1)
    assert batch.support_x.shape == (1, 3, 4 * 1 * 1)  # filters × (16 // 16)²: the backbone's features
    run = metaloop.train("leo", f"images:{folder}", tmp_path / "run", overrides=sets, progress=False)
    assert metaloop.evaluate(run, plots=False)["episodes"] == 5
    cached = sorted((tmp_path / "cache" / "features").glob("images-*"))
    assert len(cached) == 1
    _write_images(folder / "test", ["b0"], 1, seed=7)  # overwrite one test image
    from metaloop.benchmarks import user_images

    user_images._split.cache_clear()
    bench.test_tasks(cfg)
    assert len(sorted((tmp_path / "cache" / "features").glob("images-*"))) == 2
