"""The datasets that the benchmarks read, where each comes from, and ``metaloop data download NAME``.

Each :class:`Dataset` lists its files as they lie under the data root (``clinc150/data_full.json``, …), with
the official address of each (a repository at a fixed commit) and its checksum: the SHA-256 sums of
``shared/data/README.md``, or, for Omniglot's official zips (which that copy re-packed), the MD5 sums that
torchvision checks. A download goes to a temporary folder beside the target, every file is checked (its size,
its sum, and that it is not an HTML error page), and only then are the files moved into place: an interrupted
or failed download leaves nothing behind, and a dataset already present is not fetched again.

HWU64 is built from the 640 files of its repository's cross-validation folds, and mini-ImageNet's images come
from ImageNet under its own terms: neither is downloaded here (:attr:`Dataset.how`).

``METALOOP_DATA_MIRROR`` replaces ``https://raw.githubusercontent.com`` in every address (a local mirror, or
the tests' HTTP server on 127.0.0.1).
"""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from shutil import copyfileobj

from metaloop.data.root import DATA_ENV, cache_dir, file_digest
from metaloop.errors import MetaloopError

GITHUB = "https://raw.githubusercontent.com"
MIRROR_ENV = "METALOOP_DATA_MIRROR"


@dataclass(frozen=True)
class Remote:
    """One file of a dataset: its path under the data root, its address, size and checksum."""

    path: str
    url: str
    size: int | None
    sha256: str | None = None
    md5: str | None = None
    #: A file the benchmarks can do without (``how`` says what it adds and where it comes from).
    optional: bool = False
    how: str = ""
    #: SHA-256 of another copy that serves as well (Omniglot's zips re-packed in shared/data: same images).
    also_sha256: str | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    what: str
    license: str
    files: tuple[Remote, ...]
    how: str = ""  #: why it cannot be downloaded, and how to get it, when it cannot
    approx_bytes: int | None = None  #: its size, where a file's exact size is not published

    @property
    def size(self) -> int:
        return self.approx_bytes or sum(f.size or 0 for f in self.files)


def _gh(repo: str, commit: str, path: str) -> str:
    return f"{GITHUB}/{repo}/{commit}/{path}"


_OMNIGLOT = "brendenlake/omniglot", "057f034baf2ecb8530bc5710e5a23584d2a519cc"
_SPLITS = "jakesnell/prototypical-networks", "c9bb4d258267c11cb6e23f0a19242d24ca98ad8a"
_CLINC = "clinc/oos-eval", "828f8093932c8fe6ca7936c3d2e52903b1c523de"
_HUFFPOST = "ws-jiang/MetaPrompter_public", "dea17d573a5eb4f31b3366ba1fe88b1beb865c50"
_FEWREL = "thunlp/FewRel", "278a2315d2138810a379cd8d5718914dc56e2582"
_SHAKESPEARE = "karpathy/char-rnn", "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e"
_MINIIMAGENET = "twitter-research/meta-learning-lstm", "0cffa2481619ce643d0951bd637bf05b23ef827a"

