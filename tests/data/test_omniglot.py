"""Omniglot: the Vinyals split with rotations, Lake's one-shot runs, extraction and caching.

The tests on the real data read ``shared/data/omniglot`` (skipped, saying so, when it is absent) and use
the normal cache (``$METALOOP_CACHE`` or ``~/.cache/metaloop``), so only the first test session pays the
extraction and decoding (about 10 s). Caching, atomic extraction and the error paths are tested on a
tiny Omniglot written to ``tmp_path``.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from metaloop.data import data_root, omniglot
from metaloop.data.omniglot import lake_run_characters, load_omniglot, omniglot_split, read_split
from metaloop.errors import MetaloopError
from metaloop.tasks.episodes import EpisodicTasks
from metaloop.tasks.omniglot import lake_runs


def _real_root() -> Path | None:
    try:
        root = data_root() / "omniglot"
    except MetaloopError:
        return None
    needed = ["images_background.zip", "images_evaluation.zip", "all_runs.zip", "splits/vinyals/train.txt"]
    return root if all((root / n).exists() for n in needed) else None


REAL = _real_root()
real = pytest.mark.skipif(
    REAL is None, reason="the Omniglot data (shared/data/omniglot or $METALOOP_DATA/omniglot) is absent"
)


@pytest.fixture(scope="module")
def splits():
    return {s: omniglot_split(s) for s in ("train", "val", "test")}


@real
def test_vinyals_split_counts_and_disjoint_characters(splits):
    for split, n in [("train", 4112), ("val", 688), ("test", 1692)]:
        d = splits[split]
        assert d.num_classes == n and len(d.classes) == len(set(d.classes))
        assert d.images.shape == (20 * n, 1, 28, 28) and d.images.dtype == torch.uint8
        assert torch.equal(torch.bincount(d.labels), torch.full((n,), 20))
    characters = {s: {c.rsplit("/", 1)[0] for c in d.classes} for s, d in splits.items()}
    assert [len(characters[s]) for s in ("train", "val", "test")] == [1028, 172, 423]
    assert not characters["train"] & characters["val"]
    assert not characters["train"] & characters["test"]
    assert not characters["val"] & characters["test"]
    images, owners, names = load_omniglot()
    assert images.shape == (32460, 28, 28) and len(names) == 1623
    assert torch.equal(torch.bincount(owners), torch.full((1623,), 20))


@real
def test_images_are_28x28_inverted_and_in_unit_range(splits):
    d = splits["val"]
    assert int(d.images.min()) == 0 and int(d.images.max()) == 255
    border = torch.cat(
        [d.images[..., 0, :], d.images[..., -1, :], d.images[..., :, 0], d.images[..., :, -1]], -1
    )
    assert border.float().mean() < 5  # background 0 after inversion
    assert 0.05 < d.images.float().mean() / 255 < 0.2  # strokes (1) are a minority of the pixels
    x = d[0]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28) and 0 <= x.min() and x.max() <= 1
    batch = EpisodicTasks(d, 5, 1, 5, split="val").batch(0, 4)
    assert batch.support_x.shape == (4, 5, 1, 28, 28) and batch.query_x.shape == (4, 25, 1, 28, 28)
    assert batch.support_x.dtype == torch.float32 and 0 <= batch.query_x.min() and batch.query_x.max() <= 1


@real
def test_rotations_are_classes(splits):
    d = splits["test"]
    by_name = {c: i for i, c in enumerate(d.classes)}
    name = d.classes[0].rsplit("/", 1)[0]
    base = d.images[d.labels == by_name[f"{name}/rot000"]]
    for k, degrees in enumerate(["090", "180", "270"], 1):
        rotated = d.images[d.labels == by_name[f"{name}/rot{degrees}"]]
        assert torch.equal(rotated, torch.rot90(base, k, dims=(-2, -1)))
    assert not torch.equal(base, torch.rot90(base, 1, dims=(-2, -1)))


@real
def test_lake_runs_shapes_and_labels():
    batch = lake_runs()
    assert len(batch) == 20
    assert batch.support_x.shape == (20, 20, 1, 28, 28) and batch.query_x.shape == (20, 20, 1, 28, 28)
    assert torch.equal(batch.support_y, torch.arange(20).expand(20, 20))
    assert torch.equal(batch.query_y.sort(dim=1).values, torch.arange(20).expand(20, 20))  # each class once
    assert torch.equal(batch.info["run"], torch.arange(1, 21))
    assert 0 <= batch.query_x.min() and batch.query_x.max() <= 1 and batch.query_x.mean() < 0.2
    # The labels read independently from each run's class_labels.txt, whose lines are
    # "runNN/test/itemMM.png runNN/training/classKK.png".
    with zipfile.ZipFile(REAL / "all_runs.zip") as z:
        for run in range(1, 21):
            text = z.read(f"run{run:02d}/class_labels.txt").decode()
            for line in text.split("\n"):
                if line.strip():
                    item, cls = re.findall(r"(?:item|class)(\d+)\.png", line)
                    assert batch.query_y[run - 1, int(item) - 1] == int(cls) - 1
    assert batch.query_y[0, 0] == 7  # run01: item01 is class08


@real
def test_lake_run_labels_match_the_characters():
    """Independent check of the labels: each query drawing is a drawing of its support class's character,
    found by matching the runs' images pixel for pixel among the Omniglot images."""
    batch = lake_runs()
    images, owners, names = load_omniglot()
    flat = images.reshape(len(images), -1).numpy()
    lookup = {flat[i].tobytes(): names[o] for i, o in enumerate(owners.tolist())}

    def character(x: torch.Tensor) -> str:
        return lookup[(x[0] * 255).round().to(torch.uint8).numpy().tobytes()]

    characters = lake_run_characters()
    for run in range(20):
        support = [character(x) for x in batch.support_x[run]]
        assert support == characters[run] and len(set(support)) == 20
        for x, y in zip(batch.query_x[run], batch.query_y[run]):
            assert character(x) == support[y]
            assert not torch.equal(x, batch.support_x[run, y])  # another drawing of the character
    flat = {c for row in characters for c in row}
    assert len(flat) == 200
    vinyals = {s: {line.rsplit("/", 1)[0] for line in read_split(s)} for s in ("train", "val", "test")}
    # The runs' characters are in the Vinyals train (78) and test (122) splits: train on
    # omniglot_split("train", exclude=...) before evaluating on the runs.
    assert len(flat & vinyals["train"]) == 78 and len(flat & vinyals["test"]) == 122
    kept = omniglot_split("train", exclude=flat)
    assert kept.num_classes == 4112 - 4 * 78
    assert not {c.rsplit("/", 1)[0] for c in kept.classes} & flat


