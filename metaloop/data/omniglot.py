"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015, "Human-level concept learning through
probabilistic program induction", Science 350(6266)): 1,623 handwritten characters from 50 alphabets,
20 drawings each.

Two benchmarks are provided:

- **The Vinyals split with rotations** (Vinyals et al. 2016; the protocol of Prototypical Networks,
  Snell et al. 2017, whose ``data/omniglot/splits/vinyals/*.txt`` lists are read as they are): each
  line ``Alphabet/characterNN/rotDDD`` is a class, the character's 20 drawings rotated by DDD degrees
  (counter-clockwise, ``torch.rot90`` on the 28×28 image), giving 4,112 training, 688 validation and
  1,692 test classes (:func:`omniglot_split`).
- **The original one-shot benchmark** of Lake et al.: ``all_runs.zip``, 20 runs of 20-way 1-shot
  classification (:func:`read_runs`; as tasks, :func:`metaloop.tasks.omniglot.lake_runs`). In each run's
  ``class_labels.txt`` a line
  ``runNN/test/itemMM.png runNN/training/classKK.png`` says that test item MM is of training class KK,
  as read by ``demo_classification.py`` in brendenlake/omniglot.

Preprocessing, as in MAML's code (cbfinn/maml: ``data/omniglot_resized/resize_images.py`` and
``data_generator.py``): 105×105 → 28×28 with Pillow's LANCZOS filter, then inverted so that strokes
are 1 and the background 0. One difference: the PNGs are 1-bit (Pillow mode ``1``), for which Pillow
silently replaces LANCZOS by nearest-neighbour, so MAML's 28×28 images are binary. Here each image
is converted to 8-bit grayscale first, so LANCZOS really applies and the strokes keep their
anti-aliased grey levels. Images are stored as ``uint8`` (255 = stroke) and become ``float32`` in
``[0, 1]`` when an episode is drawn.

Files: the data root's ``omniglot/`` folder (see :func:`metaloop.data.data_root`) or a folder the user
gives, holding ``images_background.zip`` and ``images_evaluation.zip`` (or those folders, already
extracted), ``all_runs.zip`` and ``splits/vinyals/{train,val,test,trainval}.txt``. The zips are
extracted once into ``cache_dir()/omniglot/<key>/`` (into a temporary folder first, then renamed, so
an interrupted extraction is never taken for a finished one; the key is the zips' sha256, so a copy
of the same files reuses it; no md5 is checked, since the zip containers need not be torchvision's), and all 32,460 images are decoded once into
``omniglot28.safetensors`` beside them, so later loads read one 25 MB file.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from metaloop.data.cache import digest, load_cache, save_cache
from metaloop.data.download import how_to_get
from metaloop.data.images import LabelledImages, load_images, pil_to_tensor
from metaloop.data.root import cache_dir, data_root, file_digest
from metaloop.errors import MetaloopError

SIZE = 28
PARTS = ("images_background", "images_evaluation")
SPLITS = ("train", "val", "test", "trainval")
CLASS_COUNTS = {"train": 4112, "val": 688, "test": 1692, "trainval": 4800}
_CACHE_VERSION = "1"
_LINE = re.compile(r"^([^/]+)/(character\d+)/rot(\d{3})$")
_loaded: dict[Path, tuple[Tensor, Tensor, list[str]]] = {}


def omniglot_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The Omniglot folder: ``root`` if given (the folder holding the zips, or a data root holding
    ``omniglot/``), else ``data_root()/omniglot``."""
    if root is None:
        folder = data_root() / "omniglot"
    else:
        folder = Path(root).expanduser()
        if not _has_part(folder, PARTS[0]) and _has_part(folder / "omniglot", PARTS[0]):
            folder = folder / "omniglot"
    if not folder.is_dir():
        raise MetaloopError(f"Omniglot folder {folder} does not exist ({how_to_get('omniglot')})")
    return folder


def _has_part(folder: Path, part: str) -> bool:
    return (folder / part).is_dir() or (folder / f"{part}.zip").is_file()


def _stamp(path: Path) -> str:
    """What the cache key depends on: a zip's bytes (so a copy of the same data, or data provisioned
    again with new timestamps, reuses the cache), an extracted folder's path, size and mtime."""
    if path.is_file():
        return f"zip:{file_digest(path)}"
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _cache_folder(root: Path) -> Path:
    sources = [root / p if (root / p).is_dir() else root / f"{p}.zip" for p in PARTS]
    for part, source in zip(PARTS, sources):
        if not source.exists():
            raise MetaloopError(f"Omniglot: neither {root / part}.zip nor the folder {root / part} exists")
    return cache_dir() / "omniglot" / digest(_CACHE_VERSION, *(_stamp(s) for s in sources), length=12)


def _extracted(root: Path, part: str, cache: Path) -> Path:
    """The folder of ``part``'s images: the user's extracted folder, or the zip extracted into ``cache``."""
    if (root / part).is_dir():
        return root / part
    target = cache / part
    if target.is_dir():
        return target
    archive = root / f"{part}.zip"
    if not archive.is_file():
        raise MetaloopError(f"Omniglot: neither {archive} nor the folder {root / part} exists")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{part}-", dir=cache))
    try:
        try:
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        except (zipfile.BadZipFile, EOFError) as e:
            raise MetaloopError(f"Omniglot: {archive} is not a readable zip file ({e})") from e
        if not (tmp / part).is_dir():
            raise MetaloopError(f"Omniglot: {archive} has no top-level folder {part}/")
        try:
            os.rename(tmp / part, target)
        except OSError:
            if not target.is_dir():  # not a concurrent extraction that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build(root: Path, cache: Path) -> tuple[Tensor, Tensor, list[str]]:
    characters: list[str] = []
    paths: list[Path] = []
    owners: list[int] = []
    for part in PARTS:
        folder = _extracted(root, part, cache)
        for alphabet in sorted(p for p in folder.iterdir() if p.is_dir()):
            for character in sorted(p for p in alphabet.iterdir() if p.is_dir()):
                files = sorted(character.glob("*.png"))
                if not files:
                    raise MetaloopError(f"Omniglot: no PNG images in {character}")
                paths += files
                owners += [len(characters)] * len(files)
                characters.append(f"{alphabet.name}/{character.name}")
    if not paths:
        raise MetaloopError(f"Omniglot: no images found under {root}")
    images = 255 - load_images(paths, (SIZE, SIZE), 1, desc="Omniglot: decoding")[:, 0]
    return images, torch.tensor(owners, dtype=torch.int64), characters


def load_omniglot(root: str | os.PathLike[str] | None = None) -> tuple[Tensor, Tensor, list[str]]:
    """All Omniglot images: ``uint8 [32460, 28, 28]`` (255 = stroke), the character index of each
    image, and the character names ``Alphabet/characterNN`` (background alphabets first, sorted).

    The first call extracts and decodes (some seconds); later calls read the cache, and calls in the
    same process share one copy.
    """
    folder = omniglot_root(root)
    cache = _cache_folder(folder)
    if cache in _loaded:
        return _loaded[cache]
    file = cache / "omniglot28.safetensors"
    cached = load_cache(file)
    if cached is not None:
        tensors, meta = cached
        result = tensors["images"], tensors["characters"], list(meta["characters"])
    else:
        result = _build(folder, cache)
        save_cache(file, {"images": result[0], "characters": result[1]}, {"characters": result[2]})
    _loaded[cache] = result
    return result


def read_split(split: str, root: str | os.PathLike[str] | None = None) -> list[str]:
    """The lines ``Alphabet/characterNN/rotDDD`` of ``splits/vinyals/<split>.txt``."""
    if split not in SPLITS:
        raise MetaloopError(f"Omniglot split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = omniglot_root(root) / "splits" / "vinyals" / f"{split}.txt"
    if not path.is_file():
        raise MetaloopError(f"Omniglot: split file {path} does not exist ({how_to_get('omniglot')})")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        match = _LINE.match(line)
        if match is None or int(match.group(3)) % 90 or int(match.group(3)) >= 360:
            raise MetaloopError(
                f"{path}:{number}: expected Alphabet/characterNN/rotDDD (DDD in 000, 090, 180, 270), "
                f"got {line!r}"
            )
    return lines


class OmniglotSplit(LabelledImages):
    """One split of the Vinyals Omniglot benchmark: ``images uint8 [n, 1, 28, 28]`` (255 = stroke),
    ``labels int64 [n]`` (class ids in split-file order) and ``classes`` (the split file's lines)."""

    def __init__(self, images: Tensor, labels: Tensor, classes: list[str], split: str):
        super().__init__(images, labels, classes)
        self.split = split


def omniglot_split(
    split: str, root: str | os.PathLike[str] | None = None, *, exclude: Iterable[str] = ()
) -> OmniglotSplit:
    """The classes of ``splits/vinyals/<split>.txt`` (``train``, ``val``, ``test`` or ``trainval``),
    20 images each, rotations included; ``exclude`` drops characters (``Alphabet/characterNN``, all
    four rotations), for example those of :func:`lake_run_characters`."""
    lines = read_split(split, root)
    dropped = set(exclude)
    lines = [line for line in lines if line.rsplit("/", 1)[0] not in dropped]
    all_images, owners, characters = load_omniglot(root)
    index = {name: i for i, name in enumerate(characters)}
    order = torch.argsort(owners, stable=True)
    counts = torch.bincount(owners, minlength=len(characters))
    offsets = torch.cumsum(counts, 0) - counts
    owner_of_line, turns = [], []
    for line in lines:
        name, rotation = line.rsplit("/", 1)
        if name not in index:
            raise MetaloopError(
                f"Omniglot: split {split} lists {line}, but no character {name} is in the images"
            )
        owner_of_line.append(index[name])
        turns.append(int(rotation[3:]) // 90)
    chars = torch.tensor(owner_of_line, dtype=torch.int64)
    sizes = counts[chars]
    # The rows of line j are order[offsets[c_j] : offsets[c_j] + sizes[j]], all lines at once.
    within = torch.arange(int(sizes.sum())) - torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
    rows = order[torch.repeat_interleave(offsets[chars], sizes) + within]
    images = all_images[rows]
    rotation_of_row = torch.repeat_interleave(torch.tensor(turns, dtype=torch.int64), sizes)
    for k in (1, 2, 3):
        mask = rotation_of_row == k
        if mask.any():
            images[mask] = torch.rot90(images[mask], k, dims=(-2, -1))
    images = images[:, None]
    labels = torch.repeat_interleave(torch.arange(len(lines)), sizes)
    return OmniglotSplit(images.contiguous(), labels, lines, split)


_RUN_FILE = re.compile(r"^run(\d+)/(test|training)/(item|class)(\d+)\.png$")


def runs_archive(root: str | os.PathLike[str] | None) -> Path:
    path = omniglot_root(root) / "all_runs.zip"
    if not path.is_file():
        raise MetaloopError(f"Omniglot: {path} (Lake's one-shot runs) does not exist ({how_to_get('omniglot')})")
    return path


def read_runs(archive: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Lake et al.'s one-shot runs: ``support [20, 20, 28, 28]`` (``uint8``, run × class ``KK − 1``), ``query``
    the same (run × item), query labels ``[20, 20]`` and run numbers ``[20]``."""
    try:
        z = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise MetaloopError(f"Omniglot: {archive} is not a readable zip file ({e})") from e
    with z:
        names = set(z.namelist())
        runs = sorted({n.split("/", 1)[0] for n in names if re.fullmatch(r"run\d+/class_labels\.txt", n)})
        if not runs:
            raise MetaloopError(f"Omniglot: {archive} holds no runNN/class_labels.txt")

        def image(name: str) -> Tensor:
            if name not in names:
                raise MetaloopError(f"Omniglot: {archive} lacks {name}")
            with Image.open(io.BytesIO(z.read(name))) as im:
                return 255 - pil_to_tensor(im, (SIZE, SIZE), 1)[0]

        supports, queries, labels = [], [], []
        for run in runs:
            where = f"{archive}:{run}/class_labels.txt"
            pairs = []
            for line in z.read(f"{run}/class_labels.txt").decode().splitlines():
                if not line.strip():
                    continue
                fields = line.split()
                parsed = [_RUN_FILE.match(f) for f in fields]
                if (
                    len(fields) != 2
                    or None in parsed
                    or [m.group(2) for m in parsed] != ["test", "training"]  # type: ignore[union-attr]
                    or any(m.string.split("/")[0] != run for m in parsed)  # type: ignore[union-attr]
                ):
                    raise MetaloopError(
                        f"{where}: expected '{run}/test/itemMM.png {run}/training/classKK.png', got {line!r}"
                    )
                pairs.append((int(parsed[0].group(4)), int(parsed[1].group(4))))  # type: ignore[union-attr]
            items, classes = sorted(i for i, _ in pairs), sorted({c for _, c in pairs})
            ways = len(pairs)
            if items != list(range(1, ways + 1)) or classes != list(range(1, ways + 1)):
                raise MetaloopError(f"{where}: expected test items and classes 1 … {ways}, each once")
            supports.append(torch.stack([image(f"{run}/training/class{c:02d}.png") for c in classes]))
            pairs.sort()
            queries.append(torch.stack([image(f"{run}/test/item{i:02d}.png") for i, _ in pairs]))
            labels.append(torch.tensor([c - 1 for _, c in pairs], dtype=torch.int64))
    if len({len(s) for s in supports}) != 1:
        raise MetaloopError(f"Omniglot: the runs of {archive} differ in their number of classes")
    numbers = torch.tensor([int(r[3:]) for r in runs], dtype=torch.int64)
    return torch.stack(supports), torch.stack(queries), torch.stack(labels), numbers


def lake_run_characters(root: str | os.PathLike[str] | None = None) -> list[list[str]]:
    """The Omniglot character (``Alphabet/characterNN``) of each support class of each run, found by
    matching the runs' images pixel for pixel with the dataset's (the runs' drawings are among the 20
    of each character). ``[run][label]``; a run's query images are drawings of the same characters.

    Raises:
        MetaloopError: an image of the runs is not among the Omniglot images.
    """
    support, _, _, runs = read_runs(runs_archive(root))
    images, owners, characters = load_omniglot(root)
    flat = images.reshape(len(images), -1).numpy()
    lookup = {flat[i].tobytes(): o for i, o in enumerate(owners.tolist())}
    result = []
    for r in range(support.shape[0]):
        row = []
        for img in support[r]:
            owner = lookup.get(img.numpy().tobytes())
            if owner is None:
                raise MetaloopError(
                    f"Omniglot: a training image of run {int(runs[r])} is not among the Omniglot images"
                )
            row.append(characters[owner])
        result.append(row)
    return result
