"""The user's own data: a folder per class, and a CSV of (path, label)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from metaloop.data.folder import ImageCSVDataset, ImageFolderDataset
from metaloop.errors import MetaloopError
from metaloop.tasks.episodes import EpisodicTasks

SHADES = {"cat": 40, "dog": 120, "emu": 200}


def _save(path: Path, shade: int, i: int) -> None:
    """Images of assorted modes, sizes and formats, all of one grey level."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode, size, fmt = [
        ("RGB", (40, 30), "JPEG"),
        ("L", (16, 16), "PNG"),
        ("RGBA", (64, 64), "PNG"),
        ("P", (20, 25), "GIF"),
        ("RGB", (16, 16), "BMP"),
    ][i % 5]
    fill = (shade, shade, shade, 255) if mode == "RGBA" else shade if mode in "LP" else (shade,) * 3
    image = Image.new(mode if mode != "P" else "L", size, fill)
    image = image.convert("P") if mode == "P" else image
    image.save(path, format=fmt)


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "photos"
    ext = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "BMP": "bmp"}
    for name, shade in SHADES.items():
        for i in range(6):
            fmt = ["JPEG", "PNG", "PNG", "GIF", "BMP"][i % 5]
            sub = "nested/" if i == 5 else ""
            _save(root / name / f"{sub}{i}.{ext[fmt]}", shade, i)
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".hidden.png").write_bytes(b"ignored")
    (root / ".git").mkdir()
    return root


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder(folder, channels):
    d = ImageFolderDataset(folder, 16, channels)
    assert d.classes == ["cat", "dog", "emu"]
    assert d.images.shape == (18, channels, 16, 16) and d.images.dtype == torch.uint8
    assert torch.equal(d.labels, torch.arange(3).repeat_interleave(6))
    assert len(d.paths) == 18 and all(p.suffix != ".txt" for p in d.paths)
    for label, shade in enumerate(SHADES.values()):
        values = d.images[d.labels == label].float()
        assert (values - shade).abs().max() <= 3  # every format decodes to its grey level
    assert d[0].dtype == torch.float32 and d[0].max() <= 1
    batch = EpisodicTasks(d, 3, 2, 2).batch(0, 2)
    assert batch.support_x.shape == (2, 6, channels, 16, 16)


def test_image_folder_rectangular_size(folder):
    assert ImageFolderDataset(folder, (12, 20)).images.shape == (18, 3, 12, 20)


def test_image_folder_errors(folder, tmp_path):
    with pytest.raises(MetaloopError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nothing", 16)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    with pytest.raises(MetaloopError, match="no class subfolders"):
        ImageFolderDataset(tmp_path / "flat", 16)
    (folder / "empty").mkdir()
    with pytest.raises(MetaloopError, match=r"class folder .*empty holds no images"):
        ImageFolderDataset(folder, 16)
    (folder / "empty").rmdir()
    (folder / "dog" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(MetaloopError, match=r"cannot read image .*dog/broken.png"):
        ImageFolderDataset(folder, 16)
    with pytest.raises(MetaloopError, match="channels must be 1"):
        ImageFolderDataset(folder, 16, channels=4)
    with pytest.raises(MetaloopError, match="image_size"):
        ImageFolderDataset(folder, (16, 0))


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_image_csv(folder, tmp_path):
    rows = [
        f"photos/{p.relative_to(folder)},{p.relative_to(folder).parts[0]}"
        for p in sorted(folder.rglob("*.*"))
        if p.suffix != ".txt" and not p.name.startswith(".")
    ]
    csv = _csv(tmp_path / "list.csv", "path,label", rows)
    d = ImageCSVDataset(csv, 16, 1)
    assert d.classes == ["cat", "dog", "emu"] and d.images.shape == (18, 1, 16, 16)
    for label, shade in enumerate(SHADES.values()):
        assert (d.images[d.labels == label].float() - shade).abs().max() <= 3
    # Other column names, absolute paths, numeric labels (ordered as numbers), a blank line.
    other = tmp_path / "sub" / "other.csv"
    other.parent.mkdir()
    other.write_text(
        f"label_id,file\n10,{folder / 'dog' / '0.jpg'}\n9,{folder / 'cat' / '1.png'}\n"
        f"\n10,{folder / 'emu' / '2.png'}\n"
    )
    d2 = ImageCSVDataset(other, 8, 3, path_column="file", label_column="label_id")
    assert d2.classes == ["9", "10"] and d2.labels.tolist() == [1, 0, 1]
    assert d2.images.shape == (3, 3, 8, 8)


def test_image_csv_errors(folder, tmp_path):
    csv = _csv(tmp_path / "a.csv", "file,label", ["photos/cat/0.jpg,cat"])
    with pytest.raises(MetaloopError, match=r"a.csv: no column 'path' \(columns: file, label\)"):
        ImageCSVDataset(csv, 16)
    with pytest.raises(MetaloopError, match=r"a.csv: no column 'class'"):
        ImageCSVDataset(csv, 16, path_column="file", label_column="class")
    with pytest.raises(MetaloopError, match="CSV file .* does not exist"):
        ImageCSVDataset(tmp_path / "none.csv", 16)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(MetaloopError, match=r"no column 'path' \(columns: none"):
        ImageCSVDataset(tmp_path / "empty.csv", 16)
    header_only = _csv(tmp_path / "h.csv", "path,label", [])
    with pytest.raises(MetaloopError, match="no rows after the header"):
        ImageCSVDataset(header_only, 16)
    blank = _csv(tmp_path / "blank.csv", "path,label", ["photos/cat/0.jpg,"])
    with pytest.raises(MetaloopError, match=r"blank.csv:2: empty value in column 'label'"):
        ImageCSVDataset(blank, 16)
    missing = _csv(
        tmp_path / "m.csv", "path,label", ["photos/cat/0.jpg,cat", "photos/cat/99.jpg,cat", "x/y.png,dog"]
    )
    with pytest.raises(
        MetaloopError, match=r"m.csv: 2 of 3 image files are missing, e.g. .*photos/cat/99.jpg"
    ):
        ImageCSVDataset(missing, 16)
    (folder / "cat" / "bad.jpg").write_bytes(b"nope")
    unreadable = _csv(tmp_path / "u.csv", "path,label", ["photos/cat/0.jpg,cat", "photos/cat/bad.jpg,cat"])
    with pytest.raises(MetaloopError, match=r"cannot read image .*photos/cat/bad.jpg"):
        ImageCSVDataset(unreadable, 16)


def test_image_folder_numeric_class_names(tmp_path):
    """Folders named by numbers: ``classes[label]`` is the folder of each image (ids in numeric order,
    2 before 10), as for a CSV of numeric labels."""
    root = tmp_path / "digits"
    shades = {"2": 40, "10": 120, "1": 200}
    for name, shade in shades.items():
        for i in range(2):
            _save(root / name / f"{i}.png", shade, 1)
    d = ImageFolderDataset(root, 8, 1)
    assert d.classes == ["1", "2", "10"]
    assert [d.classes[label] for label in d.labels.tolist()] == [p.parent.name for p in d.paths]
    for label, name in enumerate(d.classes):
        assert (d.images[d.labels == label].float() - shades[name]).abs().max() <= 3
