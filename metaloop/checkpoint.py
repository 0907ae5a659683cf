"""Checkpoints: weights and optimizer tensors in safetensors, everything else in JSON, written atomically.

Layout in a run directory::

    checkpoint-<iteration>.safetensors   # learner.* (the learner's state_dict) and optimizer.* tensors
    checkpoint.json                      # the commit point: iteration, elapsed time, file name, sha256,
                                         # optimizer param groups and non-tensor state

A save writes the new safetensors file completely (temp file, fsync, rename), then replaces
``checkpoint.json`` atomically, then deletes the previous tensors file. A crash at any moment leaves
the previous checkpoint, or the new one, intact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from metaloop.data.root import file_digest
from metaloop.errors import MetaloopError

POINTER = "checkpoint.json"
FORMAT = 1


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _usual_mode(fd: int) -> None:
    """Give a temp file (``mkstemp`` makes it 0600) the mode a plain ``open`` would: 0666 less the umask."""
    os.fchmod(fd, 0o666 & ~_umask())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            _usual_mode(fh.fileno())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def run_digest(run: dict[str, Any]) -> str:
    """The digest of a run's identity (see :func:`save_checkpoint`'s ``run``)."""
    return hashlib.sha256(json.dumps(run, sort_keys=True, default=str).encode()).hexdigest()


def _file_name(iteration: int) -> str:
    return f"checkpoint-{iteration}.safetensors"


def save_checkpoint(
    run_dir: Path,
    learner: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    iteration: int,
    elapsed: float,
    extra: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of ``learner`` and ``optimizer`` after ``iteration`` meta-steps.

    ``run`` is what identifies the trained model (the algorithm, the benchmark and the options that change
    what is trained): it is kept in ``checkpoint.json`` and its digest, with the iteration, in the tensors
    file's own metadata, so that :func:`load_checkpoint` can tell a record or a config that was edited by
    hand from the one the weights were trained with.
    """
    run_dir = Path(run_dir)
    frozen = _frozen(learner)
    tensors = {f"learner.{k}": v.detach().cpu().contiguous() for k, v in learner.state_dict().items()
               if k not in frozen}
    opt_tensors, opt_meta = _split_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    name = _file_name(iteration)
    target = run_dir / name
    metadata = {"format": str(FORMAT), "iteration": str(iteration)}
    if run is not None:
        metadata["run_sha256"] = run_digest(run)
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as fh:
            _usual_mode(fh.fileno())
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    pointer = {
        "format": FORMAT,
        "iteration": iteration,
        "elapsed_seconds": elapsed,
        "file": name,
        "sha256": file_digest(target),
        "optimizer": opt_meta,
        "torch": torch.__version__,
        **({"frozen": {"parameters": len(frozen), "sha256": _frozen_digest(learner, frozen)}} if frozen else {}),
        **({"run": run} if run is not None else {}),
        **(extra or {}),
    }
    atomic_write_text(run_dir / POINTER, json.dumps(pointer, indent=1))
    # The one this replaces, and orphans of a crash before it; never one of a later iteration.
    for stale in run_dir.glob("checkpoint-*.safetensors"):
        number = stale.name.removeprefix("checkpoint-").removesuffix(".safetensors")
        if stale.name != name and number.isdigit() and int(number) <= iteration:
            stale.unlink(missing_ok=True)
    return target


def _frozen(learner: torch.nn.Module) -> set[str]:
    """Names of the parameters that are not meta-learned (``requires_grad=False``, e.g. a pretrained
    encoder under LoRA): checkpoints omit them, since the model is rebuilt with them, and store a digest. Every
    name of a shared (tied) parameter counts, as ``state_dict`` lists each."""
    return {name for name, p in learner.named_parameters(remove_duplicate=False) if not p.requires_grad}


def _frozen_digest(learner: torch.nn.Module, frozen: set[str]) -> str:
    digest = hashlib.sha256()
    for name, p in sorted(learner.named_parameters()):
        if name in frozen:
            digest.update(name.encode())
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_pointer(data: Any) -> str | None:
    """What is wrong with a checkpoint record, or ``None``."""
    if not isinstance(data, dict):
        return "not a metaloop checkpoint record"
    iteration = data.get("iteration")
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        return f"field 'iteration' must be an integer ≥ 0, got {iteration!r}"
    if data.get("file") != _file_name(iteration):
        return f"field 'file' must be {_file_name(iteration)!r} (iteration {iteration}), got {data.get('file')!r}"
    digest = data.get("sha256")
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        return f"field 'sha256' must be 64 hexadecimal digits, got {digest!r}"
    elapsed = data.get("elapsed_seconds")
    if not _is_number(elapsed) or elapsed < 0:
        return f"field 'elapsed_seconds' must be a number ≥ 0, got {elapsed!r}"
    window = data.get("loss_window", [])
    if not isinstance(window, list) or not all(_is_number(v) for v in window):
        return "field 'loss_window' must be a list of finite numbers"
    if not isinstance(data.get("optimizer", {}), dict) or not isinstance(data.get("run", {}), dict):
        return "fields 'optimizer' and 'run' must be mappings"
    return None


