"""Where benchmark data is read from, and where derived files are cached.

The data root holds the benchmark files as distributed (for example ``omniglot/images_background.zip``
or ``miniimagenet-splits/train.csv``; see ``shared/data/README.md``). It is never written to: everything
derived from it (extracted zips, decoded image tensors) goes to the cache folder.

Resolution order of :func:`data_root`, as stated in the README's "Data" section:

1. the ``path`` argument;
2. the ``METALOOP_DATA`` environment variable;
3. ``../shared/data`` relative to the current working directory;
4. ``shared/data`` beside the repository's folder (``<repo>/../shared/data``), so that an installed
   checkout finds the data whatever the working directory.

An explicit setting (1 or 2) that does not exist is an error rather than a silent fall-back to the
defaults, so that a typo never reads other data than the user asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

from metaloop.errors import MetaloopError

DATA_ENV = "METALOOP_DATA"
CACHE_ENV = "METALOOP_CACHE"


def data_root(path: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the benchmark data (see the module docstring for the order of look-up).

    Raises:
        MetaloopError: the folder given (argument or ``METALOOP_DATA``) does not exist, or, with
            neither given, none of the default locations exists; the message lists what was tried.
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
    candidates = [
        Path.cwd().parent / "shared" / "data",
        Path(__file__).resolve().parents[2] / "shared" / "data",
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise MetaloopError(
        f"no data root found: ${DATA_ENV} is not set and none of {tried} exists; "
        f"pass a path or set ${DATA_ENV}"
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
