"""Meta-training runs: resume reproduces an uninterrupted run, metrics are trimmed, and the Python API."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import metaloop
import metaloop.training
from metaloop.benchmarks import build_learner

TINY = {"hidden": [8], "meta_batch_size": 4, "log_every": 5, "checkpoint_every": 10, "eval_episodes": 20}


def train(algo: str, out: Path, iterations: int, extra: dict | None = None, **kwargs) -> Path:
    return metaloop.train(algo, "sinusoid", out, overrides={**TINY, "iterations": iterations, **(extra or {})},
                          progress=False, **kwargs)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_final_state(a: Path, b: Path, iteration: int) -> None:
    """The checkpoints (weights and optimizer state) are bitwise equal, and so are the logged losses."""
    ta = load_file(str(a / f"checkpoint-{iteration}.safetensors"))
    tb = load_file(str(b / f"checkpoint-{iteration}.safetensors"))
    assert set(ta) == set(tb) and any(k.startswith("learner.") for k in ta)
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
    ma, mb = metrics(a), metrics(b)
    assert [r["iteration"] for r in ma] == [r["iteration"] for r in mb]
    assert [r["loss"] for r in ma] == [r["loss"] for r in mb]


def interrupt_meta_step(monkeypatch, after: int, exc: BaseException) -> None:
    """Make the next run's learner raise ``exc`` from meta_step once ``after`` meta-steps are done."""
    real_build = metaloop.training.build_learner

    def build(cfg):
        learner, bench = real_build(cfg)
        real_step, done = learner.meta_step, [0]

        def meta_step(batch, optimizer):
            if done[0] == after:
                if isinstance(exc, KeyboardInterrupt):  # a real Ctrl-C, arriving in the middle of a step
                    os.kill(os.getpid(), signal.SIGINT)
                else:
                    raise exc
            done[0] += 1
            return real_step(batch, optimizer)

        learner.meta_step = meta_step
        return learner, bench

    monkeypatch.setattr(metaloop.training, "build_learner", build)


def test_resume_equals_an_uninterrupted_run_maml(tmp_path: Path):
    """MAML: 15 iterations, then --resume to 30, gives bitwise the weights and losses of 30 straight."""
    a, b = tmp_path / "a", tmp_path / "b"
    train("maml", a, 30)
    train("maml", b, 15)
    assert json.loads((b / "checkpoint.json").read_text())["iteration"] == 15
    train("maml", b, 30, resume=True)
    assert_same_final_state(a, b, 30)
    assert yaml.safe_load((b / "config.yaml").read_text())["iterations"] == 30