# --- a tiny Omniglot in tmp_path: caching, atomic extraction, error paths -------------------------


def _png(seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(105, 105, generator=g) > 0.1).numpy()  # white background, black strokes
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(path: Path, part: str, characters: dict[str, int]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for k, (name, n) in enumerate(characters.items()):
            for i in range(n):
                z.writestr(f"{part}/{name}/{k:04d}_{i + 1:02d}.png", _png(100 * k + i))


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """An Omniglot folder with 3 + 1 characters of 4 drawings, and a fresh cache."""
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path / "cache"))
    omniglot._loaded.clear()
    root = tmp_path / "omniglot"
    (root / "splits" / "vinyals").mkdir(parents=True)
    _zip(
        root / "images_background.zip",
        "images_background",
        {"Alpha/character01": 4, "Alpha/character02": 4, "Beta/character01": 4},
    )
    _zip(root / "images_evaluation.zip", "images_evaluation", {"Gamma/character01": 4})
    (root / "splits" / "vinyals" / "train.txt").write_text(
        "Alpha/character01/rot000\nAlpha/character01/rot090\nBeta/character01/rot270\n"
    )
    (root / "splits" / "vinyals" / "test.txt").write_text("Gamma/character01/rot180\n")
    yield root
    omniglot._loaded.clear()


def test_tiny_extracts_once_and_caches(tiny, tmp_path, monkeypatch):
    d = omniglot_split("train", tiny)
    assert d.num_classes == 3 and d.images.shape == (12, 1, 28, 28)
    assert d.classes == ["Alpha/character01/rot000", "Alpha/character01/rot090", "Beta/character01/rot270"]
    assert torch.equal(d.images[4:8], torch.rot90(d.images[0:4], 1, dims=(-2, -1)))
    cache = tmp_path / "cache" / "omniglot"
    [folder] = list(cache.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == [
        "images_background",
        "images_evaluation",
        "omniglot28.safetensors",
    ]
    assert len(list((folder / "images_background").rglob("*.png"))) == 12
    # A new process (simulated: the in-process copy dropped) reads the cache: no extraction, no decoding.
    omniglot._loaded.clear()
    monkeypatch.setattr(omniglot, "_build", lambda *a: pytest.fail("rebuilt despite the cache"))
    again = omniglot_split("train", tiny)
    assert torch.equal(again.images, d.images)
    assert omniglot_split("test", tiny).classes == ["Gamma/character01/rot180"]
    # A corrupt cache file is rebuilt, not trusted.
    monkeypatch.undo()
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path / "cache"))
    (folder / "omniglot28.safetensors").write_bytes(b"garbage")
    omniglot._loaded.clear()
    assert torch.equal(omniglot_split("train", tiny).images, d.images)
    # A data root holding omniglot/ is accepted too.
    assert omniglot_split("test", tiny.parent).num_classes == 1


