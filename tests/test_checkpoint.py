"""Checkpoints: exact round trip of learner and optimizer state, atomic replacement, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import metaloop.checkpoint
from metaloop.benchmarks import build_learner, resolve_config
from metaloop.checkpoint import load_checkpoint, save_checkpoint
from metaloop.errors import MetaloopError

BATCH = 3


def make(algo: str = "maml", *, hidden=(8,), seed: int = 0):
    overrides = {"hidden": list(hidden), "seed": seed, "meta_batch_size": BATCH}
    cfg = resolve_config(algo, "sinusoid", overrides=overrides)
    learner, bench = build_learner(cfg)
    return learner, learner.make_optimizer(cfg["outer_lr"]), bench.train_tasks(cfg)


def steps(learner, optimizer, tasks, start: int, count: int) -> None:
    for i in range(start, start + count):
        learner.meta_step(tasks.batch(i * BATCH, BATCH), optimizer)


def weights(learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("algo", ["maml", "metasgd", "reptile"])
def test_round_trip_is_exact(tmp_path: Path, algo: str):
    """Save then load restores learner and optimizer state exactly; training then continues alike."""
    learner, opt, tasks = make(algo)
    steps(learner, opt, tasks, 0, 3)
    save_checkpoint(tmp_path, learner, opt, iteration=3, elapsed=1.5, extra={"algo": algo})

    other, other_opt, _ = make(algo, seed=1)
    record = load_checkpoint(tmp_path, other, other_opt)
    assert record["iteration"] == 3 and record["elapsed_seconds"] == 1.5 and record["algo"] == algo
    assert_same(weights(learner), weights(other))

    sa, sb = opt.state_dict(), other_opt.state_dict()
    # param groups travel through JSON (Adam's betas tuple comes back as a list, which Adam accepts)
    assert json.loads(json.dumps(sa["param_groups"])) == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for idx in sa["state"]:
        assert sa["state"][idx].keys() == sb["state"][idx].keys()
        for key, value in sa["state"][idx].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb["state"][idx][key])), (idx, key)
    if algo != "reptile":  # Adam has per-parameter state; Reptile's plain SGD has none
        assert sa["state"]

    steps(learner, opt, tasks, 3, 2)
    steps(other, other_opt, tasks, 3, 2)
    assert_same(weights(learner), weights(other))


def test_previous_checkpoint_file_is_removed(tmp_path: Path):
    """After a new save only the new tensors file remains, with no temp files left behind."""
    learner, opt, tasks = make()
    save_checkpoint(tmp_path, learner, opt, iteration=1, elapsed=0.0)
    steps(learner, opt, tasks, 0, 1)
    save_checkpoint(tmp_path, learner, opt, iteration=2, elapsed=0.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2.safetensors", "checkpoint.json"]
    assert json.loads((tmp_path / "checkpoint.json").read_text())["file"] == "checkpoint-2.safetensors"


def test_crash_before_the_pointer_keeps_the_old_checkpoint(tmp_path: Path, monkeypatch):
    """A crash after the new tensors file but before checkpoint.json leaves the old checkpoint loadable."""
    learner, opt, tasks = make()
    steps(learner, opt, tasks, 0, 1)
    save_checkpoint(tmp_path, learner, opt, iteration=1, elapsed=0.0)
    saved = weights(learner)
    steps(learner, opt, tasks, 1, 2)

    def crash(path, text):
        raise OSError("simulated crash")

    monkeypatch.setattr(metaloop.checkpoint, "atomic_write_text", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(tmp_path, learner, opt, iteration=3, elapsed=0.0)
    monkeypatch.undo()

    assert (tmp_path / "checkpoint-1.safetensors").exists()
    fresh, fresh_opt, _ = make(seed=5)
    assert load_checkpoint(tmp_path, fresh, fresh_opt)["iteration"] == 1
    assert_same(saved, weights(fresh))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_checkpoint_that_does_not_fit_names_the_file(tmp_path: Path):
    """Loading a checkpoint into a model with other hidden sizes raises MetaloopError naming the file."""
    learner, opt, _ = make(hidden=(8,))
    save_checkpoint(tmp_path, learner, opt, iteration=4, elapsed=0.0)
    wider, wider_opt, _ = make(hidden=(16,))
    with pytest.raises(MetaloopError, match=r"checkpoint-4\.safetensors.*does not fit"):
        load_checkpoint(tmp_path, wider, wider_opt)


def test_corrupt_or_missing_checkpoint_raises_metaloop_error(tmp_path: Path):
    """A missing pointer, a tensors file that fails its sha256, or a garbage pointer is a MetaloopError."""
    learner, opt, _ = make()
    with pytest.raises(MetaloopError, match="no checkpoint"):
        load_checkpoint(tmp_path, learner, opt)
    path = save_checkpoint(tmp_path, learner, opt, iteration=1, elapsed=0.0)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(MetaloopError, match="sha256"):
        load_checkpoint(tmp_path, learner, opt)
    (tmp_path / "checkpoint.json").write_text("[1, 2]")
    with pytest.raises(MetaloopError, match="checkpoint.json"):
        load_checkpoint(tmp_path, learner, opt)


def test_orphaned_tensor_files_are_removed_by_the_next_save(tmp_path):
    """A tensors file left by a crash before its pointer was written is deleted by the next save."""
    from metaloop.algorithms import MAML
    from metaloop.checkpoint import save_checkpoint
    from metaloop.models.mlp import MLP

    learner = MAML(MLP(1, [4], 1), torch.nn.functional.mse_loss)
    opt = learner.make_optimizer(1e-3)
    (tmp_path / "checkpoint-7.safetensors").write_bytes(b"orphan")
    save_checkpoint(tmp_path, learner, opt, iteration=8, elapsed=0.0)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-8.safetensors"]


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("iteration", -5, "field 'iteration' must be an integer ≥ 0, got -5"),
    ("iteration", 2.5, "field 'iteration'"),
    ("iteration", "20", "field 'iteration'"),
    ("elapsed_seconds", None, "field 'elapsed_seconds'"),
    ("elapsed_seconds", -1.0, "field 'elapsed_seconds'"),
    ("file", "../../elsewhere.safetensors", "field 'file'"),
    ("sha256", "abc", "field 'sha256'"),
    ("loss_window", ["x"], "field 'loss_window'"),
])
def test_a_damaged_checkpoint_record_is_refused_naming_the_field(tmp_path: Path, field, value, needle):
    """checkpoint.json is checked field by field (a missing field reads as null) before anything trusts it."""
    learner, opt, _ = make()
    save_checkpoint(tmp_path, learner, opt, iteration=20, elapsed=1.0)
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    if value is None:
        del record[field]
    else:
        record[field] = value
    (tmp_path / "checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(MetaloopError, match=needle.replace("(", r"\(")):
        load_checkpoint(tmp_path, learner, opt)


def test_the_record_is_checked_against_the_tensors_file(tmp_path: Path):
    """The tensors file carries its own iteration and the digest of the run it was trained as: an edited
    iteration (with the file renamed to match) or an edited 'run' in checkpoint.json is refused, and so is a
    config that differs from the run the checkpoint was trained with, naming the option."""
    from metaloop.data.root import file_digest

    learner, opt, _ = make()
    run = {"algo": "maml", "benchmark": "sinusoid", "hidden": [8]}
    save_checkpoint(tmp_path, learner, opt, iteration=20, elapsed=1.0, run=run)
    load_checkpoint(tmp_path, learner, opt, run=run)
    with pytest.raises(MetaloopError, match=r"config.yaml: option 'algo' is 'protonet' there, but the checkpoint "
                                            r"was trained with 'maml'"):
        load_checkpoint(tmp_path, learner, opt, run={**run, "algo": "protonet"})
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    (tmp_path / "checkpoint.json").write_text(json.dumps({**record, "run": {**run, "algo": "protonet"}}))
    with pytest.raises(MetaloopError, match="'run' is not the one"):
        load_checkpoint(tmp_path, learner, opt)
    (tmp_path / "checkpoint-20.safetensors").rename(tmp_path / "checkpoint-5.safetensors")
    record.update(iteration=5, file="checkpoint-5.safetensors", sha256=file_digest(tmp_path / "checkpoint-5.safetensors"))
    (tmp_path / "checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(MetaloopError, match="iteration 5, but checkpoint-5.safetensors holds iteration 20"):
        load_checkpoint(tmp_path, learner, opt)


def test_a_save_never_deletes_a_later_checkpoint(tmp_path: Path):
    """Only the checkpoint a save replaces (and earlier orphans) are removed: a tensors file of a later
    iteration than the new one stays (it may be all that is left of a run whose record was damaged)."""
    learner, opt, _ = make()
    save_checkpoint(tmp_path, learner, opt, iteration=20, elapsed=1.0)
    save_checkpoint(tmp_path, learner, opt, iteration=5, elapsed=1.0)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [
        "checkpoint-20.safetensors", "checkpoint-5.safetensors"]


def test_written_files_get_the_users_usual_mode(tmp_path: Path):
    """Atomic writes go through a private temp file; the result has the mode a plain open would give
    (0666 less the umask), not mkstemp's 0600."""
    import os

    from metaloop.checkpoint import atomic_write_text

    learner, opt, _ = make()
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        path = save_checkpoint(tmp_path, learner, opt, iteration=1, elapsed=0.0)
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert path.stat().st_mode & 0o777 == 0o644 and (tmp_path / "checkpoint.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600
