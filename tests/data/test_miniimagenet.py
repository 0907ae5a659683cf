"""mini-ImageNet on generated images laid out the standard way, and Ravi & Larochelle's split CSVs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from metaloop.data import data_root, miniimagenet
from metaloop.data.miniimagenet import miniimagenet_split, read_split
from metaloop.errors import MetaloopError
from metaloop.tasks.episodes import EpisodicTasks

CLASSES = [f"n0{1000000 + 1111 * c}" for c in range(8)]  # wnid-like: n01000000, n01001111, …
PER_CLASS = 25


def color(c: int) -> tuple[int, int, int]:
    return (30 * c, 255 - 30 * c, 100 + 20 * c)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """8 classes × 25 images named as in Ravi's CSVs (``n0100000000000001.jpg``), a solid colour per class,
    in the flat layout ``images/<filename>``; JPEG and PNG, of several sizes; a fresh cache."""
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path / "cache"))
    images = tmp_path / "images"
    images.mkdir()
    rows = ["filename,label"]
    for c, wnid in enumerate(CLASSES):
        for i in range(PER_CLASS):
            name = f"{wnid}{i + 1:08d}.jpg"
            size = [(84, 84), (100, 120), (500, 375)][i % 3]
            # JPEG mostly; some PNG content under a .jpg name (Pillow reads by content), some grayscale.
            mode = "L" if i == 4 else "RGB"
            fill = color(c)[0] if mode == "L" else color(c)
            Image.new(mode, size, fill).save(images / name, format="PNG" if i % 5 == 1 else "JPEG")
            rows.append(f"{name},{wnid}")
    csv = tmp_path / "split.csv"
    csv.write_text("\n".join(rows) + "\n")
    return images, csv


def test_fake_split_shapes_labels_and_pixels(fake):
    images, csv = fake
    d = miniimagenet_split("train", images, csv_path=csv)
    assert d.images.shape == (200, 3, 84, 84) and d.images.dtype == torch.uint8
    assert d.classes == CLASSES and d.split == "train"
    assert torch.equal(d.labels, torch.arange(8).repeat_interleave(PER_CLASS))
    for c in range(8):
        mean = d.images[c * PER_CLASS].float().mean(dim=(1, 2))
        assert torch.allclose(mean, torch.tensor(color(c), dtype=torch.float32), atol=3)
        gray = d.images[c * PER_CLASS + 4]  # an 'L' image becomes three equal channels
        assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    batch = EpisodicTasks(d, 5, 5, 15, split="train").batch(0, 2)
    assert batch.support_x.shape == (2, 25, 3, 84, 84) and batch.query_x.shape == (2, 75, 3, 84, 84)
    assert batch.support_x.dtype == torch.float32 and batch.support_x.max() <= 1


def test_class_folder_layout(fake, tmp_path):
    images, csv = fake
    nested = tmp_path / "by_class"
    for path in sorted(images.iterdir()):
        (nested / path.name[:9]).mkdir(parents=True, exist_ok=True)
        path.rename(nested / path.name[:9] / path.name)
    d = miniimagenet_split("val", nested, csv_path=csv)
    assert d.images.shape == (200, 3, 84, 84) and d.classes == CLASSES


def test_cache_is_used_and_keyed(fake, tmp_path, monkeypatch):
    images, csv = fake
    first = miniimagenet_split("train", images, csv_path=csv)
    [cached] = list((tmp_path / "cache" / "miniimagenet").iterdir())
    assert cached.name.startswith("train-84px-") and cached.suffix == ".safetensors"
    for path in images.iterdir():  # the cache is read: the images are not needed any more
        path.unlink()
    again = miniimagenet_split("train", images, csv_path=csv)
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert again.classes == first.classes
    # Another split name, image folder or size is another cache entry (here: images missing).
    for kwargs in [{"split": "test"}, {"images_dir": tmp_path / "elsewhere"}, {"image_size": 32}]:
        args = {"split": "train", "images_dir": images, "csv_path": csv, **kwargs}
        with pytest.raises(MetaloopError, match="missing"):
            miniimagenet_split(**args)
    with pytest.raises(MetaloopError, match="missing"):
        miniimagenet_split("train", images, csv_path=csv, rebuild=True)


def test_missing_images_error_says_what_is_expected_where(fake, tmp_path):
    images, csv = fake
    for name in ["n0100000000000001.jpg", "n0100111100000007.jpg", "n0100777700000025.jpg"]:
        (images / name).unlink()
    with pytest.raises(MetaloopError) as e:
        miniimagenet_split("train", images, csv_path=csv)
    message = str(e.value)
    assert "3 of the 200 images listed in" in message and str(csv) in message
    assert f"missing from {images}" in message
    assert str(images / "n0100000000000001.jpg") in message  # an example of the expected path
    assert str(images / "n01000000" / "n0100000000000001.jpg") in message  # and of the per-class layout
    with pytest.raises(MetaloopError, match=r"200 of the 200 .* \(the folder does not exist\)"):
        miniimagenet_split("train", tmp_path / "no-such-folder", csv_path=csv)


def test_bad_inputs(fake, tmp_path):
    images, csv = fake
    (images / "n0100000000000002.jpg").write_bytes(b"not an image")
    with pytest.raises(MetaloopError, match=r"cannot read image .*n0100000000000002.jpg"):
        miniimagenet_split("train", images, csv_path=csv)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nn0100000000000001.jpg,n01000000\n")
    with pytest.raises(MetaloopError, match=r"bad.csv: no column 'filename' \(columns: file, label\)"):
        miniimagenet_split("train", images, csv_path=bad)
    with pytest.raises(MetaloopError, match="split must be one of"):
        miniimagenet_split("dev", images, csv_path=csv)
    with pytest.raises(MetaloopError, match="image_size"):
        miniimagenet_split("train", images, csv_path=csv, image_size=0)


def _splits_dir() -> Path | None:
    try:
        folder = data_root() / "miniimagenet-splits"
    except MetaloopError:
        return None
    return folder if (folder / "train.csv").is_file() else None


@pytest.mark.skipif(
    _splits_dir() is None, reason="the Ravi split CSVs (shared/data/miniimagenet-splits) are absent"
)
def test_real_ravi_csvs_parse_to_64_16_20_classes_of_600():
    seen: set[str] = set()
    for split, n in miniimagenet.CLASS_COUNTS.items():
        rows = read_split(split)
        labels = [label for _, label in rows]
        assert len(set(labels)) == n and len(rows) == 600 * n
        assert all(labels.count(c) == 600 for c in set(labels))
        assert all(f.startswith(label) and f.endswith(".jpg") and len(f) == 21 for f, label in rows)
        assert not seen & set(labels)
        seen |= set(labels)
    # Without images, the error names the folder searched and the Ravi CSV.
    with pytest.raises(MetaloopError, match=r"12000 of the 12000 images listed in .*test.csv"):
        miniimagenet_split("test", "/nonexistent/images")
