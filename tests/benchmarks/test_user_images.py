"""`--benchmark images:PATH`: the user's own image folder or CSV as a few-shot benchmark."""

import csv
import os
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

import metaloop
from metaloop.benchmarks import build_learner, get_benchmark
from metaloop.cli import main
from metaloop.errors import MetaloopError, MetaloopWarning

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
    image = folder / "test" / "b0" / "0.png"
    before = image.stat().st_mtime_ns
    _write_images(folder / "test", ["b0"], 1, seed=7)  # overwrite one test image: read again, embedded anew
    os.utime(image, ns=(before + 10**9, before + 10**9))
    bench.test_tasks(cfg)
    assert len(sorted((tmp_path / "cache" / "features").glob("images-*"))) == 2


# ------------------------------------------------------------------------- inputs that inflate accuracy
TRAIN_ONCE = {**SETS, "iterations": 1, "checkpoint_every": 1}


def _train_warnings(benchmark, out, algo="protonet", **overrides):
    """The MetaloopWarning messages of a one-iteration training run."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metaloop.train(algo, benchmark, out, overrides={**TRAIN_ONCE, **overrides}, progress=False)
    return [str(w.message) for w in caught if issubclass(w.category, MetaloopWarning)]


@pytest.mark.parametrize("option", ["ways", "train_ways"])
@pytest.mark.parametrize("algo", ["protonet", "leo"])
def test_one_way_tasks_are_refused(folder, tmp_path, option, algo):
    """A 1-way task has one possible answer: ways=1 (or train_ways=1) is an error before training starts."""
    with pytest.raises(MetaloopError, match=rf"option '{option}': {option}=1 gives 1-way tasks, which have one "
                                            r"possible answer \(accuracy is 100 % whatever the model\); use "
                                            rf"{option} ≥ 2"):
        metaloop.train(algo, f"images:{folder}", tmp_path / "run", overrides={**SETS, option: 1}, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["omniglot-5w1s", "miniimagenet-5w1s", "omniglot-lake"])
def test_one_way_named_image_benchmarks_are_refused(name):
    cfg = metaloop.resolve_config("maml", name, overrides={"ways": 1})
    with pytest.raises(MetaloopError, match=r"option 'ways': ways=1 gives 1-way tasks"):
        build_learner(cfg)


def test_copied_train_folder_as_test_folder_warns(folder, tmp_path):
    """cp -r d/train d/test: the test classes are the training classes and the test images are the training
    images; training warns once for each cause, naming the folders and why accuracy is inflated."""
    copy = tmp_path / "copy"
    shutil.copytree(folder / "train", copy / "train")
    shutil.copytree(folder / "train", copy / "test")
    messages = _train_warnings(f"images:{copy}", tmp_path / "run")
    where = f"(test: {copy / 'test'}; training: {copy / 'train'})"
    assert messages == [
        (f"benchmark 'images:{copy}': 4 of the 4 test classes (a0, a1, a2, a3) are also training classes {where}; "
         "meta-testing is meant to be on classes not seen in meta-training, and accuracy on seen classes is inflated"),
        (f"benchmark 'images:{copy}': 16 of the 16 test images are identical to training images {where}, e.g. "
         f"{copy / 'test' / 'a0' / '0.png'} and {copy / 'train' / 'a0' / '0.png'}; the model has seen them in "
         "meta-training, which inflates accuracy"),
    ]


def test_a_shared_class_name_alone_warns(folder, tmp_path):
    """A test class named as a training class warns even when its images differ; identical images do not."""
    _write_images(folder / "test", ["a1"], 4, seed=9)
    messages = _train_warnings(f"images:{folder}", tmp_path / "run")
    assert len(messages) == 1 and "1 of the 4 test classes (a1) is also a training class (test: " in messages[0]


def test_csv_test_rows_that_are_training_rows_warn(tmp_path):
    rows = _write_images(tmp_path / "img", [f"a{i}" for i in range(4)], 4, 0)
    table = tmp_path / "data.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows((p.relative_to(tmp_path), c, s) for s in ("train", "test") for p, c in rows)
    messages = _train_warnings(f"images:{table}", tmp_path / "run")
    assert len(messages) == 2, messages
    where = f"(test: the split=test rows of {table}; training: the split=train rows of {table})"
    assert "4 of the 4 test classes (a0, a1, a2, a3) are also training classes " + where in messages[0]
    assert f"16 of the 16 test images are identical to training images {where}, e.g. {rows[0][0]};" in messages[1]


def test_repeated_test_images_warn(folder, tmp_path):
    """Two identical images in a test class: an episode can put one in the support set, the other in the
    query set. Loading the test split warns once (not per episode), counting them."""
    for name in ("4.png", "5.png"):
        shutil.copy(folder / "test" / "b0" / "0.png", folder / "test" / "b0" / name)
    shutil.copy(folder / "test" / "b2" / "1.png", folder / "test" / "b2" / "4.png")
    cfg = metaloop.resolve_config("protonet", f"images:{folder}", overrides=SETS)
    bench = get_benchmark(f"images:{folder}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tasks = bench.test_tasks(cfg)
        tasks.batch(0, 5)
        bench.test_tasks(cfg)
    messages = [str(w.message) for w in caught if issubclass(w.category, MetaloopWarning)]
    test = folder / "test"
    assert messages == [(
        f"benchmark 'images:{folder}': 2 images appear more than once in a class of the test split ({test}), e.g. "
        f"{test / 'b0' / '0.png'} and {test / 'b0' / '4.png'} (identical pixels); an episode may put one copy in "
        "the support set and another in the query set, which inflates accuracy")]


def test_disjoint_user_images_do_not_warn(folder, tmp_path):
    """The usual case, train/ and test/ of other classes and images: no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", MetaloopWarning)
        run = metaloop.train("protonet", f"images:{folder}", tmp_path / "run", overrides=TRAIN_ONCE, progress=False)
        metaloop.evaluate(run, plots=False)


def test_image_size_too_small_for_the_backbone(folder, tmp_path):
    """image_size=8 cannot go through Conv-4's four poolings: one line saying so, before any training."""
    with pytest.raises(MetaloopError, match="option 'image_size': 8 is too small"):
        metaloop.train("maml", f"images:{folder}", tmp_path / "r", overrides={**SETS, "image_size": 8}, progress=False)
    assert not (tmp_path / "r").exists()


def test_missing_test_folder_or_too_few_test_classes_before_training(folder, tmp_path):
    """An image folder without test/, or with fewer test classes than ways, is refused before any training."""
    import shutil

    with pytest.raises(MetaloopError, match="the test split: .*ways=5 but the dataset has only 3 classes"):
        metaloop.train("protonet", f"images:{folder}", tmp_path / "r", overrides={**SETS, "ways": 5, "train_ways": 3},
                       progress=False)
    shutil.rmtree(folder / "test")
    with pytest.raises(MetaloopError, match="test"):
        metaloop.train("protonet", f"images:{folder}", tmp_path / "r", overrides=SETS, progress=False)
    assert not (tmp_path / "r").exists()