@pytest.mark.parametrize("outer", ["sgd", "adam"])
def test_resume_after_interrupt_equals_an_uninterrupted_run_reptile_anneal(tmp_path: Path, monkeypatch, outer):
    """Reptile with annealing of its outer step (plain ε, or Adam's step size), interrupted at iteration 15 of
    30 and resumed, matches 30 straight."""
    a, b = tmp_path / "a", tmp_path / "b"
    extra = {"anneal": True, "outer_optimizer": outer}
    train("reptile", a, 30, extra)
    saved = yaml.safe_load((a / "config.yaml").read_text())
    assert saved["anneal"] is True and saved["outer_optimizer"] == outer

    interrupt_meta_step(monkeypatch, 15, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        train("reptile", b, 30, extra)
    monkeypatch.undo()
    pointer = json.loads((b / "checkpoint.json").read_text())  # Ctrl-C during step 16: it completes first
    assert pointer["iteration"] == 16 and (b / "checkpoint-16.safetensors").exists()

    train("reptile", b, 30, extra, resume=True)
    assert_same_final_state(a, b, 30)


def test_resume_trims_metrics_past_the_checkpoint(tmp_path: Path, monkeypatch):
    """A crash at iteration 17 leaves a log line (15) past the checkpoint (10); resume drops and redoes it."""
    a, b = tmp_path / "a", tmp_path / "b"
    train("maml", a, 20)
    interrupt_meta_step(monkeypatch, 17, RuntimeError("simulated crash"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train("maml", b, 20)
    monkeypatch.undo()
    assert json.loads((b / "checkpoint.json").read_text())["iteration"] == 10
    assert [r["iteration"] for r in metrics(b)] == [5, 10, 15]

    train("maml", b, 20, resume=True)
    assert [r["iteration"] for r in metrics(b)] == [5, 10, 15, 20]
    assert_same_final_state(a, b, 20)


def test_python_api_train_evaluate_load_learner(tmp_path: Path):
    """metaloop.train returns the run path, evaluate the result dict, load_learner a learner in eval mode."""
    sets = ["iterations=10", "hidden=[8]", "meta_batch_size=2"]
    run = metaloop.train("maml", "sinusoid", tmp_path / "api", overrides=sets, progress=False)
    assert run == tmp_path / "api" and isinstance(run, Path)

    result = metaloop.evaluate(run, episodes=20, steps=[0, 1], plots=False)
    assert result["algo"] == "maml" and result["episodes"] == 20 and result["iteration"] == 10
    assert set(result["steps"]) == {"0", "1"}
    assert all(set(v) == {"mean", "ci95"} for v in result["steps"].values())
    assert json.loads((run / result["file"]).read_text()) == result

    learner, bench, cfg = metaloop.load_learner(run)
    assert isinstance(learner, metaloop.MAML) and bench.name == "sinusoid"
    assert not learner.training and not any(m.training for m in learner.modules())
    assert cfg["checkpoint_iteration"] == 10
    fresh, _ = build_learner(cfg)  # the checkpoint, not the initialization, is loaded
    weights = load_file(str(run / "checkpoint-10.safetensors"))
    for name, value in learner.state_dict().items():
        assert torch.equal(value, weights[f"learner.{name}"])
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in learner.state_dict().items())


def test_resume_of_a_run_without_checkpoint_starts_again(tmp_path: Path, monkeypatch):
    """A run that crashed before its first checkpoint is restarted by --resume and equals a fresh run."""
    a, b = tmp_path / "a", tmp_path / "b"
    train("maml", a, 20)
    interrupt_meta_step(monkeypatch, 7, RuntimeError("simulated crash"))
    with pytest.raises(RuntimeError):
        train("maml", b, 20)
    monkeypatch.undo()
    assert not (b / "checkpoint.json").exists() and (b / "metrics.jsonl").read_text()
    with pytest.warns(metaloop.errors.MetaloopWarning, match="stopped before its first checkpoint"):
        train("maml", b, 20, resume=True)
    assert_same_final_state(a, b, 20)


def test_time_budget_stops_training_with_a_checkpoint(tmp_path: Path):
    """With time_budget the run stops early, checkpoints, and records its peak memory."""
    run = metaloop.train("maml", "sinusoid", tmp_path / "r", progress=False,
                         overrides={**TINY, "iterations": 10**6, "time_budget": 0.5})
    pointer = json.loads((run / "checkpoint.json").read_text())
    assert 0 < pointer["iteration"] < 10**6
    assert pointer["elapsed_seconds"] >= 0.5 and pointer["peak_rss_mb"] > 0


def test_resume_accepts_a_run_written_before_an_option_existed(tmp_path: Path):
    """A stored config that lacks an option added later (at its default) still resumes."""
    run = tmp_path / "r"
    train("maml", run, 10)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    del cfg["time_budget"]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    train("maml", run, 20, resume=True)
    assert json.loads((run / "checkpoint.json").read_text())["iteration"] == 20


def diverge_at(monkeypatch, after: int) -> None:
    """Make the next run's meta_step return NaN once ``after`` meta-steps are done."""
    real_build = metaloop.training.build_learner

    def build(cfg):
        learner, bench = real_build(cfg)
        real_step, done = learner.meta_step, [0]

        def meta_step(batch, optimizer):
            done[0] += 1
            loss = real_step(batch, optimizer)
            return float("nan") if done[0] > after else loss

        learner.meta_step = meta_step
        return learner, bench

    monkeypatch.setattr(metaloop.training, "build_learner", build)


def test_divergence_says_truly_what_is_kept_and_leaves_a_reusable_folder(tmp_path: Path, monkeypatch):
    """Divergence before the first checkpoint says that none was written, and a fresh train (with other
    options) may then reuse the folder; after a checkpoint it names that one, and the folder is kept."""
    run = tmp_path / "r"
    diverge_at(monkeypatch, 3)
    with pytest.raises(metaloop.MetaloopError, match=r"at iteration 4; .*no checkpoint was written, so a new "
                                                     r"`metaloop train --out .*` may reuse the folder"):
        train("maml", run, 20)
    monkeypatch.undo()
    with pytest.warns(metaloop.errors.MetaloopWarning, match="stopped before its first checkpoint"):
        train("maml", run, 20, {"inner_lr": 0.02})
    assert json.loads((run / "checkpoint.json").read_text())["iteration"] == 20
    assert [r["iteration"] for r in metrics(run)] == [5, 10, 15, 20]

    other = tmp_path / "o"
    diverge_at(monkeypatch, 12)
    with pytest.raises(metaloop.MetaloopError, match=r"train a new run with a lower outer_lr or inner_lr \(the "
                                                     r"checkpoint at iteration 10 in .* is intact\)"):
        train("maml", other, 20)
    monkeypatch.undo()
    with pytest.raises(metaloop.MetaloopError, match="already holds a metaloop run"):
        train("maml", other, 20, {"inner_lr": 0.02})


def test_ctrl_c_says_whether_a_checkpoint_exists(tmp_path: Path, monkeypatch, capsys):
    """Ctrl-C before the first meta-step (start-up) says that nothing was checkpointed; during training, where
    the checkpoint is. The command line prints that one line and exits 130, without a traceback."""
    from metaloop.cli import main

    def interrupted_build(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(metaloop.training, "build_learner", interrupted_build)
    code = main(["train", "--algo", "maml", "--benchmark", "sinusoid", "--out", str(tmp_path / "s"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 130 and err.count("\n") == 1 and "no checkpoint was written" in err, err
    monkeypatch.undo()

    interrupt_meta_step(monkeypatch, 12, KeyboardInterrupt())
    with pytest.raises(metaloop.training.TrainingInterrupted, match="checkpoint at iteration 13 .* is intact"):
        train("maml", tmp_path / "t", 20)


def test_a_run_directory_is_trained_by_one_process_at_a_time(tmp_path: Path):
    """While a trainer holds RUN_DIR/.lock a second one is refused, naming the holder; a lock left by a
    process that died is taken over with a warning; the lock is gone after training."""
    import subprocess
    import sys

    from metaloop.locking import LOCK, RunLock

    run = tmp_path / "r"
    with RunLock(run):
        with pytest.raises(metaloop.MetaloopError, match=rf"is being trained by process {os.getpid()}"):
            train("maml", run, 5)
    assert not (run / LOCK).exists()

    # a trainer killed with SIGKILL leaves its lock file; the kernel has released the lock itself
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from metaloop.locking import RunLock; "
                               "RunLock(sys.argv[1]).__enter__(); print('held', flush=True); time.sleep(60)",
                               str(run)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(metaloop.MetaloopError, match=rf"process {holder.pid}"):
        train("maml", run, 5)
    holder.kill()
    holder.wait()
    assert (run / LOCK).exists()
    with pytest.warns(metaloop.errors.MetaloopWarning, match=rf"took over the lock of process {holder.pid}"):
        train("maml", run, 5)
    assert not (run / LOCK).exists() and json.loads((run / "checkpoint.json").read_text())["iteration"] == 5


def test_ctrl_c_at_the_start_of_a_resume_names_the_existing_checkpoint(tmp_path: Path, monkeypatch):
    """Interrupted before its first meta-step, a resumed run still has its checkpoint, and says so."""
    run = train("maml", tmp_path / "r", 10)

    def interrupted_build(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(metaloop.training, "build_learner", interrupted_build)
    with pytest.raises(metaloop.training.TrainingInterrupted, match="the checkpoint at iteration 10 .* is intact"):
        train("maml", run, 20, resume=True)