def _read_pointer(run_dir: Path, *, required: bool = True) -> dict[str, Any] | None:
    path = Path(run_dir) / POINTER
    if not path.exists():
        if required:
            raise MetaloopError(f"no checkpoint in '{run_dir}' (missing {POINTER})")
        return None
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError):
        data = None
    problem = _check_pointer(data) if data is not None else "not a metaloop checkpoint record"
    if problem is None:
        return data
    if required:
        raise MetaloopError(f"corrupt checkpoint record '{path}': {problem}")
    return None


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / POINTER).exists()


def check_run(pointer: dict[str, Any], run: dict[str, Any], where: str) -> None:
    """Refuse a run config (``where``, e.g. its config.yaml) that differs from the one the checkpoint was
    trained with, naming the first option that differs. A checkpoint older than this record passes."""
    trained = pointer.get("run")
    if trained is None:
        return
    for key in sorted(set(trained) | set(run)):
        if trained.get(key) != run.get(key):
            raise MetaloopError(f"{where}: option '{key}' is {run.get(key)!r} there, but the checkpoint was "
                                f"trained with {trained.get(key)!r} (restore the file, or train another run)")


def load_checkpoint(
    run_dir: Path,
    learner: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    run: dict[str, Any] | None = None,
    where: str = "config.yaml",
) -> dict[str, Any]:
    """Restore ``learner`` (and ``optimizer``) in place; return the checkpoint record.

    The record is checked against the tensors file's own metadata (its iteration and the digest of the
    ``run`` it stores), and ``run``, when given, against the record (:func:`check_run`).

    Raises :class:`MetaloopError` for a missing or corrupt checkpoint, or one that does not fit.
    """
    run_dir = Path(run_dir)
    pointer = _read_pointer(run_dir)
    assert pointer is not None
    path = run_dir / pointer["file"]
    if not path.exists():
        raise MetaloopError(f"missing checkpoint file '{path}' (named in {POINTER})")
    if file_digest(path) != pointer["sha256"]:
        raise MetaloopError(f"corrupt checkpoint '{path}': sha256 does not match {POINTER}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise MetaloopError(f"corrupt checkpoint '{path}': {exc}") from None
    if "iteration" in metadata and metadata["iteration"] != str(pointer["iteration"]):
        raise MetaloopError(f"corrupt checkpoint record '{run_dir / POINTER}': iteration {pointer['iteration']}, "
                            f"but {path.name} holds iteration {metadata['iteration']}")
    if "run_sha256" in metadata and run_digest(pointer.get("run", {})) != metadata["run_sha256"]:
        raise MetaloopError(f"corrupt checkpoint record '{run_dir / POINTER}': its field 'run' is not the one "
                            f"{path.name} was trained with")
    if run is not None:
        check_run(pointer, run, where)
    state = {k[len("learner."):]: v for k, v in tensors.items() if k.startswith("learner.")}
    frozen = _frozen(learner) - state.keys()
    try:
        missing, unexpected = learner.load_state_dict(state, strict=False)
        wrong = sorted(set(missing) - frozen) or sorted(unexpected)
        if wrong:
            raise RuntimeError(f"{'missing' if set(missing) - frozen else 'unexpected'} key {wrong[0]!r}")
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise MetaloopError(f"checkpoint '{path}' does not fit the model: {first}") from None
    recorded = pointer.get("frozen")
    if frozen and (recorded is None or recorded.get("sha256") != _frozen_digest(learner, frozen)):
        raise MetaloopError(f"checkpoint '{path}': the frozen (not meta-learned) weights of the model built now "
                            "differ from those the run was trained with (another encoder or version?)")
    if optimizer is not None:
        meta = pointer.get("optimizer", {})
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, idx, name = key.split(".", 2)
                opt_state.setdefault(int(idx), {})[name] = value
        for idx, entries in meta.get("scalars", {}).items():
            opt_state.setdefault(int(idx), {}).update(entries)
        try:
            optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
        except (KeyError, ValueError) as exc:
            raise MetaloopError(f"checkpoint '{path}': optimizer state does not fit ({exc})") from None
    return pointer
