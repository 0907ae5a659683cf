"""Where benchmark data is read from, and where derived files are cached.

The data root holds the benchmark files as distributed (for example ``omniglot/images_background.zip``
or ``miniimagenet-splits/train.csv``; see ``shared/data/README.md``). It is never written to: everything
derived from it (extracted zips, decoded image tensors) goes to the cache folder.

Resolution order of :func:`data_root`, as stated in the README's "Data" section:

1. the ``path`` argument (the ``data`` option);
2. the ``METALOOP_DATA`` environment variable;
3. the ``data`` folder of the user cache (``~/.cache/metaloop/data``, or ``$METALOOP_CACHE/data``), where
   ``metaloop data download`` puts what it fetches.

An explicit setting (1 or 2) that does not exist is an error rather than a silent fall-back to the default,
so that a typo never reads other data than the user asked for. No folder of a particular machine is a
default: this repository's tests, CI and benchmark scripts set ``METALOOP_DATA`` to ``../shared/data``
themselves.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from metaloop.errors import MetaloopError

DATA_ENV = "METALOOP_DATA"
CACHE_ENV = "METALOOP_CACHE"


def data_root(path: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the benchmark data (see the module docstring for the order of look-up).

    Raises:
        MetaloopError: the folder given (argument or ``METALOOP_DATA``) does not exist, or, with
            neither given, the default does not; the message says how to get the data.
    """
    if path is not None:
        given = Path(path).expanduser()
        if not given.is_dir():
            raise MetaloopError(f"data root {given} (the path argument) is not a folder")
        return given
    env = os.environ.get(DATA_ENV)
    if env:
        given = Path(env).expanduser()
        if not given.is_dir():
            raise MetaloopError(f"data root {given} (from ${DATA_ENV}) is not a folder")
        return given
    default = cache_dir() / "data"
    if default.is_dir():
        return default
    raise MetaloopError(
        f"no data root: ${DATA_ENV} is not set and {default} does not exist; `metaloop data download NAME` "
        f"fetches a dataset there (`metaloop data` lists them), or set ${DATA_ENV} to a folder that holds them"
    )


def file_stamp(path: str | Path) -> tuple[int, ...] | None:
    """What changes when a user's file or folder changes: a file's size and modification time, or those of every
    file under a folder (a folder of images: a file added, removed, or written over); ``None`` when the path is
    missing. In-process caches of user data take it as part of their key, so that an edited file is read again."""
    path = Path(path).expanduser()
    try:
        if path.is_file():
            st = path.stat()
            return (st.st_size, st.st_mtime_ns)
        if path.is_dir():
            out: list[int] = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    st = os.stat(os.path.join(root, name))
                    out += [hash(os.path.relpath(os.path.join(root, name), path)), st.st_size, st.st_mtime_ns]
            return tuple(out)
    except OSError:
        return None
    return None


def cache_dir() -> Path:
    """The folder for derived files: ``$METALOOP_CACHE``, else ``~/.cache/metaloop`` (not created here)."""
    env = os.environ.get(CACHE_ENV)
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "metaloop"
    if path.exists() and not path.is_dir():
        where = f"${CACHE_ENV}" if env else "the default cache"
        raise MetaloopError(f"cache folder {path} ({where}) is a file; point ${CACHE_ENV} at a folder")
    return path


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