DATASETS: dict[str, Dataset] = {d.name: d for d in [
    Dataset("omniglot", "1,623 handwritten characters of 50 alphabets, 20 drawings each (Lake et al. 2015), with "
            "the Vinyals split and Lake's 20 one-shot runs", "MIT (Brenden Lake); the split lists MIT (Snell et al.)", (
                Remote("omniglot/images_background.zip", _gh(*_OMNIGLOT, "python/images_background.zip"), None,
                       md5="68d2efa1b9178cc56df9314c21c6e718",
                       also_sha256="f61769dc93c644e2e39c823f83b9aee1d0b8bcf28232fb18a226da5407e6e983"),
                Remote("omniglot/images_evaluation.zip", _gh(*_OMNIGLOT, "python/images_evaluation.zip"), None,
                       md5="6b91aef0f799c5bb55b94e3f2daec811",
                       also_sha256="d6e492afe53e0156941031b690dc7a94b03cb7e01a6512d96c80f31ca2179603"),
                Remote("omniglot/all_runs.zip", _gh(*_OMNIGLOT, "python/one-shot-classification/all_runs.zip"), 352787,
                       "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325"),
                *(Remote(f"omniglot/splits/vinyals/{s}.txt", _gh(*_SPLITS, f"data/omniglot/splits/vinyals/{s}.txt"),
                         size, sha) for s, size, sha in [
                    ("train", 133244, "984522c194c30fb678ce53304a160a42faf5403ad4f9a67010f32dd3a35738e0"),
                    ("val", 21312, "11f99e54faee3e26f53d3231c1cceac5bf7b8730e9be31cb6dab256551dc0c1a"),
                    ("test", 50372, "845264cc5c156180828ccf17915668b17ee21424d0170df6e7d81676aa5d1204"),
                    ("trainval", 154556, "5276ae50c755596d0bff7f2284e85625695549a85ee6e36b6491ad1e5d1cc26a")]),
            ), approx_bytes=16_600_000),
    Dataset("clinc150", "CLINC150 intents: 150 intents in 10 domains (Larson et al. 2019)", "CC BY 3.0", (
        Remote("clinc150/data_full.json", _gh(*_CLINC, "data/data_full.json"), 2495390,
               "36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0"),
        Remote("clinc150/domains.json", _gh(*_CLINC, "data/domains.json"), 3818,
               "b947b579d3b8e74b06f93b01083d8efaff2888b43a3e362533bd88a6e1211b3a"),
    )),
    Dataset("hwu64", "HWU64 home-assistant intents: 64 intents in 18 scenarios (Liu et al. 2019)", "CC BY 4.0", (
        Remote("hwu64/hwu64.csv", "", 1690898, "7150bafbc0518210c18117dea9af4a71eae774b699994ae31281c76b2ece3c2a"),),
        how="built from the 640 per-intent CSV files of the ten test folds of xliuhw/NLU-Evaluation-Data "
            "(CrossValidation/autoGeneFromRealAnno/…/KFold_{1..10}/testset/csv) into one hwu64.csv with the columns "
            "fold, answerid, scenario, intent, label, text, answer_annotation, answer_from_user; see "
            "shared/data/README.md"),
    Dataset("huffpost", "HuffPost headlines, 41 categories × 900, Bao et al. 2020's few-shot version",
            "CC BY 4.0 (Misra 2018)", (
                Remote("huffpost/huffpost.json", _gh(*_HUFFPOST, "data/huffpost.json"), 3238096,
                       "2485569669dd7ec5bf1e2f7468568a1d019faeb9941205bc9fb7edae93c488d6"),
                Remote("huffpost/label_names.json", "", 794,
                       "f77a01cae10792c05c55d75e4065e03de60c59ca1d7bf12dda97fef1211e9f63", optional=True,
                       how="the category names of the 41 label ids, inferred by the curators of shared/data from the "
                           "MetaPrompter repository's verbalizers (not published as a file); without it the classes "
                           "are named by their ids"),
            )),
    Dataset("fewrel", "FewRel 1.0 validation relations, 16 × 700 (Han et al. 2018)", "MIT; text from Wikipedia", (
        Remote("fewrel/val_wiki.json", _gh(*_FEWREL, "data/val_wiki.json"), 3534147,
               "76bb44c2485b6faed358a3ce040eadafcc8a8835245cd7e6afc1bef672d4a0bf"),
        Remote("fewrel/pid2name.json", _gh(*_FEWREL, "data/pid2name.json"), 80278,
               "eeedd25512a8e4c2bc06b78009836d27de81807bcba6ed929debd5cd713c07ea"),
    )),
    Dataset("tinyshakespeare", "Tiny Shakespeare, 1.1 M characters", "public domain text; MIT repository", (
        Remote("tinyshakespeare/input.txt", _gh(*_SHAKESPEARE, "data/tinyshakespeare/input.txt"), 1115394,
               "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
    )),
    Dataset("miniimagenet-splits", "Ravi & Larochelle's mini-ImageNet split lists (file names and labels; no images)",
            "MIT", tuple(
                Remote(f"miniimagenet-splits/{s}.csv", _gh(*_MINIIMAGENET, f"data/miniImagenet/{s}.csv"), size, sha)
                for s, size, sha in [
                    ("train", 1228815, "498519cd8e49ce97ed26a4a3638966698ae41ab35e9c68538319fc9b46ba7d2f"),
                    ("val", 307215, "5658a59921ca027ee76af92949869c5d6f41d77592ff3b18db325a9d10c893b9"),
                    ("test", 384015, "2b7cfa78342995761a572a8158e539bc4e0a80f9bbd7d00c1e17a460fbbb93fa")])),
]}


def how_to_get(name: str) -> str:
    """How a user gets dataset ``name``, for the error that finds it missing: the download command, or, for one
    that is not published as files to fetch, where ``metaloop data`` says how to build it."""
    dataset = DATASETS[name]
    if all(f.url for f in dataset.files if not f.optional):
        return f"`metaloop data download {name}` gets it"
    return f"{name} cannot be downloaded as it is used here; `metaloop data` says how to get it"


def download_root() -> Path:
    """Where ``download`` writes: ``$METALOOP_DATA``, else the user cache's ``data`` folder."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else cache_dir() / "data"


def check_file(path: Path, remote: Remote) -> str | None:
    """What is wrong with ``path`` as ``remote`` (``None``: it is the right file)."""
    if not path.is_file():
        return "missing"
    if remote.size is not None and path.stat().st_size != remote.size:
        with open(path, "rb") as fh:
            head = fh.read(512).lstrip().lower()
        if head.startswith((b"<!doctype html", b"<html")):
            return "an HTML page, not the file (an error page of the server?)"
        return f"{path.stat().st_size:,} bytes, expected {remote.size:,}"
    if remote.also_sha256 is not None and file_digest(path, "sha256") == remote.also_sha256:
        return None
    if remote.sha256 is not None and file_digest(path, "sha256") != remote.sha256:
        return "its SHA-256 differs from the published one"
    if remote.md5 is not None and file_digest(path, "md5") != remote.md5:
        return "its MD5 differs from the published one"
    return None


def status(name: str, root: Path) -> str:
    """``present``, ``missing`` or ``incomplete`` (some files missing or wrong) under ``root``: its required
    files (an optional one, absent, is noted but makes no difference)."""
    problems = [check_file(root / f.path, f) for f in DATASETS[name].files if not f.optional]
    if all(p is None for p in problems):
        return "present"
    if all(p == "missing" for p in problems):
        return "missing"
    return "incomplete"


def _url(remote: Remote) -> str:
    mirror = os.environ.get(MIRROR_ENV)
    return remote.url.replace(GITHUB, mirror.rstrip("/"), 1) if mirror else remote.url


def _fetch(remote: Remote, target: Path) -> None:
    url = _url(remote)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:  # noqa: S310
            copyfileobj(response, out, 1 << 20)
    except urllib.error.HTTPError as exc:
        raise MetaloopError(f"{remote.path}: {url} answered HTTP {exc.code} ({exc.reason})") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        raise MetaloopError(f"{remote.path}: cannot download {url} ({reason})") from None


def download(name: str, root: Path | None = None) -> list[Path]:
    """Fetch the files of dataset ``name`` into ``root`` (default :func:`download_root`) that are not there yet;
    return the files written. All or nothing: see the module docstring."""
    if name not in DATASETS:
        raise MetaloopError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    dataset = DATASETS[name]
    if dataset.how:
        raise MetaloopError(f"dataset {name!r} cannot be downloaded by metaloop: {dataset.how}")
    root = Path(root) if root is not None else download_root()
    todo = [f for f in dataset.files if f.url and check_file(root / f.path, f) is not None]
    if not todo:
        return []
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.download."))
    except OSError as exc:
        raise MetaloopError(f"data root {root}: cannot write there ({exc.strerror or exc})") from None
    try:
        for remote in todo:
            part = staging / remote.path
            part.parent.mkdir(parents=True, exist_ok=True)
            _fetch(remote, part)
            problem = check_file(part, remote)
            if problem is not None:
                raise MetaloopError(f"{remote.path}: the download from {_url(remote)} is {problem}; nothing was "
                                    "written")
        written = []
        for remote in todo:  # every file checked: move them into place
            target = root / remote.path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / remote.path, target)
            written.append(target)
        return written
    except OSError as exc:
        raise MetaloopError(f"dataset {name!r}: writing under {root} failed ({exc.strerror or exc}); nothing was "
                            "written") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