def test_tiny_cache_is_keyed_on_the_zips_bytes(tiny, tmp_path, monkeypatch):
    """A copy of the same zips (another path, new timestamps: data provisioned again) reuses the cache;
    a zip with other bytes gets a cache of its own."""
    import shutil

    d = omniglot_split("train", tiny)
    copy = tmp_path / "copy" / "omniglot"
    shutil.copytree(tiny, copy)
    for zip_file in copy.glob("*.zip"):
        os.utime(zip_file, ns=(1, 1))
    omniglot._loaded.clear()
    monkeypatch.setattr(omniglot, "_build", lambda *a: pytest.fail("rebuilt despite the same zips"))
    assert torch.equal(omniglot_split("train", copy).images, d.images)
    monkeypatch.undo()
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path / "cache"))
    _zip(copy / "images_evaluation.zip", "images_evaluation", {"Gamma/character01": 3})
    assert omniglot_split("test", copy).images.shape[0] == 3
    assert len(list((tmp_path / "cache" / "omniglot").iterdir())) == 2


def test_tiny_interrupted_extraction_leaves_no_folder(tiny, tmp_path, monkeypatch):
    def fail(self, path=None, members=None, pwd=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "extractall", fail)
    with pytest.raises(KeyboardInterrupt):
        omniglot_split("train", tiny)
    folders = list((tmp_path / "cache" / "omniglot").iterdir())
    assert all(list(f.iterdir()) == [] for f in folders)  # the temporary folder was removed
    monkeypatch.undo()
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path / "cache"))
    assert omniglot_split("train", tiny).num_classes == 3


def test_tiny_already_extracted_folders_are_read(tiny, tmp_path):
    for part in ("images_background", "images_evaluation"):
        with zipfile.ZipFile(tiny / f"{part}.zip") as z:
            z.extractall(tiny)
        (tiny / f"{part}.zip").unlink()
    assert omniglot_split("train", tiny).num_classes == 3
    [folder] = list((tmp_path / "cache" / "omniglot").iterdir())
    assert [p.name for p in folder.iterdir()] == ["omniglot28.safetensors"]


def test_errors(tiny, tmp_path):
    with pytest.raises(MetaloopError, match="split must be one of"):
        omniglot_split("dev", tiny)
    with pytest.raises(MetaloopError, match="val.txt does not exist"):
        omniglot_split("val", tiny)
    (tiny / "splits" / "vinyals" / "val.txt").write_text(
        "Alpha/character01/rot000\nAlpha/character01/rot045\n"
    )
    with pytest.raises(MetaloopError, match=r"val.txt:2: expected Alphabet/characterNN/rotDDD"):
        omniglot_split("val", tiny)
    (tiny / "splits" / "vinyals" / "val.txt").write_text("Alpha/character09/rot000\n")
    with pytest.raises(MetaloopError, match="no character Alpha/character09"):
        omniglot_split("val", tiny)
    with pytest.raises(MetaloopError, match="all_runs.zip .* does not exist"):
        lake_runs(tiny)
    with pytest.raises(MetaloopError, match="does not exist"):
        omniglot_split("train", tmp_path / "nowhere")
    (tiny / "images_evaluation.zip").unlink()
    with pytest.raises(MetaloopError, match="neither .*images_evaluation.zip nor the folder"):
        omniglot_split("train", tiny)
    (tiny / "images_evaluation.zip").write_bytes(b"not a zip")
    with pytest.raises(MetaloopError, match="images_evaluation.zip is not a readable zip"):
        omniglot_split("train", tiny)
    with zipfile.ZipFile(tiny / "images_evaluation.zip", "w") as z:
        z.writestr("other/Gamma/character01/0001_01.png", _png(0))
    with pytest.raises(MetaloopError, match="no top-level folder images_evaluation/"):
        omniglot_split("train", tiny)


def test_lake_runs_format_errors(tiny):
    def runs(lines: str) -> None:
        with zipfile.ZipFile(tiny / "all_runs.zip", "w") as z:
            z.writestr("run01/class_labels.txt", lines)
            for i in (1, 2):
                z.writestr(f"run01/training/class{i:02d}.png", _png(i))
                z.writestr(f"run01/test/item{i:02d}.png", _png(10 + i))

    runs(
        "run01/test/item01.png run01/training/class02.png\r\n"
        "run01/test/item02.png run01/training/class01.png\r\n"
    )
    batch = lake_runs(tiny)  # Windows line ends are fine
    assert batch.support_x.shape == (1, 2, 1, 28, 28) and batch.query_y.tolist() == [[1, 0]]
    runs("run01/test/item01.png run01/training/class02.png extra\n")
    with pytest.raises(MetaloopError, match=r"class_labels.txt: expected"):
        lake_runs(tiny)
    runs(
        "run01/test/item01.png run01/training/class02.png\nrun01/test/item02.png run01/training/class02.png\n"
    )
    with pytest.raises(MetaloopError, match="each once"):
        lake_runs(tiny)
